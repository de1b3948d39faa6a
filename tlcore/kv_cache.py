"""Key/value cache for generation, with TransformerLens's class and method names.

Keys are stored after rotary rotation (as HF does), so a cached step rotates only the new keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int


@dataclass
class HookedTransformerKeyValueCacheEntry:
    """One layer's cached keys and values, ``[batch, pos_so_far, n_kv_heads, d_head]``."""

    past_keys: Float[torch.Tensor, "batch pos kv_head d_head"]
    past_values: Float[torch.Tensor, "batch pos kv_head d_head"]
    frozen: bool = False

    @classmethod
    def init_cache_entry(
        cls, cfg: Any, device: torch.device | str | None, batch_size: int = 1
    ) -> HookedTransformerKeyValueCacheEntry:
        """Create an empty entry.

        Args:
            cfg: Model config.
            device: Device.
            batch_size: Batch size.

        Returns:
            The entry.
        """
        shape = (batch_size, 0, cfg.n_key_value_heads, cfg.d_head)
        return cls(
            torch.empty(shape, device=device, dtype=cfg.dtype),
            torch.empty(shape, device=device, dtype=cfg.dtype),
        )

    def append(
        self, new_keys: torch.Tensor, new_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return past + new keys/values, storing them unless frozen.

        Args:
            new_keys: Keys of the new positions.
            new_values: Values of the new positions.

        Returns:
            The full keys and values.
        """
        keys = torch.cat([self.past_keys.to(new_keys.dtype), new_keys], dim=1)
        values = torch.cat([self.past_values.to(new_values.dtype), new_values], dim=1)
        if not self.frozen:
            self.past_keys, self.past_values = keys, values
        return keys, values


@dataclass
class HookedTransformerKeyValueCache:
    """Per-layer cache entries plus the attention mask of everything cached so far."""

    entries: list[HookedTransformerKeyValueCacheEntry]
    previous_attention_mask: Int[torch.Tensor, "batch pos"]
    frozen: bool = False
    past_positions: Int[torch.Tensor, "batch pos"] | None = field(default=None)

    @classmethod
    def init_cache(
        cls, cfg: Any, device: torch.device | str | None, batch_size: int = 1
    ) -> HookedTransformerKeyValueCache:
        """Create an empty cache for a model config.

        Args:
            cfg: Model config.
            device: Device.
            batch_size: Batch size.

        Returns:
            The cache.
        """
        entries = [
            HookedTransformerKeyValueCacheEntry.init_cache_entry(cfg, device, batch_size)
            for _ in range(cfg.n_layers)
        ]
        return cls(entries, torch.empty((batch_size, 0), device=device, dtype=torch.int))

    def freeze(self) -> None:
        """Stop storing new keys/values (each forward then sees the cache as it is)."""
        self.frozen = True
        for entry in self.entries:
            entry.frozen = True

    def unfreeze(self) -> None:
        """Store new keys/values again."""
        self.frozen = False
        for entry in self.entries:
            entry.frozen = False

    def append_attention_mask(
        self, attention_mask: Int[torch.Tensor, "batch new_pos"]
    ) -> Int[torch.Tensor, "batch pos"]:
        """Return the mask of cached + new tokens, storing it unless frozen.

        Args:
            attention_mask: Mask of the new tokens (1 = real token).

        Returns:
            The full mask.
        """
        mask = torch.cat(
            [self.previous_attention_mask.to(attention_mask.device), attention_mask.to(torch.int)],
            dim=-1,
        )
        if not self.frozen:
            self.previous_attention_mask = mask
        return mask

    def __getitem__(self, index: int) -> HookedTransformerKeyValueCacheEntry:
        return self.entries[index]

    def __len__(self) -> int:
        return len(self.entries)

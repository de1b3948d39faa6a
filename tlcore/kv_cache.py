"""Key/value cache for generation, with TransformerLens's class and method names.

Keys are stored after rotary rotation (as HF does), so a cached step rotates only the new keys.
A layer whose sequence mixer is recurrent (Mamba, Gated DeltaNet) keeps its state after the cached
positions in its entry's ``state`` instead (convolution inputs, the recurrent state).

Each layer's keys and values live in one buffer ``[batch, capacity, kv_head, d_head]`` that new
positions are written into in place; ``past_keys``/``past_values`` are views of its filled part.
A step therefore copies only its own new keys, not everything cached so far (``torch.cat`` on
every step, as HF's ``DynamicCache`` does, copies the whole cache each time: quadratic in the
generated length). ``generate`` sizes the buffer for prompt + new tokens up front; without a size
hint the buffer doubles when full.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int


class HookedTransformerKeyValueCacheEntry:
    """One layer's cached keys and values, ``[batch, pos_so_far, n_kv_heads, d_head]``.

    Args:
        past_keys: Keys cached so far (the entry takes them over as its buffer).
        past_values: Values cached so far.
        frozen: Return past + new keys without storing the new ones.
        capacity: Positions to reserve when the first keys are stored (a size hint).
    """

    def __init__(
        self,
        past_keys: Float[torch.Tensor, "batch pos kv_head d_head"],
        past_values: Float[torch.Tensor, "batch pos kv_head d_head"],
        frozen: bool = False,
        capacity: int = 0,
    ) -> None:
        self._keys, self._values = past_keys, past_values
        self._length = past_keys.shape[1]
        self.frozen = frozen
        self.capacity_hint = capacity
        self.state: dict[str, torch.Tensor] = {}
        """A recurrent mixer's state after the cached positions (empty for attention layers)."""

    @property
    def past_keys(self) -> Float[torch.Tensor, "batch pos kv_head d_head"]:
        """Keys of the cached positions (a view of the buffer)."""
        return self._keys[:, : self._length]

    @past_keys.setter
    def past_keys(self, keys: torch.Tensor) -> None:
        self._keys, self._length = keys, keys.shape[1]

    @property
    def past_values(self) -> Float[torch.Tensor, "batch pos kv_head d_head"]:
        """Values of the cached positions (a view of the buffer)."""
        return self._values[:, : self._length]

    @past_values.setter
    def past_values(self, values: torch.Tensor) -> None:
        self._values = values

    @classmethod
    def init_cache_entry(
        cls,
        cfg: Any,
        device: torch.device | str | None,
        batch_size: int = 1,
        capacity: int = 0,
    ) -> HookedTransformerKeyValueCacheEntry:
        """Create an empty entry.

        Args:
            cfg: Model config (``n_key_value_heads``, ``d_head``, ``dtype``).
            device: Device.
            batch_size: Batch size.
            capacity: Positions to reserve once keys arrive (0: exactly what the first
                forward brings, then doubling).

        Returns:
            The entry.
        """
        shape = (batch_size, 0, cfg.n_key_value_heads, cfg.d_head)
        return cls(
            torch.empty(shape, device=device, dtype=cfg.dtype),
            torch.empty(shape, device=device, dtype=cfg.dtype),
            capacity=capacity,
        )

    def append(
        self, new_keys: torch.Tensor, new_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return past + new keys/values, storing them unless frozen.

        Args:
            new_keys: Keys of the new positions ``[batch, new_pos, kv_head, d_head]``.
            new_values: Values of the new positions.

        Returns:
            The full keys and values (views of the buffer when stored).
        """
        if self.frozen:
            past_k, past_v = self.past_keys, self.past_values
            keys = torch.cat([past_k.to(new_keys.dtype), new_keys], dim=1)
            values = torch.cat([past_v.to(new_values.dtype), new_values], dim=1)
            return keys, values
        end = self._length + new_keys.shape[1]
        if torch.is_grad_enabled() and (new_keys.requires_grad or new_values.requires_grad):
            # In-place writes would bump the version of views autograd saved on earlier steps:
            # keep torch.cat's fresh tensors when gradients flow through the cache.
            keys = torch.cat([self.past_keys.to(new_keys.dtype), new_keys], dim=1)
            values = torch.cat([self.past_values.to(new_values.dtype), new_values], dim=1)
            self._keys, self._values, self._length = keys, values, end
            return keys, values
        if (
            end > self._keys.shape[1]
            or self._keys.dtype != new_keys.dtype
            or self._keys.device != new_keys.device
        ):
            self._grow(end, new_keys, new_values)
        self._keys[:, self._length : end] = new_keys
        self._values[:, self._length : end] = new_values
        self._length = end
        return self._keys[:, :end], self._values[:, :end]

    def _grow(self, needed: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        """Reallocate the buffers for at least ``needed`` positions, keeping what is cached."""
        capacity = max(needed, self.capacity_hint, 2 * self._keys.shape[1])
        old_k, old_v = self.past_keys, self.past_values
        shape_k = (like_k.shape[0], capacity, *like_k.shape[2:])
        shape_v = (like_v.shape[0], capacity, *like_v.shape[2:])
        self._keys = like_k.new_empty(shape_k)
        self._values = like_v.new_empty(shape_v)
        if self._length:
            self._keys[:, : self._length] = old_k
            self._values[:, : self._length] = old_v


class HookedTransformerKeyValueCache:
    """Per-layer cache entries plus the attention mask of everything cached so far.

    Args:
        entries: One entry per layer.
        previous_attention_mask: ``[batch, pos]``, 1 for real tokens.
        frozen: Whether entries stop storing new positions.
        past_positions: Unused; kept for TransformerLens's field list.
    """

    def __init__(
        self,
        entries: list[HookedTransformerKeyValueCacheEntry],
        previous_attention_mask: Int[torch.Tensor, "batch pos"],
        frozen: bool = False,
        past_positions: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> None:
        self.entries = entries
        self.previous_attention_mask = previous_attention_mask
        self.frozen = frozen
        self.past_positions = past_positions

    @classmethod
    def init_cache(
        cls,
        cfg: Any,
        device: torch.device | str | None,
        batch_size: int = 1,
        capacity: int = 0,
    ) -> HookedTransformerKeyValueCache:
        """Create an empty cache for a model config.

        Args:
            cfg: Model config.
            device: Device.
            batch_size: Batch size.
            capacity: Positions to reserve per layer (prompt + new tokens when generating);
                0 grows the buffers as needed. Not in TransformerLens.

        Returns:
            The cache.
        """
        entries = [
            HookedTransformerKeyValueCacheEntry.init_cache_entry(cfg, device, batch_size, capacity)
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

"""Per-forward state shared by all layers: positions, padding, masks, KV cache, memo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Int

from tlcore.kv_cache import HookedTransformerKeyValueCache


@dataclass
class ForwardContext:
    """What every attention layer needs to know about the current forward pass.

    Attributes:
        positions: Absolute positions of the current tokens ``[batch, pos]``.
        key_positions: Absolute positions of all keys (cached + current) ``[batch, k_pos]``.
        key_mask: 1 for real keys, 0 for padding ``[batch, k_pos]``, or None when nothing is padded.
        past_kv_cache: The KV cache, if generating.
        shortformer_pos_embed: Positional embeddings added to query/key inputs (shortformer).
        causal: Whether queries see only earlier keys.
        attention_mask: The padding mask as given (or made from padded texts), extended by the KV
            cache's past positions; None when none was given.
        memo: Values computed once per forward and shared by layers (masks, rotary tables).
    """

    positions: Int[torch.Tensor, "batch pos"]
    key_positions: Int[torch.Tensor, "batch k_pos"]
    key_mask: Int[torch.Tensor, "batch k_pos"] | None = None
    past_kv_cache: HookedTransformerKeyValueCache | None = None
    shortformer_pos_embed: torch.Tensor | None = None
    causal: bool = True
    attention_mask: Int[torch.Tensor, "batch k_pos"] | None = None
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def q_len(self) -> int:
        """Number of current (query) positions."""
        return self.positions.shape[1]

    @property
    def k_len(self) -> int:
        """Number of key positions (cached + current)."""
        return self.key_positions.shape[1]

    def is_plain_causal(self, window: int | None) -> bool:
        """Whether the mask is the plain lower triangle (SDPA's ``is_causal`` fast path applies).

        Args:
            window: The layer's sliding window, if any.

        Returns:
            True when nothing is padded, nothing is cached and no window cuts the triangle.
        """
        return (
            self.causal
            and self.key_mask is None
            and self.k_len == self.q_len
            and (window is None or window >= self.k_len)
        )

    def mask(self, window: int | None) -> Bool[torch.Tensor, "batch 1 q_pos k_pos"] | None:
        """The boolean attention mask (True = may attend), memoised per window.

        Query ``i`` sits at key index ``offset + i``; it sees key ``j`` when ``j <= offset + i``,
        ``offset + i - j < window`` and key ``j`` is not padding.

        Args:
            window: Sliding window size (keys seen including itself), or None.

        Returns:
            The mask, or None when no position needs masking.
        """
        key = ("mask", window)
        if key in self.memo:
            return self.memo[key]
        device = self.positions.device
        offset = self.k_len - self.q_len
        q_idx = torch.arange(self.q_len, device=device)[:, None] + offset
        k_idx = torch.arange(self.k_len, device=device)[None, :]
        allowed = torch.ones(self.q_len, self.k_len, dtype=torch.bool, device=device)
        if self.causal:
            allowed = k_idx <= q_idx
        if window is not None:
            allowed = allowed & (q_idx - k_idx < window)
        result = allowed[None, None]
        if self.key_mask is not None:
            result = result & self.key_mask.bool()[:, None, None, :]
        self.memo[key] = result
        return result

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

    def is_plain_causal(self, window: int | None, chunk: int | None = None) -> bool:
        """Whether the mask is the plain lower triangle (SDPA's ``is_causal`` fast path applies).

        Args:
            window: The layer's sliding window, if any.
            chunk: The layer's attention chunk size, if any.

        Returns:
            True when nothing is padded, nothing is cached and no window or chunk cuts the
            triangle.
        """
        return (
            self.causal
            and self.key_mask is None
            and self.k_len == self.q_len
            and (window is None or window >= self.k_len)
            and (chunk is None or chunk >= self.k_len)
        )

    def mask(
        self, window: int | None, chunk: int | None = None
    ) -> Bool[torch.Tensor, "batch 1 q_pos k_pos"] | None:
        """The boolean attention mask (True = may attend), memoised per window and chunk.

        Query ``i`` sits at key index ``offset + i``; it sees key ``j`` when ``j <= offset + i``,
        ``offset + i - j < window`` and key ``j`` is not padding. With a ``chunk`` size
        (Llama 4's chunked attention) it also needs ``pos_q // chunk == pos_k // chunk`` on the
        tokens' absolute positions (so left padding shifts the chunks, as HF's chunked mask).

        Args:
            window: Sliding window size (keys seen including itself), or None.
            chunk: Attention chunk size, or None.

        Returns:
            The mask, or None when no position needs masking.
        """
        key = ("mask", window, chunk)
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
        if chunk is not None:
            q_chunk = torch.div(self.positions, chunk, rounding_mode="floor")
            k_chunk = torch.div(self.key_positions, chunk, rounding_mode="floor")
            result = result & (q_chunk[:, None, :, None] == k_chunk[:, None, None, :])
        if self.key_mask is not None:
            result = result & self.key_mask.bool()[:, None, None, :]
        self.memo[key] = result
        return result

"""Attention's two ways to weigh values: the fused kernel and ``pattern @ v``.

:class:`~tlcore.components.attention.Attention` runs :func:`fused` (PyTorch's
``scaled_dot_product_attention``, HF's kernel) when nothing edits the scores, and :func:`weigh`
with an explicit pattern otherwise. Heads are ``[batch, head, pos, d_head]`` (keys and values may
have fewer, grouped heads); both return ``[batch, pos, head, d_head]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float

from tlcore.components.context import ForwardContext


def fused(
    qh: Float[torch.Tensor, "batch head q_pos d_head"],
    kh: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    vh: Float[torch.Tensor, "batch kv_head k_pos d_head"],
    scale: float,
    bias: Float[torch.Tensor, "batch head q_pos k_pos"] | None,
    mask: Bool[torch.Tensor, "batch 1 q_pos k_pos"] | None,
    ctx: ForwardContext,
    window: int | None,
) -> Float[torch.Tensor, "batch q_pos head d_head"]:
    """``F.scaled_dot_product_attention`` with an optional score bias (ALiBi) and mask.

    Args:
        qh: Queries.
        kh: Keys (grouped heads are expanded by the kernel).
        vh: Values.
        scale: Score scale.
        bias: Added to the scores, or None.
        mask: True where a query may attend; None for the plain causal (or no) mask.
        ctx: The forward's context (causality, the mask of ``window``).
        window: The layer's sliding window.

    Returns:
        The weighted values.
    """
    if bias is not None:
        keep = mask if mask is not None else ctx.mask(window)
        floor = torch.finfo(qh.dtype).min
        attn_mask: torch.Tensor | None = (
            bias.masked_fill(~keep, floor) if keep is not None else bias
        )
    else:
        attn_mask = mask
    z = F.scaled_dot_product_attention(
        qh,
        kh,
        vh,
        attn_mask=attn_mask,
        scale=scale,
        is_causal=attn_mask is None and ctx.causal and ctx.q_len > 1,
        enable_gqa=qh.shape[1] != kh.shape[1],
    )
    return z.transpose(1, 2)


def weigh(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"],
    vh: Float[torch.Tensor, "batch kv_head k_pos d_head"],
) -> Float[torch.Tensor, "batch q_pos head d_head"]:
    """``pattern @ v``, grouped values repeated to one per query head.

    Args:
        pattern: Attention weights.
        vh: Values.

    Returns:
        The weighted values.
    """
    group = pattern.shape[1] // vh.shape[1]
    if group > 1:
        vh = vh.repeat_interleave(group, dim=1)
    return torch.matmul(pattern, vh).transpose(1, 2)

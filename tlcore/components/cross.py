"""Encoder-decoder traits (T5-style), with TransformerLens 2.x's ``HookedEncoderDecoder`` names.

``positional/relative_buckets``
    T5's learned relative position bias: the distance ``key - query`` falls in one of
    ``num_buckets`` buckets (exact for short distances, logarithmic up to ``max_distance``; split by
    sign when attention is bidirectional), and each bucket holds one learned logit per head, added
    to the attention scores. The table is ``weight [num_buckets, n_heads]``; the model registers the
    module as block 0's ``attn.rel_pos_bias`` (TransformerLens's ``encoder.0.attn.rel_pos_bias``),
    and the bias is computed once per forward pass, through ``attn.rel_pos_hook``.
``block/pre_norm_cross``
    A decoder block: ``x + attn(ln1 x)``, then ``+ cross_attn(ln2 x, encoder)``, then
    ``+ mlp(ln3 x)``, with TransformerLens's ``hook_cross_attn_out`` and ``hook_resid_mid_cross``.
    The cross-attention module comes from the ``cross_attention`` slot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from tlcore.components.block import BlockTrait, TransformerBlock
from tlcore.components.context import ForwardContext
from tlcore.components.positions import PositionalEncoding
from tlcore.components.wiring import BlockWiring, Branch
from tlcore.errors import InputValidationError
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait

Resid = Float[torch.Tensor, "batch pos d_model"]


# ----------------------------------------------------------------- positional/relative_buckets
class RelativeBucketsTrait(Trait):
    """T5's bucketed relative position bias, learned per head."""

    slot = "positional"
    kind: Literal["relative_buckets"] = "relative_buckets"
    num_buckets: int = 32
    max_distance: int = 128

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("positional_embedding_type", "relative_positional_bias")


def relative_position_bucket(
    relative: Int[torch.Tensor, "..."], bidirectional: bool, num_buckets: int, max_distance: int
) -> Int[torch.Tensor, "..."]:
    """Map ``key - query`` distances to buckets (Mesh TensorFlow's / T5's scheme).

    Args:
        relative: Distances.
        bidirectional: Split the buckets by sign (encoder); otherwise only keys at or before the
            query count and later ones share bucket 0 (causal decoder).
        num_buckets: Buckets in all.
        max_distance: Distances from here on share the last bucket.

    Returns:
        Bucket indices in ``[0, num_buckets)``.

    Example:
        >>> rel = torch.tensor([-200, -20, -3, 0, 3, 20])
        >>> relative_position_bucket(rel, True, 32, 128).tolist()
        [15, 10, 3, 0, 19, 26]
        >>> relative_position_bucket(rel, False, 32, 128).tolist()
        [31, 17, 3, 0, 0, 0]
    """
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, large)


class RelativePositionBias(PositionalEncoding):
    """``weight [num_buckets, n_heads]``: a per-head logit for each relative-distance bucket.

    Args:
        trait: Buckets and maximum distance.
        cfg: The model config (``n_heads``, ``dtype``).
    """

    biases_scores = True

    def __init__(self, trait: RelativeBucketsTrait, cfg: Any) -> None:
        super().__init__()
        self.num_buckets, self.max_distance = trait.num_buckets, trait.max_distance
        self.weight = nn.Parameter(torch.empty(trait.num_buckets, cfg.n_heads, dtype=cfg.dtype))
        self._hook: tuple[HookPoint, ...] = ()

    def use_hook(self, hook: HookPoint) -> None:
        """Send the computed bias through ``hook`` (owned by the attention module that shows it)."""
        self._hook = (hook,)

    def bias(
        self,
        q_positions: Int[torch.Tensor, " q_pos"],
        k_positions: Int[torch.Tensor, " k_pos"],
        bidirectional: bool,
    ) -> Float[torch.Tensor, "1 head_index q_pos k_pos"]:
        """The bias added to every layer's scores (TL's ``compute_relative_attention_bias``).

        Returns:
            ``weight[bucket(k - q)]`` as ``[1, head, q, k]``.
        """
        relative = k_positions[None, :] - q_positions[:, None]
        buckets = relative_position_bucket(
            relative, bidirectional, self.num_buckets, self.max_distance
        )
        values = self.weight[buckets].permute(2, 0, 1)[None]
        return self._hook[0](values) if self._hook else values

    def score_bias_in(
        self, ctx: ForwardContext, n_heads: int, scale: float, dtype: torch.dtype
    ) -> torch.Tensor:
        """The bias for this forward pass, computed once and shared by the layers.

        Returns:
            ``[1, head, q, k]`` (bidirectional buckets unless ``ctx`` is causal).
        """
        key = ("relative_position_bias", id(self))
        if key not in ctx.memo:
            q = ctx.positions[0]
            ctx.memo[key] = self.bias(q, ctx.key_positions[0], not ctx.causal).to(dtype)
        result: torch.Tensor = ctx.memo[key]
        return result


def make_relative_buckets(trait: RelativeBucketsTrait, cfg: Any) -> RelativePositionBias:
    """Component factory for ``positional/relative_buckets``.

    Returns:
        The module.
    """
    return RelativePositionBias(trait, cfg)


# ----------------------------------------------------------------- block/pre_norm_cross
@dataclass
class CrossContext(ForwardContext):
    """A decoder's forward context plus what its cross-attention reads.

    Attributes:
        encoder_resid: The encoder's final (normalised) residual stream
            ``[batch, enc_pos, d_model]``.
        cross: The context of the cross-attention (decoder queries, encoder keys and padding).
    """

    encoder_resid: torch.Tensor | None = None
    cross: ForwardContext | None = None


class PreNormCrossTrait(BlockTrait):
    """Pre-norm decoder block with cross-attention between self-attention and the MLP."""

    kind: Literal["pre_norm_cross"] = "pre_norm_cross"

    def wiring(self) -> BlockWiring:  # noqa: D102
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", norm="ln1"),
                Branch("cross_attn", "hook_resid_mid", norm="ln2"),
                Branch("mlp", "hook_resid_mid_cross", norm="ln3"),
            )
        )


class PreNormCrossBlock(TransformerBlock):
    """``x + attn(ln1 x)``, ``+ cross_attn(ln2 x, encoder)``, ``+ mlp(ln3 x)``.

    Args:
        cross_attn: The cross-attention module (queries from the decoder, keys/values from the
            encoder output).
    """

    def __init__(
        self,
        trait: BlockTrait,
        cfg: Any,
        layer: int,
        attn: nn.Module,
        mlp: nn.Module,
        make_norm: Callable[[], nn.Module | None],
        cross_attn: nn.Module,
    ) -> None:
        super().__init__(trait, cfg, layer, attn, mlp, make_norm)
        self.cross_attn = cross_attn
        self.hook_cross_attn_in = HookPoint()
        self.hook_cross_attn_out = HookPoint()
        self.hook_resid_mid_cross = HookPoint()

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post`` (``ctx`` is a :class:`CrossContext`)."""
        if not isinstance(ctx, CrossContext) or ctx.encoder_resid is None or ctx.cross is None:
            raise InputValidationError(
                "a cross-attention block needs the encoder's output", "encoder_hidden_states"
            )
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._attention(resid_pre, ctx, "ln1"))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        cross_in = self.hook_cross_attn_in(resid_mid.clone()) if self.cfg.use_attn_in else resid_mid
        encoder = ctx.encoder_resid
        query = self._norm("ln2", cross_in)
        cross_out = self.hook_cross_attn_out(self.cross_attn(query, encoder, encoder, ctx.cross))
        resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross_out)
        mlp_in = resid_mid_cross
        if self.cfg.use_hook_mlp_in:
            mlp_in = self.hook_mlp_in(resid_mid_cross.clone())
        mlp_out = self.hook_mlp_out(self.mlp(self._norm("ln3", mlp_in)))
        return self.hook_resid_post(mlp_in + mlp_out)


def make_pre_norm_cross_block(
    trait: PreNormCrossTrait,
    cfg: Any,
    layer: int,
    attn: nn.Module,
    mlp: nn.Module,
    make_norm: Callable[[], nn.Module | None],
    cross_attn: nn.Module | None = None,
) -> PreNormCrossBlock:
    """Component factory for ``block/pre_norm_cross`` (``cross_attn`` is required).

    Returns:
        The module.
    """
    if cross_attn is None:
        raise InputValidationError(
            "block kind 'pre_norm_cross' needs a cross-attention module (HookedEncoderDecoder "
            "builds it from the spec's cross_attention slot)",
            "cross_attn",
        )
    return PreNormCrossBlock(trait, cfg, layer, attn, mlp, make_norm, cross_attn)


TRAITS: list[tuple[str, type[Trait], Callable[..., Any]]] = [
    ("positional", RelativeBucketsTrait, make_relative_buckets),
    ("block", PreNormCrossTrait, make_pre_norm_cross_block),
]
"""The encoder-decoder kinds, registered by the built-in plugin with the others."""

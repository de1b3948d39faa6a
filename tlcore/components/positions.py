"""Positional information: the common interface, learned absolute positions and shortformer.

A positional component can act in three places, and each kind implements the ones it needs:
``embed`` (added to the residual stream: learned absolute), ``qk_input`` (added to the attention's
query/key inputs only: shortformer), ``rotate`` (applied to queries and keys: rotary) and
``score_bias`` (added to attention scores: ALiBi).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from tlcore.components.residual_io import ResidualIO, Writer
from tlcore.spec.traits import Trait

if TYPE_CHECKING:
    from tlcore.components.context import ForwardContext


class PositionalEncoding(nn.Module, ResidualIO):
    """Base class: every hook a positional component may implement, all no-ops by default."""

    adds_to_residual: bool = False
    adds_to_qk_input: bool = False
    rotates_qk: bool = False
    biases_scores: bool = False

    def embed(
        self, positions: Int[torch.Tensor, "batch pos"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Return the positional embedding of ``positions``.

        Args:
            positions: Absolute position of each token.

        Returns:
            Embeddings.
        """
        raise NotImplementedError

    def rotate(
        self,
        x: Float[torch.Tensor, "batch pos head d_head"],
        positions: Int[torch.Tensor, "batch pos"],
        layer: int,
        ctx: dict[Any, Any] | None = None,
    ) -> Float[torch.Tensor, "batch pos head d_head"]:
        """Rotate queries or keys by position.

        Args:
            x: Queries or keys.
            positions: Their absolute positions.
            layer: Block index (rotary settings may differ per layer type).
            ctx: Per-forward memo shared by layers.

        Returns:
            The rotated tensor.
        """
        raise NotImplementedError

    def score_bias(
        self,
        n_heads: int,
        key_positions: Int[torch.Tensor, "batch k_pos"],
        scale: float,
        dtype: torch.dtype,
    ) -> Float[torch.Tensor, "batch head_index 1 k_pos"]:
        """Return a bias added to attention scores after scaling.

        Args:
            n_heads: Number of query heads.
            key_positions: Absolute positions of the keys.
            scale: The attention scale (for biases defined before scaling).
            dtype: Score dtype.

        Returns:
            The bias, broadcast over query positions.
        """
        raise NotImplementedError

    def score_bias_in(
        self, ctx: ForwardContext, n_heads: int, scale: float, dtype: torch.dtype
    ) -> Float[torch.Tensor, "batch head_index q_pos k_pos"]:
        """The score bias of one forward pass (default: :meth:`score_bias`).

        A bias that needs the query positions or a per-pass memo (T5's relative buckets) overrides
        this; others implement :meth:`score_bias`.

        Args:
            ctx: The forward context (positions, key positions, memo).
            n_heads: Number of query heads.
            scale: The attention scale.
            dtype: Score dtype.

        Returns:
            A bias broadcasting against ``[batch, head, q_pos, k_pos]``.
        """
        return self.score_bias(n_heads, ctx.key_positions, scale, dtype)


class NoPositionTrait(Trait):
    """No positional information (or one supplied by a plugin through another slot)."""

    slot = "positional"
    kind: Literal["none"] = "none"


class LearnedPositionTrait(Trait):
    """Learned absolute positions ``W_pos [n_ctx, d_model]`` added to the residual stream.

    Offsets such as OPT's 2 are handled in the weight map (rows dropped), so positions count from 0.
    """

    slot = "positional"
    kind: Literal["learned_absolute"] = "learned_absolute"

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("positional_embedding_type", "standard")


class ShortformerTrait(Trait):
    """Shortformer: learned positions added to attention's query and key inputs, not the residual.

    As in TransformerLens, the embedding is added after ``ln1`` to the query and key inputs of every
    layer; values and the residual stream carry no positional information.
    """

    slot = "positional"
    kind: Literal["shortformer"] = "shortformer"

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("positional_embedding_type", "shortformer")

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        return {
            "fold_ln": (
                "shortformer positions are added to the query/key inputs after ln1, so ln1 "
                "cannot be folded into W_Q/W_K (TransformerLens refuses too)"
            ),
            "center_writing_weights": (
                "shortformer positions are added to the query/key inputs, not the residual "
                "stream (TransformerLens refuses too)"
            ),
            "center_unembed": "TransformerLens disables center_unembed for shortformer models",
        }


class NoPosition(PositionalEncoding):
    """No positional information."""


class LearnedPositions(PositionalEncoding):
    """``W_pos [n_ctx, d_model]`` lookup.

    Args:
        cfg: The model config (``n_ctx``, ``d_model``, ``dtype``).
        shortformer: Add to query/key inputs instead of the residual stream.
    """

    def __init__(self, cfg: Any, shortformer: bool = False) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))
        self.adds_to_residual = not shortformer
        self.adds_to_qk_input = shortformer

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        # Shortformer positions feed queries and keys only: they never write the stream.
        return [Writer(self, "W_pos")] if self.adds_to_residual else []

    def embed(
        self, positions: Int[torch.Tensor, "batch pos"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Look up positional embeddings.

        Args:
            positions: Absolute position of each token.

        Returns:
            ``W_pos[positions]``.
        """
        return self.W_pos[positions]


def make_no_position(trait: NoPositionTrait, cfg: Any) -> PositionalEncoding:
    """Component factory for ``positional/none``.

    Returns:
        The module.
    """
    return NoPosition()


def make_learned_positions(trait: LearnedPositionTrait, cfg: Any) -> PositionalEncoding:
    """Component factory for ``positional/learned_absolute``.

    Returns:
        The module.
    """
    return LearnedPositions(cfg)


def make_shortformer(trait: ShortformerTrait, cfg: Any) -> PositionalEncoding:
    """Component factory for ``positional/shortformer``.

    Returns:
        The module.
    """
    return LearnedPositions(cfg, shortformer=True)

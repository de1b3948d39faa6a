"""ALiBi: a per-head bias linear in key position, added after (BLOOM) or before (Falcon) scaling."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float, Int

from tlcore.components.positions import PositionalEncoding
from tlcore.spec.traits import Trait


class AlibiTrait(Trait):
    """ALiBi parameters; ``pre_scale`` scales the bias with the scores too (Falcon-RW)."""

    slot = "positional"
    kind: Literal["alibi"] = "alibi"
    placement: Literal["post_scale", "pre_scale"] = "post_scale"
    bias_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype the bias ``slope * position`` is computed in before its cast to the score dtype: Falcon
    rounds the slopes to bfloat16 and multiplies there whatever the model dtype (inexact for 16+
    heads, whose slopes are not powers of two, and at long positions)."""

    transformer_lens_draws_w_pos: ClassVar[bool] = True
    """TransformerLens 2.x creates (and initialises, after ``W_E``) a ``W_pos`` ALiBi never uses;
    ``init_weights`` draws one too, so the weights after it match TransformerLens's for a seed."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("positional_embedding_type", "alibi")


def alibi_slopes(n_heads: int) -> Float[torch.Tensor, " head_index"]:
    """The standard ALiBi slopes, with extra odd powers for head counts that are not powers of 2.

    Args:
        n_heads: Number of heads.

    Returns:
        One slope per head (fp32).

    Example:
        >>> alibi_slopes(4)
        tensor([0.2500, 0.0625, 0.0156, 0.0039])
    """
    closest = 2 ** math.floor(math.log2(n_heads))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = torch.pow(
        torch.tensor(base, dtype=torch.float32), torch.arange(1, 1 + closest, dtype=torch.int32)
    )
    if closest != n_heads:
        extra_base = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        remaining = min(closest, n_heads - closest)
        extra = torch.pow(
            torch.tensor(extra_base, dtype=torch.float32),
            torch.arange(1, 1 + 2 * remaining, 2, dtype=torch.int32),
        )
        slopes = torch.cat([slopes, extra])
    return slopes


class Alibi(PositionalEncoding):
    """ALiBi bias ``slope_h * key_position`` (softmax-equivalent to ``slope_h * (j - i)``)."""

    biases_scores = True

    def __init__(self, trait: AlibiTrait, cfg: Any) -> None:
        super().__init__()
        self.pre_scale = trait.placement == "pre_scale"
        self.in_bf16 = trait.bias_dtype == "bfloat16"

    def score_bias(
        self,
        n_heads: int,
        key_positions: Int[torch.Tensor, "batch k_pos"],
        scale: float,
        dtype: torch.dtype,
    ) -> Float[torch.Tensor, "batch head_index 1 k_pos"]:
        """ALiBi bias for the keys.

        Args:
            n_heads: Number of heads.
            key_positions: Absolute key positions.
            scale: Attention scale (applied to the bias for ``pre_scale``).
            dtype: Score dtype.

        Returns:
            The bias.
        """
        # Computed per call (n_heads numbers): no buffer to lose when the model is built on "meta".
        slopes = alibi_slopes(n_heads).to(key_positions.device)
        if self.in_bf16:
            # As Falcon's build_alibi_tensor: bf16 slopes times integer positions (a bf16 product).
            product = slopes.bfloat16()[None, :, None, None] * key_positions[:, None, None, :]
            bias = product.to(dtype)
        else:
            bias = slopes[None, :, None, None] * key_positions[:, None, None, :].float()
        if self.pre_scale:
            bias = bias * scale
        return bias.to(dtype)


def make_alibi(trait: AlibiTrait, cfg: Any) -> PositionalEncoding:
    """Component factory for ``positional/alibi``.

    Returns:
        The module.
    """
    return Alibi(trait, cfg)

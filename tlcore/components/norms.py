"""Normalisation layers: LayerNorm (with or without bias/params) and RMSNorm (optionally 1+w).

TransformerLens's hooks: ``hook_scale`` ``[..., 1]`` and ``hook_normalized``. After ``fold_ln`` a
norm keeps its normalisation and loses its parameters (TransformerLens's LNPre / RMSPre).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait


class LayerNormTrait(Trait):
    """``x̂ = (x - mean) / sqrt(var + eps)``, then ``x̂ * w + b`` (either may be absent)."""

    slot = "norm"
    kind: Literal["layernorm"] = "layernorm"
    eps: float = 1e-5
    weight: bool = True
    bias: bool = True

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("eps", self.eps)
        cfg.setdefault("normalization_type", "LN" if self.weight else "LNPre")


class RMSNormTrait(Trait):
    """``x / sqrt(mean(x²) + eps)``, times ``w`` (or ``1 + w`` with ``offset``, as Gemma)."""

    slot = "norm"
    kind: Literal["rmsnorm"] = "rmsnorm"
    eps: float = 1e-6
    offset: bool = False
    weight: bool = True
    weight_in_fp32: bool = False
    """Multiply by the weight before casting back (Gemma, OLMo-2) instead of after (Llama)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("eps", self.eps)
        cfg.setdefault("normalization_type", "RMS" if self.weight else "RMSPre")


class NoNormTrait(Trait):
    """No normalisation (an absent final norm, e.g. post-LN OPT)."""

    slot = "norm"
    kind: Literal["none"] = "none"


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with TransformerLens's hooks.

    Args:
        d: Normalised width.
        eps: Epsilon.
        weight: Whether it has a weight ``w``.
        bias: Whether it has a bias ``b``.
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        d: int | tuple[int, ...],
        eps: float,
        weight: bool = True,
        bias: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        shape = (d,) if isinstance(d, int) else tuple(d)
        self.d, self.eps, self._fused = shape[-1], eps, len(shape) == 1
        self.w = nn.Parameter(torch.ones(shape, dtype=dtype)) if weight else None
        self.b = nn.Parameter(torch.zeros(shape, dtype=dtype)) if bias else None
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """Normalise ``x``.

        Args:
            x: Input, normalised over its last dimension.

        Returns:
            The normalised (and affinely transformed) input.
        """
        if self._fused and not (self.hook_scale.has_hooks or self.hook_normalized.has_hooks):
            # F.layer_norm is HF's own kernel: fastest, and bit-compatible with HF.
            return F.layer_norm(x, (self.d,), self.w, self.b, self.eps)
        dtype = x.dtype
        x = x.float() if dtype not in (torch.float32, torch.float64) else x
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = x / scale
        if self.w is not None:
            x = x * self.w
        if self.b is not None:
            x = x + self.b
        return self.hook_normalized(x.to(dtype))


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with TransformerLens's hooks.

    ``hook_normalized`` sees ``x / scale`` before the weight, as in TransformerLens.

    Args:
        d: Normalised width.
        eps: Epsilon.
        offset: Multiply by ``1 + w`` (Gemma) instead of ``w``.
        weight: Whether it has a weight ``w``.
        weight_in_fp32: Apply the weight in fp32 before casting back.
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        d: int | tuple[int, ...],
        eps: float,
        offset: bool = False,
        weight: bool = True,
        weight_in_fp32: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        shape = (d,) if isinstance(d, int) else tuple(d)
        self.d, self.eps, self.offset, self.weight_in_fp32 = shape[-1], eps, offset, weight_in_fp32
        init = torch.zeros(shape, dtype=dtype) if offset else torch.ones(shape, dtype=dtype)
        self.w = nn.Parameter(init) if weight else None
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """Normalise ``x``.

        Args:
            x: Input, normalised over its last dimension.

        Returns:
            The normalised input times the weight.
        """
        dtype = x.dtype
        xf = x.float()
        mean_sq = xf.pow(2).mean(-1, keepdim=True)
        if self.hook_scale.has_hooks:
            normed = xf / self.hook_scale((mean_sq + self.eps).sqrt())
        else:
            normed = xf * torch.rsqrt(mean_sq + self.eps)  # HF's formula, bit-compatible
        normed = self.hook_normalized(normed)
        if self.w is None:
            return normed.to(dtype)
        w = 1.0 + self.w.float() if self.offset else self.w
        if self.weight_in_fp32 or self.offset:
            return (normed * w.float()).to(dtype)
        return w * normed.to(dtype)


def build_norm(
    trait: Trait, d: int | tuple[int, ...], dtype: torch.dtype = torch.float32
) -> nn.Module | None:
    """Build the norm module for a norm trait.

    Args:
        trait: A norm trait (``layernorm``, ``rmsnorm``, ``none`` or a plugin kind).
        d: Normalised width, or the parameter shape (last entry = normalised width; e.g.
            ``(n_heads, d_head)`` for per-head qk-norm weights).
        dtype: Parameter dtype.

    Returns:
        The module, or None for ``none``.
    """
    from tlcore.registry import get_registry

    return get_registry().component("norm", trait.kind)(trait, d, dtype)


def make_layernorm(
    trait: LayerNormTrait, d: int | tuple[int, ...], dtype: torch.dtype
) -> LayerNorm:
    """Component factory for ``layernorm``.

    Args:
        trait: Parameters.
        d: Width.
        dtype: Parameter dtype.

    Returns:
        The module.
    """
    return LayerNorm(d, trait.eps, trait.weight, trait.bias and trait.weight, dtype)


def make_rmsnorm(trait: RMSNormTrait, d: int | tuple[int, ...], dtype: torch.dtype) -> RMSNorm:
    """Component factory for ``rmsnorm``.

    Args:
        trait: Parameters.
        d: Width.
        dtype: Parameter dtype.

    Returns:
        The module.
    """
    return RMSNorm(d, trait.eps, trait.offset, trait.weight, trait.weight_in_fp32, dtype)


def make_no_norm(trait: NoNormTrait, d: int | tuple[int, ...], dtype: torch.dtype) -> None:
    """Component factory for ``none``.

    Args:
        trait: Parameters.
        d: Width.
        dtype: Parameter dtype.

    Returns:
        None.
    """
    return None

"""Normalisation layers: LayerNorm (with or without bias/params) and RMSNorm (optionally 1+w).

TransformerLens's hooks: ``hook_scale`` ``[..., 1]`` and ``hook_normalized``. As in
TransformerLens 2.x, LayerNorm's ``hook_normalized`` is its output (``x̂ * w + b``) and RMSNorm's is
``x / scale`` before the weight; :attr:`Norm.hook_before_affine` says which. After ``fold_ln`` a
norm keeps its normalisation and loses its parameters (TransformerLens's LNPre / RMSPre).

Every norm module subclasses :class:`Norm`, which declares what the activation cache, weight
processing and the parity tool need: whether it centres, its effective per-channel weight and
bias, how to compute its output from ``hook_normalized``, and how to become parameter-free. Every
norm trait subclasses :class:`NormTrait`, which declares the same facts before anything is built
(for the processing plan) and its parameter-free form.

Precision: like HF, norms compute in float32 when the model is bf16/fp16 (RMSNorm applies a
``1 + w`` weight in float32 too). Where HF writes ``.to(torch.float32)`` even for a float64 model,
tlcore computes in *at least* float32 (:func:`at_least_fp32`): a float64 model stays float64, so
it is exact maths, as the parity tool's processed check (float64) needs. For float32 and half
dtypes the two are the same operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.hook_points import HookPoint, keep_values
from tlcore.spec.traits import Trait


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a half dtype, else unchanged (float32 and float64 stay).

    HF casts norms, softmax, routing and recurrences to float32; tlcore does so only upwards.

    Example:
        >>> at_least_fp32(torch.ones(1, dtype=torch.bfloat16)).dtype
        torch.float32
        >>> at_least_fp32(torch.ones(1, dtype=torch.float64)).dtype
        torch.float64
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


class NormTrait(Trait):
    """Base of norm traits: what weight processing needs to know before the norm is built."""

    slot = "norm"
    centres: ClassVar[bool] = False
    """The norm subtracts the mean, so a reader of its output never sees the stream's mean."""
    builds_module: ClassVar[bool] = True
    """False for ``none``: no module, the stream passes through unchanged."""

    def pre_form(self) -> NormTrait:
        """The trait of this norm after ``fold_ln`` moved its parameters into the next weights.

        Returns:
            The parameter-free form (TransformerLens's LNPre / RMSPre).
        """
        raise NotImplementedError(f"norm kind '{self.kind}' does not declare its pre_form")


class LayerNormTrait(NormTrait):
    """``x̂ = (x - mean) / sqrt(var + eps)``, then ``x̂ * w + b`` (either may be absent)."""

    centres = True
    kind: Literal["layernorm"] = "layernorm"
    eps: float = 1e-5
    weight: bool = True
    bias: bool = True

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("eps", self.eps)
        cfg.setdefault("normalization_type", "LN" if self.weight else "LNPre")

    def pre_form(self) -> LayerNormTrait:  # noqa: D102
        return self.model_copy(update={"weight": False, "bias": False})


class RMSNormTrait(NormTrait):
    """``x / sqrt(mean(x²) + eps)``, times ``w`` (or ``1 + w`` with ``offset``, as Gemma)."""

    kind: Literal["rmsnorm"] = "rmsnorm"
    eps: float = 1e-6
    offset: bool = False
    weight: bool = True
    weight_in_fp32: bool = False
    """Multiply by the weight before casting back (Gemma, OLMo-2) instead of after (Llama)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("eps", self.eps)
        cfg.setdefault("normalization_type", "RMS" if self.weight else "RMSPre")

    def pre_form(self) -> RMSNormTrait:  # noqa: D102
        return self.model_copy(update={"weight": False, "offset": False})


class NoNormTrait(NormTrait):
    """No normalisation (an absent final norm, e.g. post-LN OPT)."""

    builds_module = False
    kind: Literal["none"] = "none"

    def pre_form(self) -> NoNormTrait:  # noqa: D102
        return self


class Norm(nn.Module):
    """Base of norm modules: TransformerLens's two hooks and the facts others read.

    Subclasses set :attr:`centres` and :attr:`hook_before_affine`, implement ``forward`` (calling
    ``hook_scale`` on the per-position scale ``[..., 1]`` the input is divided by) and
    :meth:`affine`, :meth:`output_from_normalized` and :meth:`strip_affine_`. A norm with a weight
    stores it as ``w`` and a bias as ``b`` (``blocks.{i}.ln1.w``), as TransformerLens does.
    """

    centres: ClassVar[bool] = False
    """Subtracts the mean before scaling (LayerNorm) or not (RMSNorm)."""
    hook_before_affine: ClassVar[bool] = True
    """``hook_normalized`` holds ``x̂`` before the weight (RMSNorm) rather than the output."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The effective per-channel weight and bias applied after normalising.

        Returns:
            ``(weight, bias)``, either None when absent (``1 + w`` for an offset RMSNorm).
        """
        raise NotImplementedError

    def output_from_normalized(self, normalized: torch.Tensor) -> torch.Tensor:
        """The norm's output computed from its ``hook_normalized`` activation.

        Args:
            normalized: The cached ``hook_normalized`` value.

        Returns:
            What ``forward`` returned.
        """
        raise NotImplementedError

    def strip_affine_(self) -> None:
        """Drop the weight and bias (``fold_ln`` moved them into the next weights), in place."""
        # Assigning None to a registered parameter unregisters it (the state dict loses the key).
        for name in ("w", "b"):
            if name in self._parameters:
                setattr(self, name, None)

    def reset_affine_(self) -> None:
        """Set the weight and bias to the identity (``init_weights``), in place."""
        with torch.no_grad():
            for name, param in self._parameters.items():
                if param is not None:
                    param.fill_(1.0 if name == "w" else 0.0)


class LayerNorm(Norm):
    """LayerNorm over the last dimension with TransformerLens's hooks.

    ``hook_normalized`` is the output (after the weight and bias), as in TransformerLens 2.x.

    Args:
        d: Normalised width, or the parameter shape (last entry = normalised width).
        eps: Added to the variance.
        weight: Whether it has a weight ``w``.
        bias: Whether it has a bias ``b``.
        dtype: Parameter dtype.
    """

    centres = True
    hook_before_affine = False

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

    def forward(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """Normalise ``x`` over its last dimension.

        Returns:
            The normalised (and affinely transformed) input.
        """
        if not self._fused:
            return self.hook_normalized(self._by_formula(x))
        # F.layer_norm is HF's own kernel: fastest, and bit-compatible with HF. A hook on
        # hook_scale sees TransformerLens's scale; the output follows it only if it was edited.
        out = F.layer_norm(x, (self.d,), self.w, self.b, self.eps)
        if self.hook_scale.has_hooks:
            scale, edited = self.hook_scale.run_and_compare(self._scale(self._centred(x)))
            if edited or self.hook_scale.has_bwd_hooks:
                by_formula = self._by_formula(x, scale)
                out = by_formula if edited else keep_values(out, by_formula)
        return self.hook_normalized(out)

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        x = at_least_fp32(x)
        return x - x.mean(-1, keepdim=True)

    def _scale(self, centred: torch.Tensor) -> torch.Tensor:
        return (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def _by_formula(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """TransformerLens's formula; ``scale`` is the hooked scale when already computed."""
        centred = self._centred(x)
        if scale is None:
            scale = self.hook_scale(self._scale(centred))
        out = centred / scale
        if self.w is not None:
            out = out * self.w
        if self.b is not None:
            out = out + self.b
        return out.to(x.dtype)

    def affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: D102
        return self.w, self.b

    def output_from_normalized(self, normalized: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return normalized


class RMSNorm(Norm):
    """RMSNorm over the last dimension with TransformerLens's hooks.

    ``hook_normalized`` sees ``x / scale`` before the weight, as in TransformerLens.

    Args:
        d: Normalised width, or the parameter shape (last entry = normalised width).
        eps: Added to the mean square.
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

    def forward(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """Normalise ``x`` over its last dimension.

        Returns:
            The normalised input times the weight.
        """
        xf = at_least_fp32(x)
        mean_sq = xf.pow(2).mean(-1, keepdim=True)
        normed = xf * torch.rsqrt(mean_sq + self.eps)  # HF's formula, bit-compatible
        if self.hook_scale.has_hooks:
            # The hook sees TransformerLens's scale; ``normed`` follows it only if it was edited.
            scale, edited = self.hook_scale.run_and_compare((mean_sq + self.eps).sqrt())
            if edited or self.hook_scale.has_bwd_hooks:
                normed = xf / scale if edited else keep_values(normed, xf / scale)
        return self._weighted(self.hook_normalized(normed), x.dtype)

    def _weighted(self, normed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.w is None:
            return normed.to(dtype)
        w = 1.0 + at_least_fp32(self.w) if self.offset else self.w
        if self.weight_in_fp32 or self.offset:
            return (normed * at_least_fp32(w)).to(dtype)
        return w * normed.to(dtype)

    def affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: D102
        if self.w is None or not self.offset:
            return self.w, None
        return 1.0 + at_least_fp32(self.w), None

    def output_from_normalized(self, normalized: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._weighted(normalized, normalized.dtype)

    def strip_affine_(self) -> None:  # noqa: D102
        super().strip_affine_()
        self.offset = False

    def reset_affine_(self) -> None:  # noqa: D102
        if self.w is not None:
            with torch.no_grad():
                self.w.fill_(0.0 if self.offset else 1.0)


NormFactory = Callable[[Trait, "int | tuple[int, ...]"], "nn.Module | None"]
"""``norm_factory(trait, d)``: builds the norm of any registered kind for a width (or parameter
shape), in the model's dtype. The builder hands it to components that own norms (qk-norms, an
embedding norm), so they never look kinds up themselves."""


def make_layernorm(
    trait: LayerNormTrait, d: int | tuple[int, ...], dtype: torch.dtype
) -> LayerNorm:
    """Component factory for ``norm/layernorm``.

    Args:
        d: Normalised width, or the parameter shape (``(n_heads, d_head)`` for per-head qk-norm
            weights).
        dtype: Parameter dtype.

    Returns:
        The module.
    """
    return LayerNorm(d, trait.eps, trait.weight, trait.bias and trait.weight, dtype)


def make_rmsnorm(trait: RMSNormTrait, d: int | tuple[int, ...], dtype: torch.dtype) -> RMSNorm:
    """Component factory for ``norm/rmsnorm`` (``d`` as for :func:`make_layernorm`).

    Returns:
        The module.
    """
    return RMSNorm(d, trait.eps, trait.offset, trait.weight, trait.weight_in_fp32, dtype)


def make_no_norm(trait: NoNormTrait, d: int | tuple[int, ...], dtype: torch.dtype) -> None:
    """Component factory for ``norm/none``: no module.

    Returns:
        None.
    """
    return None

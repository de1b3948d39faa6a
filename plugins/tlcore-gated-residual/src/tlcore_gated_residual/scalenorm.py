"""The ``norm/scalenorm`` trait: ScaleNorm (Nguyen & Salazar, 2019), ``g · x / sqrt(Σx² + eps)``.

One learned scalar ``g`` instead of a per-channel weight, and no centring. The module subclasses
tlcore's :class:`~tlcore.components.norms.Norm` and declares what tlcore needs, so ``fold_ln``
folds ``g`` into the next weights, ``apply_ln_to_stack`` divides by the cached ``hook_scale`` and
the parity tool compares the norm's output, all without tlcore knowing this kind.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import nn

from tlcore.components.norms import Norm, NormTrait


class ScaleNormTrait(NormTrait):
    """ScaleNorm parameters; ``weight: false`` is the parameter-free form ``fold_ln`` leaves."""

    kind: Literal["scalenorm"] = "scalenorm"
    eps: float = 1e-5
    weight: bool = True

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("eps", self.eps)

    def pre_form(self) -> ScaleNormTrait:  # noqa: D102
        return self.model_copy(update={"weight": False})


class ScaleNorm(Norm):
    """``g · x / scale`` with ``scale = sqrt(Σ x² + eps)`` over the last dimension.

    Hooks: ``hook_scale`` ``[..., 1]`` and ``hook_normalized`` (``x / scale``, before ``g``, as
    tlcore's RMSNorm). ``g`` has shape ``[1]``.

    Args:
        d: Normalised width (only the last entry of a parameter shape matters).
        eps: Added to the sum of squares.
        weight: Whether it has ``g``.
        dtype: Parameter dtype.
    """

    centres = False
    hook_before_affine = True

    def __init__(
        self, d: int | tuple[int, ...], eps: float, weight: bool, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.d = d if isinstance(d, int) else d[-1]
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dtype=dtype)) if weight else None

    def forward(self, x: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """Normalise ``x`` over its last dimension.

        Returns:
            ``g · x / scale``.
        """
        scale = self.hook_scale((x.pow(2).sum(-1, keepdim=True) + self.eps).sqrt())
        return self.output_from_normalized(self.hook_normalized(x / scale))

    def affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: D102
        return (None if self.g is None else self.g.expand(self.d)), None

    def output_from_normalized(self, normalized: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return normalized if self.g is None else normalized * self.g

    def strip_affine_(self) -> None:  # noqa: D102
        self.g = None

    def reset_affine_(self) -> None:  # noqa: D102
        if self.g is not None:
            with torch.no_grad():
                self.g.fill_(1.0)


def make_scalenorm(
    trait: ScaleNormTrait, d: int | tuple[int, ...], dtype: torch.dtype
) -> ScaleNorm:
    """Component factory for ``norm/scalenorm`` (the ``norm`` slot's factory signature).

    Returns:
        The module.
    """
    return ScaleNorm(d, trait.eps, trait.weight, dtype)

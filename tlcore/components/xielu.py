"""The ``xielu`` MLP kind: a plain (ungated) MLP whose activation has learned parameters (Apertus).

xIELU (https://arxiv.org/abs/2411.13010), as HF's ``XIELUActivation`` computes it in Python:
``alpha_p = softplus(a_p)``, ``alpha_n = beta + softplus(a_n)`` and

- ``x > 0``: ``alpha_p * x^2 + beta * x``
- otherwise: ``(expm1(min(x, eps)) - x) * alpha_n + beta * x``

The per-layer ``alpha_p``/``alpha_n`` (shape ``[1]``) and the constants ``beta``/``eps`` (scalars)
are read from the checkpoint. Hooks are the plain MLP's: ``hook_pre`` (``W_in x``) and
``hook_post`` (the activation's output).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tlcore.components.mlp import MLP
from tlcore.spec.traits import Trait


class XIELUMLPTrait(Trait):
    """A plain MLP with the xIELU activation and its learned parameters."""

    slot = "mlp"
    linear_io = True
    kind: Literal["xielu"] = "xielu"
    bias: bool = False
    init_beta: float = 0.5
    """Initial value of the constant ``beta`` (the checkpoint's value replaces it)."""
    init_clamp: float = -1e-6
    """Initial value of the constant ``eps``, the negative branch's clamp (the checkpoint's value
    replaces it)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("act_fn", "xielu")
        cfg.setdefault("gated_mlp", False)


class XIELUMLP(MLP):
    """``W_out xielu(W_in x + b_in) + b_out`` with ``alpha_p``, ``alpha_n``, ``beta``, ``eps``.

    Args:
        trait: The trait.
        d_model: Input/output width.
        d_mlp: Hidden width.
        dtype: Parameter dtype.
    """

    def __init__(self, trait: XIELUMLPTrait, d_model: int, d_mlp: int, dtype: torch.dtype) -> None:
        super().__init__(d_model, d_mlp, "relu", dtype)
        self.act_fn = self.xielu
        self.alpha_p = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.alpha_n = nn.Parameter(torch.zeros(1, dtype=dtype))
        self.beta = nn.Parameter(torch.tensor(trait.init_beta, dtype=dtype))
        self.eps = nn.Parameter(torch.tensor(trait.init_clamp, dtype=dtype))

    def xielu(self, x: torch.Tensor) -> torch.Tensor:
        """The activation (HF's Python path, term for term).

        Args:
            x: ``W_in x + b_in``.

        Returns:
            The activated tensor.
        """
        alpha_p = F.softplus(self.alpha_p)
        alpha_n = self.beta + F.softplus(self.alpha_n)
        return torch.where(
            x > 0,
            alpha_p * x * x + self.beta * x,
            (torch.expm1(torch.min(x, self.eps)) - x) * alpha_n + self.beta * x,
        )


def make_xielu_mlp(trait: XIELUMLPTrait, cfg: Any, layer: int) -> XIELUMLP:
    """Component factory for ``mlp/xielu`` (the same for every ``layer``).

    Returns:
        The module.
    """
    return XIELUMLP(trait, cfg.d_model, cfg.d_mlp, cfg.dtype)

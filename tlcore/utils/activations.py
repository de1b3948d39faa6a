"""Activation functions under TransformerLens's names (``transformer_lens.utils`` re-exports them).

The maths lives in :mod:`tlcore.components.activations`, which the MLPs use; these wrappers keep
TransformerLens's argument name (``input``). ``xielu``/``XIELU`` are xIELU (arXiv 2411.13010), with
fixed and with trainable parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components import activations as _act

__all__ = [
    "ACTIVATION_FN_DICT",
    "XIELU",
    "gelu_fast",
    "gelu_new",
    "gelu_pytorch_tanh",
    "solu",
    "xielu",
]


def gelu_new(
    input: Float[torch.Tensor, "batch pos d_mlp"],
) -> Float[torch.Tensor, "batch pos d_mlp"]:
    """GPT-2's tanh approximation of GELU (``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``).

    Example:
        >>> round(gelu_new(torch.tensor(1.0)).item(), 4)
        0.8412
    """
    return _act.gelu_new(input)


def gelu_fast(
    input: Float[torch.Tensor, "batch pos d_mlp"],
) -> Float[torch.Tensor, "batch pos d_mlp"]:
    """The "fast" tanh GELU, with 0.7978845608 for √(2/π) (BLOOM, GPT-J's codegen)."""
    return _act.gelu_fast(input)


def gelu_pytorch_tanh(input: torch.Tensor) -> torch.Tensor:
    """``F.gelu(input, approximate="tanh")``: torch's kernel for the tanh approximation."""
    return F.gelu(input, approximate="tanh")


def solu(input: Float[torch.Tensor, "batch pos d_mlp"]) -> Float[torch.Tensor, "batch pos d_mlp"]:
    """SoLU, ``x * softmax(x)`` over the last dimension (the MLP applies its LayerNorm after)."""
    return _act.solu(input)


def xielu(input: Float[torch.Tensor, "batch pos d_mlp"]) -> Float[torch.Tensor, "batch pos d_mlp"]:
    """The xIELU activation with its default constants (α_p = α_n = 0.8, β = 0.5, ε = -1e-6).

    ``α_p x² + β x`` for ``x > 0``, else ``(expm1(min(x, ε)) - x) α_n + β x``.

    Example:
        >>> round(xielu(torch.tensor(2.0)).item(), 4)  # 0.8 * 2² + 0.5 * 2
        4.2
    """
    alpha_p, alpha_n, beta = 0.8, 0.8, 0.5
    eps = torch.tensor(-1e-6)
    return torch.where(
        input > 0,
        alpha_p * input * input + beta * input,
        (torch.expm1(torch.min(input, eps)) - input) * alpha_n + beta * input,
    )


class XIELU(nn.Module):
    """Trainable xIELU, parameterised as HF's ``XIELUActivation`` (Apertus).

    ``alpha_p`` and ``alpha_n`` are stored through the inverse softplus
    (``α_p = softplus(alpha_p)``, ``α_n = β + softplus(alpha_n)``); ``beta`` and ``eps`` are
    buffers.

    Args:
        alpha_p_init: Initial α_p.
        alpha_n_init: Initial α_n (must exceed ``beta_init``).
        beta_init: β.
        eps: ε, the cap on the negative branch's exponent.
    """

    def __init__(
        self,
        alpha_p_init: float = 0.8,
        alpha_n_init: float = 0.8,
        beta_init: float = 0.5,
        eps: float = -1e-6,
    ) -> None:
        super().__init__()
        self.alpha_p = nn.Parameter(
            torch.log(torch.expm1(torch.tensor(alpha_p_init, dtype=torch.float32)))
        )
        self.alpha_n = nn.Parameter(
            torch.log(torch.expm1(torch.tensor(alpha_n_init - beta_init, dtype=torch.float32)))
        )
        self.beta: torch.Tensor
        self.eps: torch.Tensor
        self.register_buffer("beta", torch.tensor(beta_init, dtype=torch.float32))
        self.register_buffer("eps", torch.tensor(eps, dtype=torch.float32))

    def forward(
        self, input: Float[torch.Tensor, "batch pos d_mlp"]
    ) -> Float[torch.Tensor, "batch pos d_mlp"]:
        """Apply xIELU with the current parameters.

        Example:
            >>> torch.allclose(XIELU()(torch.linspace(-3, 3, 7)), xielu(torch.linspace(-3, 3, 7)))
            True
        """
        alpha_p = F.softplus(self.alpha_p)
        alpha_n = self.beta + F.softplus(self.alpha_n)
        return torch.where(
            input > 0,
            alpha_p * input * input + self.beta * input,
            (torch.expm1(torch.min(input, self.eps)) - input) * alpha_n + self.beta * input,
        )


ACTIVATION_FN_DICT: dict[str, Callable[..., torch.Tensor]] = {
    "solu": solu,
    "solu_ln": solu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_fast,
    "silu": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": gelu_pytorch_tanh,
    "xielu": xielu,
}
"""TransformerLens's activation table (``solu_ln`` is SoLU; its LayerNorm sits in the MLP)."""

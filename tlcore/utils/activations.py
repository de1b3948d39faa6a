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

from tlcore.components import activations as _act
from tlcore.components.activations import XIELU

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

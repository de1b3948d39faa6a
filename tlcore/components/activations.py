"""Activation functions by the names HF configs and TransformerLens use."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tlcore.errors import SpecError


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU, written as HF writes it (bit-compatible).

    Returns:
        Activated tensor.
    """
    return (
        0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    )


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    """The "fast" tanh GELU (BLOOM's ``bloom_gelu``).

    Returns:
        Activated tensor.
    """
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)``.

    Returns:
        Activated tensor.
    """
    return x * torch.sigmoid(1.702 * x)


def solu(x: torch.Tensor) -> torch.Tensor:
    """SoLU: ``x * softmax(x)`` over the last dimension.

    Returns:
        Activated tensor.
    """
    return x * F.softmax(x, dim=-1)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "quick_gelu": quick_gelu,
    "solu": solu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look up an activation function by name.

    Args:
        name: HF/TransformerLens name (``gelu_new``, ``silu``, ...).

    Returns:
        The function.

    Raises:
        SpecError: For an unknown name (lists the known ones).

    Example:
        >>> get_activation("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise SpecError(
            f"unknown activation '{name}' (known: {', '.join(sorted(ACTIVATIONS))})"
        ) from None

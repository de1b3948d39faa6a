"""Activation functions by the names HF configs and TransformerLens use."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

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


class XIELU(nn.Module):
    """Trainable xIELU (arXiv 2411.13010), parameterised as HF's ``XIELUActivation`` (Apertus).

    As TransformerLens's ``XIELU``, an MLP with ``act_fn='xielu'`` owns one (``mlp.act_fn``), so
    its parameters are in the state dict and keep their initial values through ``init_weights``.

    ``alpha_p`` and ``alpha_n`` are stored through the inverse softplus
    (``α_p = softplus(alpha_p)``, ``α_n = β + softplus(alpha_n)``); ``beta`` and ``eps`` are
    buffers.

    Args:
        alpha_p_init: Initial α_p.
        alpha_n_init: Initial α_n (must exceed ``beta_init``).
        beta_init: β.
        eps: ε, the cap on the negative branch's exponent.
    """

    keeps_own_init = True
    """``init_weights`` leaves its parameters as constructed (they are not weight matrices)."""

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
            >>> XIELU()(torch.tensor([2.0])).round(decimals=4)  # 0.8 * 2² + 0.5 * 2
            tensor([4.2000], grad_fn=<RoundBackward1>)
        """
        alpha_p = F.softplus(self.alpha_p)
        alpha_n = self.beta + F.softplus(self.alpha_n)
        return torch.where(
            input > 0,
            alpha_p * input * input + self.beta * input,
            (torch.expm1(torch.min(input, self.eps)) - input) * alpha_n + self.beta * input,
        )


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


ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {"xielu": XIELU}
"""Activations with trainable parameters: each MLP gets its own module (``mlp.act_fn``)."""


def make_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation an MLP applies: a fresh module for trainable ones, else the function.

    Args:
        name: HF/TransformerLens name.

    Returns:
        A function, or a new ``nn.Module`` (register it on the MLP so its parameters load).

    Example:
        >>> type(make_activation("xielu")).__name__, make_activation("relu").__name__
        ('XIELU', 'relu')
    """
    if name in ACTIVATION_MODULES:
        return ACTIVATION_MODULES[name]()
    return get_activation(name)


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

"""Weight initialisers with TransformerLens's fan convention (``transformer_lens.utils``).

TransformerLens stores weights as ``[d_in, d_out]`` (and attention weights as ``[head, d_model,
d_head]``), the transpose of torch's ``nn.Linear``, so it computes fans itself rather than with
``torch.nn.init``'s ``_calculate_fan_in_and_fan_out``. These are its functions, same names,
signatures and formulas; they fill ``param`` in place and return it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "calc_fan_in_and_fan_out",
    "init_kaiming_normal_",
    "init_kaiming_uniform_",
    "init_xavier_normal_",
    "init_xavier_uniform_",
]


def calc_fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    """Fan in and fan out of a weight in TransformerLens's orientation.

    ``[n]``: (1, n). ``[d_in, d_out]``: (d_in, d_out). ``[head, d_in, d_head]``:
    (d_in, head * d_head).

    Args:
        tensor: A weight with 1 to 3 dimensions.

    Returns:
        ``(fan_in, fan_out)``.

    Raises:
        ValueError: For a scalar or a tensor with more than 3 dimensions.

    Examples:
        >>> calc_fan_in_and_fan_out(torch.empty(4, 16, 8))  # W_Q [head, d_model, d_head]
        (16, 32)
        >>> calc_fan_in_and_fan_out(torch.empty(16, 64))  # W_in [d_model, d_mlp]
        (16, 64)
    """
    shape = tensor.shape
    if len(shape) == 0:
        raise ValueError("Fan in and fan out can not be computed for scalars.")
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3:
        return shape[1], shape[0] * shape[2]
    raise ValueError(f"Fan in and fan out can not be computed for shape {shape} tensors.")


def init_xavier_uniform_(param: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Xavier (Glorot) uniform: ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Args:
        param: The weight, filled in place.
        gain: Scale factor.

    Returns:
        ``param``.

    Example:
        >>> w = init_xavier_uniform_(torch.empty(300, 300))
        >>> bool(w.abs().max() <= math.sqrt(6 / 600))
        True
    """
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return nn.init.uniform_(param, -bound, bound)


def init_xavier_normal_(param: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Xavier (Glorot) normal: ``N(0, std²)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Args:
        param: The weight, filled in place.
        gain: Scale factor.

    Returns:
        ``param``.
    """
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return nn.init.normal_(param, mean=0.0, std=std)


def init_kaiming_uniform_(
    param: torch.Tensor,
    a: float = 0,
    nonlinearity: str = "relu",
    gain: float = 1.0,
    mode: str = "fan_in",
) -> torch.Tensor:
    """Kaiming (He) uniform: ``U(-b, b)``, ``b = gain * g * sqrt(3 / fan)``.

    ``g`` is ``torch.nn.init.calculate_gain(nonlinearity, a)`` (``sqrt(2)`` for ReLU).

    Args:
        param: The weight, filled in place.
        a: The nonlinearity's parameter (leaky ReLU's slope), if it takes one.
        nonlinearity: The activation the weight feeds, by torch's name.
        gain: Extra scale factor.
        mode: ``"fan_in"`` or ``"fan_out"``.

    Returns:
        ``param``.
    """
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    fan = fan_in if mode == "fan_in" else fan_out
    gain *= nn.init.calculate_gain(nonlinearity, a)  # type: ignore[arg-type]
    bound = gain * math.sqrt(3.0 / fan)
    return nn.init.uniform_(param, -bound, bound)


def init_kaiming_normal_(
    param: torch.Tensor,
    a: float = 0,
    nonlinearity: str = "relu",
    gain: float = 1.0,
    mode: str = "fan_in",
) -> torch.Tensor:
    """Kaiming (He) normal: ``N(0, std²)``, ``std = gain * g / sqrt(fan)``.

    ``g`` is ``torch.nn.init.calculate_gain(nonlinearity, a)`` (``sqrt(2)`` for ReLU).

    Args:
        param: The weight, filled in place.
        a: The nonlinearity's parameter (leaky ReLU's slope), if it takes one.
        nonlinearity: The activation the weight feeds, by torch's name.
        gain: Extra scale factor.
        mode: ``"fan_in"`` or ``"fan_out"``.

    Returns:
        ``param``.

    Example:
        >>> w = init_kaiming_normal_(torch.empty(400, 400))
        >>> abs(w.std().item() - math.sqrt(2 / 400)) < 0.002
        True
    """
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    fan = fan_in if mode == "fan_in" else fan_out
    gain *= nn.init.calculate_gain(nonlinearity, a)  # type: ignore[arg-type]
    std = gain * math.sqrt(1.0 / fan)
    return nn.init.normal_(param, mean=0.0, std=std)

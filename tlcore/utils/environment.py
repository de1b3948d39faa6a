"""Environment helpers (``transformer_lens.utils``): installed libraries, kwargs, devices."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["is_library_available", "print_gpu_mem", "select_compatible_kwargs", "warn_if_mps"]

_mps_warned = False


def is_library_available(name: str) -> bool:
    """Whether a top-level package is importable, without importing it.

    Example:
        >>> is_library_available("torch"), is_library_available("no_such_package_xyz")
        (True, False)
    """
    return name in sys.modules or importlib.util.find_spec(name) is not None


def select_compatible_kwargs(
    kwargs_dict: dict[str, Any], callable: Callable[..., Any]
) -> dict[str, Any]:
    """The entries of ``kwargs_dict`` that name positional-or-keyword parameters of ``callable``.

    Example:
        >>> select_compatible_kwargs({"a": 1, "z": 2}, lambda a, b=0: a)
        {'a': 1}
    """
    accepted = inspect.getfullargspec(callable).args
    return {k: v for k, v in kwargs_dict.items() if k in accepted}


def print_gpu_mem(step_name: str = "") -> None:
    """Print the CUDA memory allocated by tensors, in GiB, after a label.

    (TransformerLens divides by 2e30 here, so it always printed 0.0; this divides by 2³⁰.)
    """
    print(f"{step_name} ~ {torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated on GPU.")


def warn_if_mps(device: Any) -> None:
    """Warn once that MPS may compute silently wrong results, unless TRANSFORMERLENS_ALLOW_MPS=1.

    As TransformerLens: PyTorch's MPS backend has known correctness issues
    (TransformerLens issue #1178). Other devices pass silently.

    Args:
        device: A device or its name.
    """
    global _mps_warned
    if _mps_warned:
        return
    if isinstance(device, torch.device):
        device = device.type
    if device == "mps" and os.environ.get("TRANSFORMERLENS_ALLOW_MPS", "") != "1":
        _mps_warned = True
        warnings.warn(
            f"MPS backend may produce silently incorrect results (PyTorch {torch.__version__}). "
            "Set TRANSFORMERLENS_ALLOW_MPS=1 to suppress this warning. "
            "See: https://github.com/TransformerLensOrg/TransformerLens/issues/1178",
            UserWarning,
            stacklevel=2,
        )

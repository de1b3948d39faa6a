"""The ``layernorm1p`` weight op: a LayerNorm1P weight becomes an ordinary LayerNorm weight."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float


def layernorm1p(
    tensors: list[Float[torch.Tensor, " d_model"]], cfg: Any
) -> list[Float[torch.Tensor, " d_model"]]:
    """Return ``1 + w`` for each zero-centred LayerNorm1P weight, computed in float32.

    HF's ``NemotronLayerNorm1P`` adds 1 at every forward, in the parameter's dtype. Storing
    ``1 + w`` once at load makes the norm an ordinary LayerNorm, so weight processing (``fold_ln``)
    needs no special case. The sum is taken in float32 because tlcore runs ops in the
    *checkpoint's* dtype and casts to the model's dtype afterwards: in bfloat16 (how Nemotron
    checkpoints are stored) ``1 + w`` would round to 8 significant bits before a float32 model ever
    saw it. One rounding, at the loader's cast, gives HF's value in float32 and bfloat16 alike.

    Args:
        tensors: The LayerNorm1P weights, ``[d_model]`` each, in the checkpoint's dtype.
        cfg: The model config (unused).

    Returns:
        ``1 + w`` in float32, one tensor per input.

    Example:
        >>> w = torch.tensor([0.0123], dtype=torch.bfloat16)
        >>> layernorm1p([w], None)[0] == w.float() + 1
        tensor([True])
    """
    return [t.to(torch.float32) + 1.0 for t in tensors]

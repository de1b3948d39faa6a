"""A block-wise FP8 quantiser for tests, writing checkpoints in the published ``fp8`` format.

Written from the format (DeepSeek-V3's ``weight_block_size`` scales; transformers'
``FineGrainedFP8Config``), not from tlcore's loader: each ``[b0, b1]`` block of a weight is
divided by ``scale_inv = max|block| / 448`` (448 is e4m3's largest value) and rounded to
``float8_e4m3fn``; the scale grid rounds up, so blocks at the edges are partial.
:func:`reference_dequantize` undoes it block by block with Python loops, an implementation
independent of :mod:`tlcore.loading.fp8`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

E4M3_MAX = 448.0
"""The largest finite ``float8_e4m3fn`` value."""

_LINEAR = re.compile(r".*_proj\.weight$")
"""Weights that FP8 releases quantise: the linear projections (attention, MLP, experts, MLA)."""


def _blocks(rows: int, cols: int, block: tuple[int, int]) -> list[tuple[slice, slice]]:
    return [
        (slice(i * block[0], (i + 1) * block[0]), slice(j * block[1], (j + 1) * block[1]))
        for i in range(math.ceil(rows / block[0]))
        for j in range(math.ceil(cols / block[1]))
    ]


def quantize_fp8(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to ``float8_e4m3fn`` with one float32 ``scale_inv`` per block.

    Args:
        weight: ``[rows, cols]``.
        block: ``weight_block_size``.

    Returns:
        ``(fp8 [rows, cols], scale_inv [ceil(rows / b0), ceil(cols / b1)])``.
    """
    rows, cols = weight.shape
    grid = (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    scale = torch.ones(grid, dtype=torch.float32)
    w = weight.detach().to(torch.float32)
    for r, c in _blocks(rows, cols, block):
        amax = w[r, c].abs().max()
        s = amax / E4M3_MAX if amax > 0 else torch.tensor(1.0)
        scale[r.start // block[0], c.start // block[1]] = s
        q[r, c] = (w[r, c] / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def reference_dequantize(
    q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """``q * scale_inv`` block by block, in float32 (the test's independent reference).

    Args:
        q: ``float8_e4m3fn [rows, cols]``.
        scale: ``[ceil(rows / b0), ceil(cols / b1)]``.
        block: ``weight_block_size``.

    Returns:
        The float32 weight.
    """
    out = q.to(torch.float32)
    for r, c in _blocks(*q.shape, block):
        out[r, c] = out[r, c] * scale[r.start // block[0], c.start // block[1]]
    return out


def quantize_checkpoint(
    folder: str | Path,
    block: tuple[int, int],
    skip: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Rewrite a ``save_pretrained`` folder (one safetensors file) as an FP8 checkpoint.

    Every ``*_proj.weight`` not under a ``skip`` prefix is stored as FP8 plus
    ``*_proj.weight_scale_inv``; ``config.json`` gets the ``quantization_config`` of the published
    releases (``fmt`` e4m3, ``activation_scheme`` dynamic, ``weight_block_size``, ``skip`` as
    ``modules_to_not_convert``).

    Args:
        folder: The folder (``model.safetensors`` and ``config.json``).
        block: ``weight_block_size``.
        skip: Module names left unquantised.

    Returns:
        The reference weights: for each quantised tensor name, its
        :func:`reference_dequantize` value (what a correct loader must produce).
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    tensors = load_file(folder / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module = key.removesuffix(".weight")
        listed = any(module == s or module.startswith(s + ".") for s in skip)
        if _LINEAR.fullmatch(key) and value.dim() == 2 and not listed:
            q, s = quantize_fp8(value, block)
            out[key], out[key + "_scale_inv"] = q, s
            reference[key] = reference_dequantize(q, s, block)
        else:
            out[key] = value.contiguous()
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": list(block),
        **({"modules_to_not_convert": list(skip)} if skip else {}),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return reference

"""MXFP4: the format gpt-oss checkpoints are published in (OCP Microscaling, FP4 E2M1 elements).

A tensor ``W [..., rows, cols]`` is stored as ``<name>_blocks`` (uint8 ``[..., rows, cols / 32,
16]``, two 4-bit codes per byte, low nibble first) and ``<name>_scales`` (uint8 ``[..., rows,
cols / 32]``, a biased power-of-two exponent per block of 32 values). transformers dequantises them
when it loads without its GPU kernels (``integrations/mxfp4.py``); tlcore does the same arithmetic
while streaming, one expert at a time, so a layer's experts never sit in memory as int64 indices.

The values are exact in float32 (and bfloat16): every FP4 value has at most two significant bits,
and the scale only moves the exponent.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, UInt8

FP4_VALUES: tuple[float, ...] = (
    +0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
)  # fmt: skip
"""The 16 FP4 (E2M1) values, indexed by their 4-bit code."""

SCALE_BIAS = 127
"""Scales are stored as ``exponent + 127`` (E8M0)."""


def dequantize_mxfp4(
    blocks: UInt8[torch.Tensor, "*batch rows groups 16"],
    scales: UInt8[torch.Tensor, "*batch rows groups"],
    dtype: torch.dtype = torch.float32,
) -> Float[torch.Tensor, "*batch rows cols"]:
    """Decode MXFP4 blocks and scales into the tensor they store.

    Args:
        blocks: Packed codes, 16 bytes (32 values) per block.
        scales: One biased exponent per block.
        dtype: Output dtype (float32 and bfloat16 hold every value exactly).

    Returns:
        ``[*batch, rows, groups * 32]``, the matrix in the layout it was quantised in (HF stores
        gpt-oss experts as ``[expert, out, in]`` here and transposes afterwards).

    Raises:
        ValueError: If the shapes do not pair up.

    Example:
        >>> blocks = torch.tensor([[[0x21] + [0] * 15]], dtype=torch.uint8)   # codes 1, 2, 0, ...
        >>> scales = torch.tensor([[128]], dtype=torch.uint8)                 # times 2 ** 1
        >>> dequantize_mxfp4(blocks, scales)[0, :3].tolist()
        [1.0, 2.0, 0.0]
    """
    if blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(
            f"MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not pair up "
            "(expected blocks [..., groups, 16] and scales [..., groups])"
        )
    lut = torch.tensor(FP4_VALUES, dtype=dtype, device=blocks.device)
    codes = blocks.to(torch.uint8)
    low, high = lut[(codes & 0x0F).long()], lut[(codes >> 4).long()]
    values = torch.stack((low, high), dim=-1).flatten(-2)  # [..., groups, 32]
    exponents = scales.to(torch.int32) - SCALE_BIAS
    values = torch.ldexp(values, exponents[..., None].to(values.dtype))
    return values.flatten(-2)


def mxfp4(tensors: list[torch.Tensor], cfg: object) -> list[torch.Tensor]:
    """Weight op: ``[blocks, scales]`` → the dequantised ``[..., cols, rows]`` tensor.

    The result is transposed over its last two axes, as transformers does, giving the in-memory
    layout of gpt-oss's expert weights (``x @ W``); the op before which the rest of a rule's ops
    run unchanged. Experts are decoded one at a time to bound the temporary memory.

    Args:
        tensors: ``[blocks, scales]`` of one quantised tensor.
        cfg: Unused (the op needs no config field).

    Returns:
        ``[W]`` in float32.

    Raises:
        ValueError: If not given exactly a blocks and a scales tensor that pair up.
    """
    if len(tensors) != 2:
        raise ValueError(f"mxfp4 takes [blocks, scales], got {len(tensors)} tensors")
    blocks, scales = tensors
    if blocks.dim() < 3 or blocks.is_meta:
        return [dequantize_mxfp4(blocks, scales).transpose(-1, -2)]
    out = torch.stack(
        [dequantize_mxfp4(b, s).transpose(-1, -2) for b, s in zip(blocks, scales, strict=True)]
    )
    return [out]

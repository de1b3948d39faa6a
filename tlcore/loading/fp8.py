"""FP8: transformers' ``quant_method: "fp8"`` (FineGrainedFP8) checkpoints, dequantised.

DeepSeek-V3/R1, the Qwen3 ``-FP8`` releases and others publish each linear weight ``W [rows, cols]``
(an expert stack ``[..., rows, cols]`` alike) as ``<name>`` in ``float8_e4m3fn`` plus
``<name>_scale_inv`` (float32 ``[..., ceil(rows / b0), ceil(cols / b1)]``), one scale per
``weight_block_size = [b0, b1]`` block: ``W[i, j] = fp8[i, j] * scale_inv[i // b0, j // b1]``.
Blocks at the bottom and right edges are partial when a side is not a multiple of the block (the
scale grid rounds up, as transformers' ``FP8Linear`` allocates it and DeepSeek's reference
``weight_dequant`` reads it). Embeddings, norms, routers and whatever ``modules_to_not_convert``
lists are stored unquantised, without a scale. With ``weight_block_size: null`` a weight has one
scale (``scale_inv`` of shape ``[]``: per-tensor scaling, Mistral's FP8 releases), and with
``activation_scheme: static`` each quantised linear also stores an ``activation_scale``, the fixed
scale FP8 kernels quantise its input with.

tlcore dequantises while it streams: :class:`FP8Source` hands the loader each weight already
multiplied out (in float32, one tensor at a time; the loader then casts it to the requested dtype),
and hides the scale tensors. The model therefore runs the dequantised weights in the requested
dtype, as transformers does when it loads such a checkpoint with ``dequantize=True`` (its default
without a GPU). Real FP8 inference also quantises the *activations* before each matmul (dynamic:
per token and block of ``b1`` channels; static: with the stored ``activation_scale``, which
tlcore reads past as transformers' dequantised model does); tlcore does not, so its logits differ
from an FP8 kernel's by that activation rounding, and equal those of the dequantised model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from tlcore.errors import CheckpointFormatError, UnsupportedConfigError

__all__ = ["FP8Format", "FP8Source", "dequantize_fp8", "fp8_format", "fp8_source"]

SCALE_SUFFIX = "_scale_inv"
"""A quantised tensor ``<name>``'s scales are stored as ``<name>_scale_inv``."""

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
"""Storage dtypes of FP8 tensors (only e4m3 weights are read; e5m2 is recognised to refuse it)."""

_NEUTRAL_KEYS = {"quant_method", "dequantize", "modules_to_not_convert", "ignored_layers"}
"""Fields that do not change the dequantised weights (``dequantize`` is what tlcore always does)."""

_REQUIRED: dict[str, tuple[Any, ...]] = {
    "fmt": (None, "e4m3"),
    "activation_scheme": ("dynamic", "static"),
    "scale_fmt": (None, "float"),
    "expert_dtype": (None, "fp8"),
    "modules_to_convert": (None, []),
}
"""Fields tlcore implements only at these values (absent is the first)."""


@dataclass(frozen=True)
class FP8Format:
    """The FP8 settings of a checkpoint's ``quantization_config``.

    Attributes:
        block: ``weight_block_size``: rows and columns per scale (None: one scale per tensor).
        modules_to_not_convert: Module names (or patterns, as transformers reads them) whose
            weights are stored unquantised.
        static: ``activation_scheme: static``: quantised linears also store an
            ``activation_scale`` (read past: it only matters to FP8 kernels).
    """

    block: tuple[int, int] | None
    modules_to_not_convert: tuple[str, ...] = ()
    static: bool = False

    def converts(self, module: str) -> bool:
        """Whether ``module``'s weight is quantised (not listed in ``modules_to_not_convert``).

        Matches as transformers' ``should_convert_module``: a listed name matches a module it
        equals or contains up to a ``.`` boundary (``layer.1`` matches ``layer.1.attn``, not
        ``layer.11``), as a regular expression, or as a suffix.

        Args:
            module: A module's dotted name (a tensor name without ``.weight``).

        Returns:
            False when the config lists the module.

        Example:
            >>> FP8Format((128, 128), ("lm_head", "model.layers.0.mlp.gate")).converts("lm_head")
            False
            >>> FP8Format((128, 128), ("model.layers.1",)).converts("model.layers.11.mlp")
            True
        """
        boundary = r"(?:(?<=\.)|(?=\.|$))"
        return not any(
            re.match(rf"(?:{name}){boundary}", module) or module.endswith(name)
            for name in self.modules_to_not_convert
        )


def fp8_format(quantization: Mapping[str, Any]) -> FP8Format:
    """Read and check a ``quant_method: "fp8"`` ``quantization_config``.

    Args:
        quantization: The config's ``quantization_config`` dict.

    Returns:
        The settings.

    Raises:
        UnsupportedConfigError: Naming the field, for a setting tlcore does not dequantise:
            ``fmt`` other than e4m3, UE8M0 scales, FP4 experts, FP8 embeddings
            (``modules_to_convert``), a malformed ``weight_block_size`` or a field it does not
            know.

    Example:
        >>> fp8_format({"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
        ...             "weight_block_size": [128, 128]}).block
        (128, 128)
    """
    for key, value in quantization.items():
        if key in _NEUTRAL_KEYS or key == "weight_block_size":
            continue
        allowed = _REQUIRED.get(key)
        norm = value.lower() if isinstance(value, str) else value
        if allowed is None or norm not in allowed:
            shown = [a for a in allowed or () if a is not None]
            raise UnsupportedConfigError(
                f"FP8 quantization_config.{key}={value!r} is not a setting tlcore dequantises "
                f"(it reads e4m3 weights with float block or tensor scales"
                + (f"; {key} must be one of {shown}" if shown else "")
                + "); load a full-precision copy of the checkpoint instead."
            )
    block = quantization.get("weight_block_size", (128, 128))  # transformers' default
    if block is not None and (
        not isinstance(block, (list, tuple))
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise UnsupportedConfigError(
            f"FP8 quantization_config.weight_block_size={block!r}: it must be two positive "
            "integers (rows and columns per scale, e.g. [128, 128]) or null (one scale per tensor)."
        )
    skip = quantization.get("modules_to_not_convert") or quantization.get("ignored_layers") or []
    static = str(quantization.get("activation_scheme", "dynamic")).lower() == "static"
    return FP8Format(None if block is None else (block[0], block[1]), tuple(skip), static)


def dequantize_fp8(
    weight: torch.Tensor,
    scale_inv: Float[torch.Tensor, "*batch row_blocks col_blocks"] | Float[torch.Tensor, ""],
    block: tuple[int, int] | None,
) -> Float[torch.Tensor, "*batch rows cols"]:
    """Multiply FP8 weights by their per-block (or per-tensor) scales, in float32.

    Each ``scale_inv[..., i, j]`` scales rows ``i*b0 ... i*b0+b0-1`` and columns
    ``j*b1 ... j*b1+b1-1``; the last block of a side that is not a multiple of the block size is
    partial. Only the scales are expanded (over rows), so the temporary memory beyond the float32
    result is ``1 / b1`` of it. With ``block`` None the weight has a single scale.

    Args:
        weight: ``float8_e4m3fn`` ``[..., rows, cols]``.
        scale_inv: ``[..., ceil(rows / b0), ceil(cols / b1)]``, or one value (``block`` None).
        block: ``(b0, b1)``, the config's ``weight_block_size`` (None: per-tensor).

    Returns:
        The float32 weight, ``weight.float() * scale`` (each value one float32 product, as
        transformers computes it).

    Raises:
        ValueError: If the dtype is not e4m3 or the scale grid does not fit the weight's shape.

    Example:
        >>> w = torch.tensor([[1.0, 2.0, 3.0]]).to(torch.float8_e4m3fn)
        >>> dequantize_fp8(w, torch.tensor([[0.5, 4.0]]), (1, 2)).tolist()
        [[0.5, 1.0, 12.0]]
    """
    if weight.dtype != torch.float8_e4m3fn:
        raise ValueError(f"expected a float8_e4m3fn weight, got {weight.dtype}")
    if weight.dim() < 2:
        raise ValueError(f"expected a [..., rows, cols] weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape[-2:]
    if block is None:  # one scale per matrix (per expert in a stack)
        batch = tuple(weight.shape[:-2])
        if scale_inv.numel() != math.prod(batch):
            raise ValueError(
                f"weight_block_size is null (one scale per matrix), but weight "
                f"{tuple(weight.shape)} has scales of shape {tuple(scale_inv.shape)}"
            )
        if weight.is_meta or scale_inv.is_meta:
            return torch.empty(weight.shape, dtype=torch.float32, device="meta")
        scale = scale_inv.to(torch.float32).reshape(*batch, 1, 1)
        return weight.to(torch.float32).mul_(scale)
    grid = (*weight.shape[:-2], math.ceil(rows / block[0]), math.ceil(cols / block[1]))
    if tuple(scale_inv.shape) != grid:
        raise ValueError(
            f"scale grid {tuple(scale_inv.shape)} does not fit weight {tuple(weight.shape)} with "
            f"weight_block_size {list(block)} (expected {grid})"
        )
    if weight.is_meta or scale_inv.is_meta:
        return torch.empty(weight.shape, dtype=torch.float32, device="meta")
    out = weight.to(torch.float32)
    scale = scale_inv.to(torch.float32).repeat_interleave(block[0], dim=-2)[..., :rows, :]
    full, rest = divmod(cols, block[1])
    out[..., : full * block[1]].unflatten(-1, (full, block[1])).mul_(scale[..., :full, None])
    if rest:
        out[..., full * block[1] :].mul_(scale[..., full:])
    return out


def _module_of(key: str) -> str:
    return key.removesuffix(".weight") if key.endswith(".weight") else key.rpartition(".")[0]


def _activation_scales(weight: str) -> tuple[str, ...]:
    if weight.endswith(".weight"):
        return (f"{_module_of(weight)}.activation_scale",)
    return (f"{weight}_activation_scale",)


class FP8Source:
    """A tensor source showing an FP8 checkpoint's weights dequantised, without their scales.

    A tensor with a ``<name>_scale_inv`` beside it is read with it and dequantised; any other
    tensor passes through unchanged. With a static activation scheme, the ``activation_scale`` of
    each quantised module is hidden too (it is never read). Checked at once for every key: a
    scale without its weight, a scale on a module that ``modules_to_not_convert`` lists; and when
    read: an FP8 tensor with no scale, a scaled tensor that is not e4m3, a scale grid that does
    not fit.

    Args:
        source: The checkpoint's source (``keys``/``get``, optionally ``release``/``n_files``).
        fmt: The checkpoint's FP8 settings (:func:`fp8_format`).

    Raises:
        CheckpointFormatError: Naming the tensor.
    """

    def __init__(self, source: Any, fmt: FP8Format) -> None:
        self._source, self.fmt = source, fmt
        keys = set(source.keys())
        self._scales: dict[str, str] = {}
        for key in sorted(k for k in keys if k.endswith(SCALE_SUFFIX)):
            weight = key.removesuffix(SCALE_SUFFIX)
            if weight not in keys:
                raise CheckpointFormatError(f"FP8 scale '{key}' has no weight '{weight}'")
            if not fmt.converts(_module_of(weight)):
                raise CheckpointFormatError(
                    f"'{weight}' has FP8 scales ('{key}') but quantization_config."
                    "modules_to_not_convert lists its module as unquantised"
                )
            self._scales[weight] = key
        hidden = set(self._scales.values())
        if (
            fmt.static
        ):  # FP8Linear's "<module>.activation_scale", FP8Experts' "<w>_activation_scale"
            names = {n for w in self._scales for n in _activation_scales(w)}
            hidden |= names & keys
        self._keys = keys - hidden
        self.n_files = getattr(source, "n_files", 1)
        self.shares_memory = getattr(source, "shares_memory", False)

    def keys(self) -> set[str]:
        """Tensor names, scales left out.

        Returns:
            Names.
        """
        return set(self._keys)

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        """Read one tensor, dequantised (float32) when the checkpoint stores it as FP8.

        Args:
            key: Its name.
            separate_map: As :meth:`SafetensorsDirSource.get
                <tlcore.loading.sources.SafetensorsDirSource.get>` (for unquantised tensors).

        Returns:
            The tensor.

        Raises:
            CheckpointFormatError: If an FP8 tensor has no scale, or a scale does not fit.
        """
        scale_key = self._scales.get(key)
        if scale_key is None:
            tensor = (
                self._source.get(key, separate_map=True) if separate_map else self._source.get(key)
            )
            if tensor.dtype in FP8_DTYPES:
                raise CheckpointFormatError(
                    f"'{key}' is stored as {tensor.dtype} but the checkpoint has no "
                    f"'{key}{SCALE_SUFFIX}' to dequantise it with"
                )
            return tensor
        weight, scale = self._source.get(key), self._source.get(scale_key)
        try:
            out = dequantize_fp8(weight, scale, self.fmt.block)
        except ValueError as exc:
            raise CheckpointFormatError(f"FP8 tensor '{key}': {exc}") from exc
        release = getattr(self._source, "release", None)
        if release is not None:  # both were copied into the result
            release(key, weight)
            release(scale_key, scale)
        return out

    def release(self, key: str, tensor: torch.Tensor) -> None:
        """Hand an unquantised tensor's pages back to the wrapped source (when it can).

        A dequantised tensor is new memory: its FP8 weight and scale were released when read.

        Args:
            key: Its name.
            tensor: The tensor :meth:`get` returned.
        """
        release = getattr(self._source, "release", None)
        if release is not None and key not in self._scales:
            release(key, tensor)


def fp8_source(source: Any, quantization: Any) -> Any:
    """Wrap ``source`` in an :class:`FP8Source` when ``quantization`` is an FP8 config.

    Args:
        source: A tensor source.
        quantization: The HF config's ``quantization_config`` (None when unquantised).

    Returns:
        The source, dequantising FP8 weights if the config says they are FP8.
    """
    if hasattr(quantization, "to_dict"):  # a transformers QuantizationConfigMixin
        quantization = quantization.to_dict()
    if isinstance(quantization, Mapping) and quantization.get("quant_method") == "fp8":
        return FP8Source(source, fp8_format(quantization))
    return source

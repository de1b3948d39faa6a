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


def quantize_fp8(
    weight: torch.Tensor, block: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to ``float8_e4m3fn`` with one float32 ``scale_inv`` per block.

    Args:
        weight: ``[rows, cols]``.
        block: ``weight_block_size`` (None: one scale for the whole tensor, shape ``[]``).

    Returns:
        ``(fp8 [rows, cols], scale_inv [ceil(rows / b0), ceil(cols / b1)])``.
    """
    rows, cols = weight.shape
    if block is None:
        q, scale = quantize_fp8(weight, (rows, cols))
        return q, scale.reshape(())
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
    q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] | None
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
    if block is None:
        return out * scale
    for r, c in _blocks(q.shape[0], q.shape[1], block):
        out[r, c] = out[r, c] * scale[r.start // block[0], c.start // block[1]]
    return out


def quantize_checkpoint(
    folder: str | Path,
    block: tuple[int, int] | None = None,
    skip: tuple[str, ...] = (),
    static: bool = False,
) -> dict[str, torch.Tensor]:
    """Rewrite a ``save_pretrained`` folder (one safetensors file) as an FP8 checkpoint.

    Every ``*_proj.weight`` not under a ``skip`` prefix is stored as FP8 plus
    ``*_proj.weight_scale_inv``; ``config.json`` gets the ``quantization_config`` of the published
    releases (``fmt`` e4m3, ``activation_scheme`` dynamic, ``weight_block_size``, ``skip`` as
    ``modules_to_not_convert``). When the folder's config already has an FP8
    ``quantization_config`` (a shrunken real config), its settings are used and it is kept as it
    is, and the arguments are ignored.

    Args:
        folder: The folder (``model.safetensors`` and ``config.json``).
        block: ``weight_block_size`` (None: one scale per tensor).
        skip: Module names left unquantised.
        static: ``activation_scheme: static``: each quantised linear also gets an
            ``activation_scale`` (the value is arbitrary: a dequantising loader reads past it).

    Returns:
        The reference weights: for each quantised tensor name, its
        :func:`reference_dequantize` value (what a correct loader must produce).
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    own = (config.get("quantization_config") or {}).get("quant_method") == "fp8"
    if own:
        settings = config["quantization_config"]
        size = settings.get("weight_block_size", (128, 128))
        block = None if size is None else (size[0], size[1])
        skip = tuple(settings.get("modules_to_not_convert") or ())
        static = settings.get("activation_scheme") == "static"
    tensors = load_file(folder / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module = key.removesuffix(".weight")
        # Skip lists name HF's in-memory modules (model.vision_tower); save_pretrained may write
        # a wrapper's tensors under their on-disk names (vision_tower...).
        prefixes = {p for s in skip for p in (s, s.removeprefix("model."))}
        listed = any(module == p or module.startswith(p + ".") for p in prefixes)
        if _LINEAR.fullmatch(key) and value.dim() == 2 and not listed:
            q, s = quantize_fp8(value, block)
            out[key], out[key + "_scale_inv"] = q, s
            if static:
                out[module + ".activation_scale"] = torch.tensor(0.25)
            reference[key] = reference_dequantize(q, s, block)
        else:
            out[key] = value.contiguous()
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    if own:
        return reference
    config["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "static" if static else "dynamic",
        "weight_block_size": None if block is None else list(block),
        **({"modules_to_not_convert": list(skip)} if skip else {}),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return reference


def dequantized_reference_folder(
    folder: str | Path, reference: dict[str, torch.Tensor], out: str | Path
) -> Path:
    """Write the unquantised checkpoint that an FP8 one stores, for HF's reference model.

    The FP8 folder's tensors with each quantised weight replaced by its reference value (float32)
    and its scales (weight and activation) dropped, and its config without
    ``quantization_config``: HF loads it with its own key conversions (fused experts...), so the
    reference needs no knowledge of HF's layout.

    Args:
        folder: The FP8 checkpoint folder (:func:`quantize_checkpoint`'s).
        reference: :func:`quantize_checkpoint`'s result.
        out: The new folder.

    Returns:
        ``out``.
    """
    from safetensors.torch import load_file, save_file

    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(folder / "model.safetensors")
    plain = {
        k: reference.get(k, v).contiguous()
        for k, v in tensors.items()
        if not k.endswith(("_scale_inv", "activation_scale"))
    }
    save_file(plain, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def quantize_hf_skeleton(model: Any, quantization: dict[str, Any]) -> Any:
    """Give HF's model (built on ``meta``) the modules it loads an FP8 checkpoint into.

    ``from_config`` ignores ``quantization_config``; ``from_pretrained`` has transformers'
    FP8 quantizer swap linear layers and experts for ones holding FP8 weights and their
    ``*_scale_inv`` tensors. This runs that same quantizer step, so the state dict's names, shapes
    and dtypes are those of the published checkpoint as HF reads it.

    Args:
        model: A transformers model on the meta device.
        quantization: The config's ``quantization_config``.

    Returns:
        The model, converted in place.
    """
    from transformers.quantizers.auto import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(dict(quantization), pre_quantized=True)
    quantizer.preprocess_model(model)
    return model


def load_hf_reference(folder: str | Path, attn_implementation: str = "eager") -> Any:
    """HF's own model of an unquantised checkpoint folder, in float32 and eval mode.

    Args:
        folder: A :func:`dequantized_reference_folder`.
        attn_implementation: HF attention implementation of the reference.

    Returns:
        The model.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    auto: Any = transformers.AutoModelForCausalLM
    if type(config) not in auto._model_mapping:
        auto = transformers.AutoModelForImageTextToText
    kwargs = {"dtype": torch.float32, "attn_implementation": attn_implementation}
    try:
        model = auto.from_pretrained(folder, experts_implementation="eager", **kwargs)
    except (TypeError, ValueError):
        model = auto.from_pretrained(folder, **kwargs)
    return model.eval()

"""The streaming loader: checkpoint tensors → a model built on "meta", one tensor at a time.

Peak memory stays near one copy of the weights: each tensor is read, transformed and assigned
(``nn.Parameter`` wrapping the converted tensor) before the next is read, and the model's parameters
never exist in a second, randomly initialised copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlcore.components.layout import linear_layout
from tlcore.loading.fp8 import fp8_source
from tlcore.loading.text_tower import TextTowerSource
from tlcore.loading.weight_map import (
    ZERO_DEFAULT_PARAMS,
    MappingReport,
    WeightMap,
    iter_mapped_tensors,
)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor, requires_grad: bool) -> nn.Parameter:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    kind = getattr(module, "linear_layouts", {}).get(leaf)
    if kind is not None:
        # Lay the weight out now, while it is the only copy: most nn.Linear weights already are
        # in F.linear's order (no copy at all); Conv1D and fused weights are copied once here.
        tensor = linear_layout(tensor, kind)
    param = nn.Parameter(tensor, requires_grad=requires_grad)
    module._parameters[leaf] = param
    return param


def _kept_in_fp32(model: nn.Module) -> set[str]:
    """Parameters their modules keep in float32 in a half-precision model (``keep_in_fp32``).

    A module lists them, relative to itself, in a ``keep_in_fp32`` class attribute (HF's
    ``_keep_in_fp32_modules_strict``: DeepSeek's router weight and expert-score bias).
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        for rel in getattr(module, "keep_in_fp32", ()):
            names.add(f"{prefix}.{rel}" if prefix else rel)
    return names


def load_checkpoint(
    model: nn.Module,
    weights: WeightMap,
    source: Any,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    where: str,
    progress: bool | None = None,
) -> dict[str, str]:
    """Fill ``model``'s parameters from ``source`` through the plan's weight map.

    Args:
        model: A model built on the meta device (its parameters define the targets and shapes).
        weights: The plan's weight map (``plan.weights``).
        source: A tensor source (``keys``/``get``).
        device: Where parameters go.
        dtype: Parameter dtype.
        where: Checkpoint description for error messages.
        progress: Show a progress bar (default: when the checkpoint has several files).

    Returns:
        The tied parameters: ``{name: other}`` where ``name`` is a zero-copy view of one
        checkpoint tensor read a second time and ``other`` a view of its first read, transposed
        (a tied unembedding and its embedding), so ``name == other.T`` until either is written.

    Raises:
        CheckpointMismatchError: Listing every missing, unexpected and mis-shaped tensor at once.
    """
    source = fp8_source(source, weights.hf.get("quantization_config"))  # FP8: dequantised
    if weights.spec.text_tower is not None:  # a multimodal wrapper: its language model only
        source = TextTowerSource(source, weights.spec.text_tower)
    params = dict(model.named_parameters())
    # Specs name GQA weights W_K/W_V; the module stores them as _W_K/_W_V (TransformerLens naming).
    aliases = {name.replace("._", "."): name for name in params if "._" in name}
    targets = {name: tuple(p.shape) for name, p in params.items()}
    targets.update({alias: targets[real] for alias, real in aliases.items()})
    report = MappingReport()
    keys = source.keys()
    show = progress if progress is not None else getattr(source, "n_files", 1) > 1
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(params), desc=f"loading {weights.spec.name}", unit="tensor")
    filled: set[str] = set()
    already_read: dict[str, list[_View]] = {}

    def read(key: str) -> torch.Tensor:
        # A key feeding two parameters (a tied embedding read again as the unembedding) is read
        # the second time through a separate copy-on-write map: the parameters are independent,
        # as in TransformerLens, yet share memory until one is written.
        if key in already_read:
            try:
                tensor = source.get(key, separate_map=True)
            except TypeError:  # a source without separate maps
                tensor = source.get(key).clone()
        else:
            tensor = source.get(key)
        already_read.setdefault(key, []).append(_view(tensor))
        return tensor

    just_assigned: list[torch.Tensor] = []
    release = getattr(source, "release", None)

    def group_done(sources: list[tuple[str, torch.Tensor]]) -> None:
        # A source whose memory no parameter uses (it was copied: transposed, split, cast) is
        # handed back at once, so the load never holds the checkpoint and the model side by side.
        kept = {p.untyped_storage().data_ptr() for p in just_assigned}
        just_assigned.clear()
        if release is None:
            return
        for key, tensor in sources:
            if tensor.untyped_storage().data_ptr() not in kept:
                release(key, tensor)

    fp32 = _kept_in_fp32(model) if dtype in (torch.float16, torch.bfloat16) else set()
    for name, tensor in iter_mapped_tensors(weights, keys, read, targets, report, group_done):
        real = aliases.get(name, name)
        to = torch.float32 if real in fp32 else dtype
        just_assigned.append(_assign(model, real, tensor.to(device=device, dtype=to), True))
        filled.add(real)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for name, param in params.items():
        if name in filled:
            continue
        if name.rpartition(".")[2] in ZERO_DEFAULT_PARAMS:
            _assign(model, name, torch.zeros(param.shape, device=device, dtype=dtype), True)
        elif name not in report.missing and aliases.get(name) not in report.missing:
            report.missing.append(name)
    report.missing = [aliases.get(m, m) for m in report.missing]
    report.raise_if_any(weights.spec, where)
    return _tied_views(model, [v for v in already_read.values() if len(v) > 1])


_View = tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype]


def _view(t: torch.Tensor) -> _View:
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype


def _tied_views(model: nn.Module, reads: list[list[_View]]) -> dict[str, str]:
    """``{name: other}`` for parameters viewing two reads of one key, ``name`` transposed."""
    if not reads:
        return {}
    views = {_view(p): name for name, p in model.named_parameters() if p.dim() == 2}
    ties: dict[str, str] = {}
    for key_reads in reads:
        for i, first in enumerate(key_reads):
            for second in key_reads[:i] + key_reads[i + 1 :]:
                ptr, shape, stride, dtype = second
                name, other = views.get((ptr, shape[::-1], stride[::-1], dtype)), views.get(first)
                if name is not None and other is not None and len(shape) == 2:
                    ties[name] = other
    return ties


def materialize_meta_buffers(model: nn.Module, device: torch.device | str) -> None:
    """Replace any buffer left on the meta device with an empty real one (none are expected).

    Args:
        device: Target device.
    """
    for module in model.modules():
        for key, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                module._buffers[key] = torch.zeros(buf.shape, dtype=buf.dtype, device=device)

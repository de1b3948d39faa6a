"""Models larger than one device: TransformerLens's ``n_devices`` split and accelerate-style maps.

A *device map* says where each top-level part of a model lives: keys are module names of the
``HookedTransformer`` (``embed``, ``pos_embed``, ``blocks`` or ``blocks.7``, ``ln_final``,
``unembed``; the longest matching prefix wins, a part not named stays on ``device``), values are

- a device (``"cuda:1"``, ``1``, ``"cpu"``): the part's weights live there and it runs there
  (the residual stream, the positions and masks follow it: TransformerLens's layer split);
- ``"cpu"`` while the compute ``device`` is an accelerator: the weights live in CPU memory and
  are copied to ``device`` just before the part runs, and dropped there after it (offload);
- ``"disk"``: the weights stay the memory-mapped checkpoint file; they are read when the part runs
  (copied to ``device`` if it is an accelerator) and their pages are given back to the operating
  system after it (``madvise(MADV_PAGEOUT)``, which never loses data), so the process holds about
  one part's weights at a time.

Hooks, ``run_with_cache``, KV caches and ``generate`` see the same model: streaming happens in
module pre- and post-forward hooks, outside tlcore's hook points. ``n_devices=N`` is the device map
of :func:`split_device_map`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tlcore.components.context import ForwardContext
from tlcore.errors import InputValidationError

DISK = "disk"
"""The device-map value of a part left in the memory-mapped checkpoint."""

_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim the pages (clean file pages are dropped, never lost)
_PAGE = mmap.PAGESIZE

DeviceMapValue = str | int | torch.device


def split_device_map(n_layers: int, n_devices: int, device: str | torch.device) -> dict[str, str]:
    """TransformerLens's ``n_devices`` layer split as a device map.

    Block ``i`` goes to device ``base + i * n_devices // n_layers``; the embeddings live on the
    first device and the final norm and unembedding on the last, as in TransformerLens. On the CPU
    every part stays on the CPU (TransformerLens does the same).

    Args:
        n_layers: Number of blocks.
        n_devices: Number of devices.
        device: The first device (``"cuda"`` means ``cuda:0``).

    Returns:
        The device map.

    Examples:
        >>> split_device_map(4, 2, "cuda")["blocks.3"], split_device_map(4, 2, "cuda")["unembed"]
        ('cuda:1', 'cuda:1')
        >>> set(split_device_map(4, 2, "cpu").values())
        {'cpu'}
    """
    if n_devices < 1:
        raise InputValidationError(f"n_devices must be >= 1, got {n_devices}", "n_devices")
    base = torch.device(device)
    first = base.index or 0

    def at(i: int) -> str:
        if base.type == "cpu":
            return "cpu"
        return str(torch.device(base.type, first + i))

    out = {"embed": at(0), "pos_embed": at(0)}
    out.update({f"blocks.{i}": at(i * n_devices // n_layers) for i in range(n_layers)})
    out["ln_final"] = out["unembed"] = at(n_devices - 1)
    return out


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one part's weights live (``home``: a device or :data:`DISK`) and where it runs."""

    home: str
    compute: torch.device

    @property
    def streamed(self) -> bool:
        """Whether the weights are brought to ``compute`` for each call (offload)."""
        return self.home == DISK or torch.device(self.home) != self.compute


def _value(value: DeviceMapValue) -> str:
    if isinstance(value, int):
        return f"cuda:{value}"
    text = str(value)
    if text == DISK:
        return DISK
    try:
        return str(torch.device(text))
    except RuntimeError as exc:
        raise InputValidationError(
            f"device_map value {value!r} is not a device, an int or 'disk'", "device_map"
        ) from exc


def placements(
    model: nn.Module, device_map: Mapping[str, DeviceMapValue], device: torch.device
) -> dict[str, Placement]:
    """Resolve a device map over the model's top-level parts (see the module docstring).

    Args:
        model: A ``HookedTransformer``.
        device_map: Module-name prefixes → device, int or ``"disk"``.
        device: The compute device of offloaded parts and of parts not named.

    Returns:
        ``{part name: Placement}`` for ``embed``, ``pos_embed``, each ``blocks.i``, ``ln_final``
        and ``unembed`` (those the model has). ``pos_embed`` (``n_ctx`` rows, read outside its
        own forward) is never offloaded: it lives where it runs.

    Raises:
        InputValidationError: For a key naming no part, or a bad value.
    """
    parts = [n for n in ("embed", "pos_embed") if getattr(model, n, None) is not None]
    parts += [f"blocks.{i}" for i in range(len(model.blocks))]  # type: ignore[arg-type]
    parts += [n for n in ("ln_final", "unembed") if getattr(model, n, None) is not None]
    values = {key: _value(v) for key, v in device_map.items()}
    for key in values:
        if not any(p == key or p.startswith(key + ".") for p in parts):
            raise InputValidationError(
                f"device_map key '{key}' names no part of the model (parts: embed, pos_embed, "
                f"blocks, blocks.<i>, ln_final, unembed)",
                "device_map",
            )
    out = {}
    for part in parts:
        keys = [k for k in values if part == k or part.startswith(k + ".")]
        home = values[max(keys, key=len)] if keys else str(device)
        runs = device if home == DISK or (home == "cpu" and device.type != "cpu") else home
        if part == "pos_embed" and home != runs:
            home = str(runs)  # small, and read outside its forward: it lives where it runs
        out[part] = Placement(home, torch.device(runs))
    return out


def _page_out(t: torch.Tensor) -> None:
    """Give back the whole pages under ``t`` (a no-op where the kernel cannot)."""
    start, length = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
    first = -(-start // _PAGE) * _PAGE
    last = ((start + length) // _PAGE) * _PAGE
    if last > first:
        _LIBC.madvise(first, last - first, _MADV_PAGEOUT)


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


try:
    _LIBC = _libc()
except (OSError, AttributeError):  # not Linux: pages are left to the OS
    _LIBC = None


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, ForwardContext):
        return _move_context(value, device)
    return value


def _move_context(ctx: ForwardContext, device: torch.device) -> ForwardContext:
    if ctx.positions.device == device:
        return ctx
    key = ("tlcore.offload", str(device))
    moved = ctx.memo.get(key)
    if moved is None:
        fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name != "memo"}
        for name, value in fields.items():
            if isinstance(value, torch.Tensor):
                fields[name] = value.to(device, non_blocking=True)
        moved = type(ctx)(**fields)
        ctx.memo[key] = moved
    return moved


class _Stream:
    """Pre/post-forward hooks of one placed part."""

    def __init__(self, module: nn.Module, placement: Placement) -> None:
        self.placement = placement
        self.home = [(p, p.data) for p in module.parameters()]

    def before(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = self.placement.compute
        if self.placement.streamed and device.type != "cpu":
            for param, data in self.home:
                param.data = data.to(device, non_blocking=True)
        args = tuple(_move(a, device) for a in args)
        kwargs = {k: _move(v, device) for k, v in kwargs.items()}
        return args, kwargs

    def after(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.placement.streamed:
            return
        for param, data in self.home:
            param.data = data
            if self.placement.home == DISK and _LIBC is not None:
                _page_out(data)


def place_(
    model: nn.Module, device_map: Mapping[str, DeviceMapValue], device: str | torch.device
) -> dict[str, Placement]:
    """Move each part to its home and install the streaming hooks (see the module docstring).

    Args:
        model: A loaded ``HookedTransformer`` (weights on the CPU; ``"disk"`` parts still backed
            by the checkpoint's memory map).
        device_map: The device map.
        device: The compute device.

    Returns:
        The placements (also stored as ``model.placements``).
    """
    compute = torch.device(device)
    plan = placements(model, device_map, compute)
    for part, placement in plan.items():
        module = model.get_submodule(part)
        if placement.home != DISK:
            module.to(placement.home)
        if placement.streamed:  # buffers (rotary tables) are small: they live where it runs
            for owner in module.modules():
                for key, buf in owner._buffers.items():
                    if buf is not None:
                        owner._buffers[key] = buf.to(placement.compute)
        stream = _Stream(module, placement)
        module.register_forward_pre_hook(stream.before, with_kwargs=True)
        module.register_forward_hook(stream.after)
        if placement.home == DISK and _LIBC is not None:
            for _, data in stream.home:
                _page_out(data)
    for name, buf in model.named_buffers(recurse=False):  # model-level buffers: first device
        model._buffers[name] = buf.to(plan[next(iter(plan))].compute)
    model.placements = plan  # type: ignore[assignment]
    return plan

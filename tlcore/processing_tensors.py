"""How weight processing rewrites a parameter: chunk by chunk, in place where it may.

A processing step (fold a norm into a reader, centre a writer) is a function of one parameter along
one axis (``d_model`` or the vocabulary). :func:`rewrite_` applies it a slice at a time: each slice
(all of the kept axis, a few rows of the others) is transformed and written back in the parameter's
own dtype, so the work never holds more than :data:`CHUNK_ELEMENTS` values beside the weights.
Half-precision parameters (bfloat16, float16) are raised to float64 for the whole step and rounded
once. Float32 parameters are scaled, reduced and shifted in float32: torch's CPU and GPU sums are
cascaded (pairwise) sums, so a mean over ``n`` values errs by ``O(eps log n)`` of its terms, the
size of one rounding of the mean itself, and each value is rounded at most three times (a relative
error under 4e-7). Converting every slice to float64 for its mean cost ten times the whole float32
pass and bought nothing the float32 parameter can hold.

Where it is allowed (:func:`in_place`), the result is written into the parameter's own storage:
a weight still backed by its checkpoint's private memory map becomes private memory page by page,
so a processed load peaks at one copy of the weights. It is allowed only while loading from a
source whose memory tlcore owns (``from_pretrained`` from files) and only for a parameter whose
memory no other parameter overlaps; otherwise the result goes to a new tensor and the old one is
left as it was (tensors the caller still holds, an HF model passed as ``hf_model=``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

CHUNK_ELEMENTS = 1 << 20
"""Largest slice worked on at once (1M values: 8 MB of float64)."""

Where = tuple[int, int, int] | None
"""``(dim, start, stop)`` of a slice, or None for the whole tensor."""

_WRITABLE: contextvars.ContextVar[frozenset[int] | None] = contextvars.ContextVar(
    "tlcore_processing_in_place", default=None
)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype processing computes in: float64 (or wider), rounded once on write.

    Args:
        dtype: The parameter's dtype.

    Returns:
        ``float64`` for every float dtype up to float64.

    Examples:
        >>> work_dtype(torch.bfloat16)
        torch.float64
    """
    return torch.promote_types(dtype, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype :func:`rewrite_` hands a step: the parameter's own for float32/64, else float64.

    Args:
        dtype: The parameter's dtype.

    Returns:
        The dtype of the slices a step works on.

    Examples:
        >>> compute_dtype(torch.float32), compute_dtype(torch.bfloat16)
        (torch.float32, torch.float64)
    """
    return dtype if dtype in (torch.float32, torch.float64) else work_dtype(dtype)


def mean(work: torch.Tensor, dim: int) -> torch.Tensor:
    """The mean over ``dim`` (kept), in ``work``'s dtype (a cascaded sum; see the module doc).

    Args:
        work: A slice (float32 or float64: :func:`compute_dtype`).
        dim: The axis.

    Returns:
        The mean, broadcastable against ``work``.

    Examples:
        >>> work = torch.full((3, 1_000_000), 0.1)
        >>> abs(float(mean(work, 1)[0, 0]) - 0.1) < 1e-8
        True
    """
    return work.mean(dim, keepdim=True)


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """The byte range of ``t`` inside its storage."""
    if t.numel() == 0:
        return 0, 0
    span = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True)) + 1
    start = int(t.storage_offset()) * t.element_size()
    return start, start + int(span) * t.element_size()


def exclusive_parameters(model: nn.Module) -> frozenset[int]:
    """Ids of the parameters whose memory no other parameter shares (safe to write in place).

    A parameter registered twice (a tied ``nn.Parameter``) or overlapping another's bytes in one
    storage is not exclusive; views of disjoint parts of one storage (a split fused QKV) are.

    Args:
        model: Any module.

    Returns:
        A set of ``id(parameter)``.
    """
    seen: dict[int, int] = {}
    by_storage: dict[int, list[tuple[int, int, int]]] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    for param in {id(p): p for p in model.parameters()}.values():
        if param.device.type == "meta":
            continue
        start, stop = _extent(param)
        key = param.untyped_storage().data_ptr()
        by_storage.setdefault(key, []).append((start, stop, id(param)))
    alone: set[int] = set()
    for ranges in by_storage.values():
        ranges.sort()
        for index, (start, stop, ident) in enumerate(ranges):
            before = index > 0 and ranges[index - 1][1] > start
            after = index + 1 < len(ranges) and ranges[index + 1][0] < stop
            if not before and not after and seen[ident] == 1:
                alone.add(ident)
    return frozenset(alone)


@contextlib.contextmanager
def in_place(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Let :func:`rewrite_` write into the exclusive parameters of ``model`` while inside.

    Args:
        model: The model being processed.
        enabled: False leaves every write out of place (a no-op context).

    Yields:
        Nothing.
    """
    token = _WRITABLE.set(exclusive_parameters(model) if enabled else None)
    try:
        yield
    finally:
        _WRITABLE.reset(token)


def _writable(param: torch.Tensor) -> bool:
    allowed = _WRITABLE.get()
    return allowed is not None and id(param) in allowed


def slices(t: torch.Tensor, keep: int) -> Iterator[tuple[Where, torch.Tensor]]:
    """Slices of ``t`` that each hold all of axis ``keep``, under :data:`CHUNK_ELEMENTS` values.

    Args:
        t: A tensor.
        keep: The axis every slice keeps whole (the one a step reduces over).

    Yields:
        ``(where, view)``; ``where`` is None when the whole tensor is one slice.
    """
    keep = keep % t.dim() if t.dim() else 0
    others = [d for d in range(t.dim()) if d != keep]
    if t.numel() <= CHUNK_ELEMENTS or not others:
        yield None, t
        return
    dim = max(others, key=lambda d: t.shape[d])
    rows = max(1, CHUNK_ELEMENTS * t.shape[dim] // t.numel())
    for start in range(0, t.shape[dim], rows):
        stop = min(start + rows, t.shape[dim])
        yield (dim, start, stop), t.narrow(dim, start, stop - start)


def rewrite_(
    module: nn.Module,
    name: str,
    keep: int,
    step: Callable[[torch.Tensor, Where], torch.Tensor],
) -> None:
    """Replace ``module.<name>`` by ``step`` of it (see the module doc).

    A float32 or float64 parameter is worked on whole, in its own dtype: in its own memory where
    :func:`in_place` allows, else in a copy with its strides (so both give the same bits). A
    half-precision parameter goes slice by slice through float64.

    Args:
        module: The module holding the parameter.
        name: The parameter's name.
        keep: The axis each slice holds whole (``step`` may reduce over it).
        step: ``(slice, where) -> new slice`` of the same shape; the slice, in
            :func:`compute_dtype`, may be modified and returned (it is the parameter's own memory
            when it is rewritten in place in its own dtype).
    """
    param = getattr(module, name)
    assert isinstance(param, torch.Tensor), f"{type(module).__name__}.{name} is not a tensor"
    work = compute_dtype(param.dtype)
    own = _writable(param)
    with torch.no_grad():
        if work == param.dtype:
            # A step in the parameter's own dtype allocates nothing the size of the tensor, so it
            # runs on the whole of it: slicing a weight across its memory order (a vocabulary
            # mean of W_U read 20 rows of d_model at a time) cost more than the maths.
            target = param.data if own else param.data.clone(memory_format=torch.preserve_format)
            out = step(target, None)
            if out.data_ptr() != target.data_ptr() or out.stride() != target.stride():
                target.copy_(out)
            if not own and isinstance(param, nn.Parameter):
                param.data = target  # keeps its strides: the next step reduces in the same order
                return
        else:  # each slice raised to float64, rounded once into the parameter or a new tensor
            target = (
                param.data
                if own
                else torch.empty(param.shape, dtype=param.dtype, device=param.device)
            )
            for where, view in slices(param.data, keep):
                _narrow(target, where).copy_(step(view.to(work, copy=True), where))
    if not own:
        assign(module, name, target, param.dtype)


def _narrow(t: torch.Tensor, where: Where) -> torch.Tensor:
    return t if where is None else t.narrow(where[0], where[1], where[2] - where[1])


def narrow_reduced(t: torch.Tensor, where: Where, reduced: int) -> torch.Tensor:
    """The part of ``t`` (a reduction over axis ``reduced``) that a slice ``where`` produced.

    Args:
        t: A tensor with the reduced axis removed.
        where: The slice.
        reduced: The axis (non-negative) the reduction removed.

    Returns:
        A view of ``t``.
    """
    if where is None:
        return t
    dim = where[0] if where[0] < reduced else where[0] - 1
    return t.narrow(dim, where[1], where[2] - where[1])


def assign(
    module: nn.Module, name: str, value: torch.Tensor, dtype: torch.dtype, requires_grad: Any = True
) -> None:
    """Write ``value`` into ``module.<name>`` in ``dtype``: in place where allowed, else new data.

    Args:
        module: The module.
        name: The attribute (a new Parameter is made if it is None).
        value: The new value.
        dtype: The dtype to store.
        requires_grad: For a newly made Parameter.
    """
    current = getattr(module, name, None)
    if (
        isinstance(current, nn.Parameter)
        and _writable(current)
        and current.shape == value.shape
        and current.dtype == dtype
    ):
        with torch.no_grad():
            current.data.copy_(value)
        return
    value = value.to(dtype).contiguous()
    if isinstance(current, nn.Parameter):
        current.data = value
    else:
        setattr(module, name, nn.Parameter(value, requires_grad=bool(requires_grad)))

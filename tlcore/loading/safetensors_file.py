"""A strict safetensors reader that owns its memory map, so the loader can give pages back.

Tensors are zero-copy views of a private (copy-on-write) map of the file. A weight already in the
layout tlcore keeps stays a view: its pages are read from disk only when first used, exactly like
HF's own loading. A weight that must be transformed (Conv1D transposes, fused QKV splits) is copied
once; :meth:`SafetensorsFile.release` then drops the source pages from the process (``madvise``), so
the peak memory of a load stays near one copy of the weights instead of two.

The header is checked as strictly as the official ``safetensors`` reader checks it, before any
tensor is read (:func:`parse_header`): the 8-byte length, a size limit, UTF-8 JSON object, known
dtypes, shapes and offsets of the right types, each tensor's byte length equal to its shape times
its dtype's size, and the tensors' byte ranges tiling the data section exactly (sorted, no gap, no
overlap, no two tensors sharing bytes, nothing left over). It is stricter in one respect: a tensor
name given twice in the header is refused (the official reader keeps one silently). Every error is
a :class:`~tlcore.errors.CheckpointFormatError` naming the file and, where there is one, the
tensor.

**If the file changes while a model built from it is alive.** Parameters that were not copied
during loading (weights already in tlcore's layout, loaded with no weight processing) stay backed
by the file's pages through a private map. Replacing the file by a rename (how the HF hub cache
and atomic writers update files) is safe: the old file lives on until its map is closed. Writing
into the same file in place (``save_file`` or ``save_pretrained`` over the checkpoint a live model
came from) is not: pages not yet read reflect the new bytes (values change silently), and if the
file shrinks, touching a page past its new end kills the process with ``SIGBUS``. Save to a new
folder, or clone the parameters first (``for p in model.parameters(): p.data = p.data.clone()``).
Models loaded with weight processing (``from_pretrained``'s default) hold copies of most weights.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlcore.errors import CheckpointFormatError

MAX_HEADER_SIZE = 100_000_000
"""Largest header accepted, in bytes (the official reader's limit)."""

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Every dtype of the safetensors format, with its size in bits."""

_TORCH_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
}
_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry, checked."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a safetensors dtype name, or None if this torch has none.

    Args:
        name: A key of :data:`DTYPE_BITS`.

    Returns:
        The torch dtype or None (F4, F6, or a dtype this torch build lacks).
    """
    found = getattr(torch, _TORCH_DTYPES.get(name, "-"), None)
    return found if isinstance(found, torch.dtype) else None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    pass


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_header(
    raw: bytes, data_size: int, where: str
) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Check a safetensors JSON header against the size of the data section that follows it.

    Args:
        raw: The header bytes (after the 8-byte length).
        data_size: Bytes in the file after the header.
        where: The file, for messages.

    Returns:
        ``(tensors, metadata)``: the checked entries by name and the ``__metadata__`` strings.

    Raises:
        CheckpointFormatError: Naming ``where``, the tensor if any, and what is wrong.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointFormatError(f"{where}: safetensors header is not UTF-8 ({exc})") from exc
    if not text.lstrip(" ").startswith("{"):
        raise CheckpointFormatError(f"{where}: safetensors header is not a JSON object")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise CheckpointFormatError(
            f"{where}: tensor '{exc.args[0]}': named twice in the safetensors header"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointFormatError(
            f"{where}: safetensors header is not valid JSON ({exc})"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{where}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointFormatError(
            f"{where}: safetensors '__metadata__' must map strings to strings"
        )
    entries = {name: _entry(name, info, where) for name, info in header.items()}
    _check_layout(entries, data_size, where)
    return entries, metadata


def _entry(name: str, info: Any, where: str) -> TensorEntry:
    def bad(reason: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{where}: tensor '{name}': {reason}")

    if not isinstance(info, dict):
        raise bad("header entry is not a JSON object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise bad(f"header entry has no '{key}'")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"unknown dtype {dtype!r} (safetensors dtypes: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_uint(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad(f"data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise bad(f"shape {shape} of {dtype} is not a whole number of bytes")
    if offsets[1] - offsets[0] != bits // 8:
        raise bad(
            f"shape {shape} of {dtype} needs {bits // 8} bytes, but data_offsets {offsets} hold "
            f"{offsets[1] - offsets[0]}"
        )
    return TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(entries: dict[str, TensorEntry], data_size: int, where: str) -> None:
    """The byte ranges must tile ``[0, data_size)`` exactly, as the official reader requires."""
    ordered = sorted(entries.items(), key=lambda item: (item[1].start, item[1].end))
    position, previous = 0, None
    for name, entry in ordered:
        if entry.start != position:
            if entry.start < position:
                problem = f"overlaps tensor '{previous}' (bytes {entry.start}..{entry.end})"
            else:
                problem = f"leaves a gap of {entry.start - position} bytes before it"
            raise CheckpointFormatError(
                f"{where}: tensor '{name}': data_offsets [{entry.start}, {entry.end}] {problem}; "
                f"the file is corrupt or was not written by a safetensors writer"
            )
        position, previous = entry.end, name
    if position != data_size:
        raise CheckpointFormatError(
            f"{where}: the tensors cover {position} bytes of data but the file holds {data_size} "
            f"after its header (truncated, or extra bytes)"
        )


class SafetensorsFile:
    """One ``.safetensors`` file, checked and memory-mapped privately.

    Args:
        path: The file.

    Raises:
        CheckpointFormatError: If the file cannot be read or its header is malformed (see the
            module docstring for every check).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        where = str(self.path)
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < 8:
                    raise CheckpointFormatError(
                        f"{where}: {size} bytes, too small for a safetensors file (an 8-byte "
                        f"header length comes first)"
                    )
                (header_len,) = struct.unpack("<Q", handle.read(8))
                if header_len > MAX_HEADER_SIZE:
                    raise CheckpointFormatError(
                        f"{where}: safetensors header length {header_len} is over the "
                        f"{MAX_HEADER_SIZE}-byte limit (not a safetensors file?)"
                    )
                if 8 + header_len > size:
                    raise CheckpointFormatError(
                        f"{where}: safetensors header length {header_len} runs past the end of "
                        f"the {size}-byte file (truncated?)"
                    )
                raw = handle.read(header_len)
                self._entries, self.metadata = parse_header(raw, size - 8 - header_len, where)
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError as exc:
            raise CheckpointFormatError(f"{where}: cannot read: {exc}") from exc
        self._base = 8 + header_len
        if len(self._map) < size:
            raise CheckpointFormatError(f"{where}: the file changed while it was being opened")
        self._buffer = memoryview(self._map)

    def keys(self) -> list[str]:
        """Tensor names in the file.

        Returns:
            Names.
        """
        return list(self._entries)

    def entry(self, key: str) -> TensorEntry:
        """The checked header entry of one tensor.

        Args:
            key: Tensor name.

        Returns:
            Its dtype, shape and byte range.

        Raises:
            CheckpointFormatError: If the file has no such tensor.
        """
        entry = self._entries.get(key)
        if entry is None:
            raise CheckpointFormatError(f"{self.path}: no tensor named '{key}' in this file")
        return entry

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        """A zero-copy view of one tensor.

        Args:
            key: Tensor name.
            separate_map: View it through a map of its own. Two tensors read from separate private
                maps share the file's pages until one is written (copy-on-write), so a tied
                embedding read a second time as the unembedding costs no memory yet stays an
                independent parameter.

        Returns:
            The tensor (CPU), backed by the file map (a copy if its bytes are not aligned for its
            dtype, which a safetensors writer never produces).

        Raises:
            CheckpointFormatError: For a missing tensor or a dtype this torch cannot hold.
        """
        entry = self.entry(key)
        dtype = torch_dtype(entry.dtype)
        if dtype is None:
            raise CheckpointFormatError(
                f"{self.path}: tensor '{key}': dtype {entry.dtype} is not supported by this "
                f"version of torch"
            )
        if entry.end == entry.start:
            return torch.empty(entry.shape, dtype=dtype)
        buffer = self._buffer
        if separate_map:
            with open(self.path, "rb") as handle:
                buffer = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY))
        offset = self._base + entry.start
        if dtype == torch.bool:  # any non-zero byte is True (a raw 2 would break bool ops)
            raw = torch.frombuffer(buffer, dtype=torch.uint8, count=entry.end - entry.start,
                                   offset=offset)  # fmt: skip
            return raw.ne(0).view(entry.shape)
        if offset % dtype.itemsize:  # frombuffer needs aligned data; copy the bytes once
            raw = torch.frombuffer(buffer, dtype=torch.uint8, count=entry.end - entry.start,
                                   offset=offset)  # fmt: skip
            return raw.clone().view(dtype).view(entry.shape)
        flat = torch.frombuffer(
            buffer,
            dtype=dtype,
            count=(entry.end - entry.start) // dtype.itemsize,
            offset=offset,
        )
        return flat.view(entry.shape)

    def release(self, tensor: torch.Tensor) -> None:
        """Drop the pages under a tensor from this file (only while nothing has written there).

        The pages are re-read from disk if anything touches them again, so this is always safe for
        values; it only matters for memory.

        Args:
            tensor: A tensor returned by :meth:`get`.
        """
        address = tensor.untyped_storage().data_ptr()
        map_start = _address_of(self._buffer)
        offset = address - map_start
        length = tensor.untyped_storage().nbytes()
        if offset < 0 or offset + length > len(self._map) or not hasattr(self._map, "madvise"):
            return
        # Only whole pages inside the tensor: neighbours' pages stay resident.
        first = -(-offset // _PAGE) * _PAGE
        last = ((offset + length) // _PAGE) * _PAGE
        if last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    def close(self) -> None:
        """Release the buffer view (tensors still referencing the map keep it alive)."""
        self._buffer.release()


def _address_of(buffer: memoryview) -> int:
    return torch.frombuffer(buffer, dtype=torch.uint8, count=1).untyped_storage().data_ptr()

"""A minimal safetensors reader that owns its memory map, so the loader can give pages back.

Tensors are zero-copy views of a private (copy-on-write) map of the file. A weight already in the
layout tlcore keeps stays a view: its pages are read from disk only when first used, exactly like
HF's own loading. A weight that must be transformed (Conv1D transposes, fused QKV splits) is copied
once; :meth:`SafetensorsFile.release` then drops the source pages from the process (``madvise``), so
the peak memory of a load stays near one copy of the weights instead of two.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import torch

from tlcore.errors import CheckpointMismatchError

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_PAGE = mmap.PAGESIZE


class SafetensorsFile:
    """One ``.safetensors`` file, memory-mapped privately.

    Args:
        path: The file.

    Raises:
        CheckpointMismatchError: If the header is malformed or names an unknown dtype.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            try:
                header = json.loads(handle.read(header_len))
            except ValueError as exc:
                raise CheckpointMismatchError(f"{self.path}: malformed safetensors header") from exc
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self.metadata = header.pop("__metadata__", {}) or {}
        self._entries = header
        self._base = 8 + header_len
        self._buffer = memoryview(self._map)

    def keys(self) -> list[str]:
        """Tensor names in the file.

        Returns:
            Names.
        """
        return list(self._entries)

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        """A zero-copy view of one tensor.

        Args:
            key: Tensor name.
            separate_map: View it through a map of its own. Two tensors read from separate private
                maps share the file's pages until one is written (copy-on-write), so a tied
                embedding read a second time as the unembedding costs no memory yet stays an
                independent parameter.

        Returns:
            The tensor (CPU), backed by the file map.

        Raises:
            CheckpointMismatchError: For an unsupported dtype.
        """
        entry = self._entries[key]
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointMismatchError(
                f"{self.path}: tensor {key} has unsupported dtype {entry['dtype']}"
            )
        start, end = entry["data_offsets"]
        shape = entry["shape"]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        buffer = self._buffer
        if separate_map:
            with open(self.path, "rb") as handle:
                buffer = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY))
        flat = torch.frombuffer(
            buffer,
            dtype=dtype,
            count=(end - start) // dtype.itemsize,
            offset=self._base + start,
        )
        return flat.view(shape)

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

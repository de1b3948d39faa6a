"""Reading a GGUF file: its fixed header checked first, then gguf-py's parse; its SHA-256."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from tlcore.errors import CheckpointFormatError

_GGUF_MAGIC = b"GGUF"
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


def check_gguf_header(path: Path) -> None:
    """Check a GGUF file's fixed header before gguf-py parses it.

    The magic, a version gguf-py reads (2 or 3), and tensor and key counts that fit in the file
    (each entry takes a minimum number of bytes), so a corrupt count cannot make parsing run for
    long.

    Args:
        path: The file.

    Raises:
        CheckpointFormatError: Naming the file and what is wrong.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read: {exc}") from exc
    if len(head) < 24 or head[:4] != _GGUF_MAGIC:
        raise CheckpointFormatError(
            f"{path}: not a GGUF file ({size} bytes; a GGUF file starts with b'GGUF', a version "
            f"and two counts)"
        )
    for order in "<>":  # gguf-py reads either byte order
        version, n_tensors, n_kv = struct.unpack(order + "IQQ", head[4:24])
        if version in (2, 3):
            break
    else:
        (version,) = struct.unpack("<I", head[4:8])
        raise CheckpointFormatError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    room = size - 24
    if n_tensors * _MIN_TENSOR_INFO_BYTES + n_kv * _MIN_KV_BYTES > room:
        raise CheckpointFormatError(
            f"{path}: GGUF header declares {n_tensors} tensors and {n_kv} metadata keys, more "
            f"than its {size} bytes can hold (truncated or corrupt)"
        )


def read_gguf(path: Path) -> Any:
    """Parse a GGUF file with gguf-py, after :func:`check_gguf_header`.

    Args:
        path: The file.

    Returns:
        A ``gguf.GGUFReader``.

    Raises:
        CheckpointFormatError: If the file is malformed (whatever gguf-py raised, with the file
            name).
    """
    from gguf import GGUFReader

    check_gguf_header(path)
    try:
        return GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf-py raises many types on corrupt bytes
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointFormatError(
            f"{path}: malformed GGUF file ({type(exc).__name__}: {reason})"
        ) from exc


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file (hex), read in 1 MiB blocks.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

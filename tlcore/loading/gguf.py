"""GGUF files (llama.cpp's format) as checkpoint sources, and a one-time safetensors conversion.

A GGUF file holds quantised tensors under llama.cpp's names plus the model's config and tokenizer
as metadata. :class:`GGUFSource` presents it as an ordinary tlcore checkpoint: HF Llama tensor
names, float32 tensors, an HF ``config.json`` dict and a transformers tokenizer, so the normal spec
weight map applies. :func:`convert_gguf_to_safetensors` writes that view to a cache folder once;
the folder is then a plain HF checkpoint directory that loads in well under a second.

Everything that differs between llama.cpp and HF is data (:data:`GGUF_ARCHITECTURES`), so adding
an architecture means adding a table, not code. The parts live in their own modules and are
re-exported here: the tables in :mod:`tlcore.loading.gguf_tables`, reading the file in
:mod:`tlcore.loading.gguf_file`, the source in :mod:`tlcore.loading.gguf_source`; this module
converts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from tlcore.loading.gguf_file import check_gguf_header, file_sha256, read_gguf
from tlcore.loading.gguf_source import GGUFSource
from tlcore.loading.gguf_tables import GGUF_ARCHITECTURES, LLAMA, GGUFArchitecture

__all__ = [
    "GGUF_ARCHITECTURES",
    "LLAMA",
    "GGUFArchitecture",
    "GGUFSource",
    "check_gguf_header",
    "convert_gguf_to_safetensors",
    "read_gguf",
    "tlcore_cache_dir",
]


def tlcore_cache_dir() -> Path:
    """Return tlcore's cache root.

    Returns:
        ``$TLCORE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tlcore``, else ``~/.cache/tlcore``.
    """
    if os.environ.get("TLCORE_CACHE_DIR"):
        return Path(os.environ["TLCORE_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tlcore"


def convert_gguf_to_safetensors(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Convert a GGUF file once into a cached HF checkpoint folder, and return that folder.

    The folder, ``<cache root>/gguf/<first 16 hex digits of the file's SHA-256>/``, holds
    ``config.json``, ``model.safetensors`` (float32, HF names) and the tokenizer files. It is
    written under a temporary name and renamed into place, so it either exists complete or not at
    all; a later call only hashes the file and returns it.

    Args:
        path: The ``.gguf`` file.
        cache_dir: Cache root to use instead of :func:`tlcore_cache_dir`.

    Returns:
        The checkpoint folder.

    Raises:
        UnsupportedConfigError: If the file cannot be read as a supported architecture.

    Example:
        >>> from tlcore_offline_models import find_smollm2_gguf
        >>> folder = convert_gguf_to_safetensors(find_smollm2_gguf())  # cached after the first
        >>> sorted(p.name for p in folder.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['chat_template.jinja', 'config.json', 'model.safetensors', 'tokenizer.json',
         'tokenizer_config.json']
    """
    path = Path(path)
    digest = file_sha256(path)
    root = Path(cache_dir).expanduser() if cache_dir is not None else tlcore_cache_dir()
    target = root / "gguf" / digest[:16]
    if _is_complete(target):
        return target

    source = GGUFSource(path)
    source._sha256 = digest  # already streamed once above
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent)
    )
    try:
        (staging / "config.json").write_text(json.dumps(source.hf_config(), indent=2) + "\n")
        source.tokenizer().save_pretrained(staging)
        file_metadata = {"format": "pt", "source": "gguf", "gguf_sha256": digest}
        _write_safetensors(staging / "model.safetensors", source, file_metadata)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Move a finished staging folder to ``target`` in one rename."""
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # damaged by hand; ours to replace
    try:
        staging.rename(target)
    except OSError:
        # A concurrent conversion of the same file got there first; its result is identical.
        if not _is_complete(target):
            raise


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _write_safetensors(file: Path, source: GGUFSource, file_metadata: dict[str, str]) -> None:
    """Write every tensor of ``source`` as float32 safetensors, one tensor in memory at a time.

    ``safetensors.torch.save_file`` needs the whole state dict in memory (517 MB for SmolLM2);
    the format is simple enough to stream: a little-endian u64 header length, a JSON header of
    shapes and byte offsets (space-padded to 8 bytes), then the raw tensor bytes in that order.
    """
    from tqdm.auto import tqdm

    keys = sorted(source.keys())
    header: dict[str, Any] = {"__metadata__": file_metadata}
    offset = 0
    for key in keys:
        shape = source.shape(key)
        size = 4 * math.prod(shape)
        header[key] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    with open(file, "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for key in tqdm(keys, desc=f"Converting {source.path.name}", unit="tensor"):
            tensor = source.get(key).contiguous()
            if tuple(tensor.shape) != tuple(header[key]["shape"]):
                raise RuntimeError(f"{key}: read {tuple(tensor.shape)}, expected {header[key]}")
            out.write(tensor.numpy().astype("<f4", copy=False).tobytes())

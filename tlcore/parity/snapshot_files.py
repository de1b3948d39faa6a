"""Snapshot storage: the manifest, the safetensors files and where they live.

:mod:`tlcore.parity.snapshots` judges logits against what this module reads and writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from tlcore import __version__
from tlcore.builtin.plugin import specs_dir

SNAPSHOT_ATOL = 1e-5
SNAPSHOT_RTOL = 1e-6
"""Tolerance ``atol + rtol * max|stored logits|``. The scale term absorbs summation-order noise:
MoE specs' logits move by ~2e-5 (at |logits| ~40) between 1 and 2 torch threads."""
SNAPSHOT_RTOL_HALF = {"bfloat16": 2.0**-7, "float16": 2.0**-10}
"""Half-precision snapshots (``specs/snapshots/<dtype>``): ``rtol`` of one unit in the last place
at the largest logit, since another CPU's half-precision kernels may round differently."""
MANIFEST = "manifest.json"
FORMAT = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def default_snapshot_dir() -> Path:
    """The built-in snapshot folder (``specs/snapshots`` in a checkout).

    Returns:
        The folder (it may not exist yet).
    """
    return specs_dir() / "snapshots"


def snapshot_key(spec: str, variant: str | None) -> str:
    """The file stem and manifest key of a case.

    Args:
        spec: Spec name.
        variant: Test variant or None.

    Returns:
        ``spec`` or ``spec__variant``.

    Raises:
        ValueError: If a name has characters unsafe in a file name.

    Example:
        >>> snapshot_key("llama", "mha")
        'llama__mha'
    """
    for part in (spec, variant):
        if part is not None and not _SAFE_NAME.match(part):
            raise ValueError(f"'{part}': spec and variant names must match {_SAFE_NAME.pattern}")
    return f"{spec}__{variant}" if variant else spec


# -- manifest ------------------------------------------------------------------------------------


def read_manifest(directory: str | Path | None = None) -> dict[str, Any]:
    """Read a snapshot manifest (an empty one if the file does not exist).

    Args:
        directory: Snapshot folder (default :func:`default_snapshot_dir`).

    Returns:
        ``{"format": 1, "entries": {key: entry}}``.

    Raises:
        ValueError: If the manifest is not valid JSON of the expected shape.
    """
    path = Path(directory or default_snapshot_dir()) / MANIFEST
    if not path.exists():
        return {"format": FORMAT, "entries": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise ValueError(f"{path}: expected an object with an 'entries' object")
    return data


def write_manifest(manifest: dict[str, Any], directory: str | Path | None = None) -> Path:
    """Write the manifest atomically, keys sorted (stable diffs).

    Args:
        directory: Snapshot folder.

    Returns:
        The manifest path.
    """
    folder = Path(directory or default_snapshot_dir())
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "about": (
            "tlcore parity snapshots: tokens + tlcore's raw fp32 logits per spec/variant on the "
            "tiny seeded checkpoint. Written by `python tools/parity.py --update`; checked by "
            "`python tools/parity.py --check`."
        ),
        "tolerance": {"atol": SNAPSHOT_ATOL, "rtol_of_max_abs": SNAPSHOT_RTOL},
        "entries": dict(sorted(manifest["entries"].items())),
    }
    return atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half a file.

    Returns:
        ``path``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; a checked-in file gets the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(data: bytes) -> str:
    """The sha256 hex digest the manifest records for a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def versions() -> dict[str, str]:
    """The versions that make snapshot logits what they are.

    Returns:
        ``{"tlcore": ..., "torch": ..., "transformers": ...}``.
    """
    import transformers  # heavy: only when a snapshot is written or judged

    return {
        "tlcore": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# -- files ---------------------------------------------------------------------------------------


def encode_snapshot(
    tokens: Int[torch.Tensor, "batch pos"],
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    spec: str,
    variant: str | None,
) -> bytes:
    """Serialise a snapshot (safetensors bytes).

    Args:
        tokens: The token batch.
        logits: tlcore's fp32 logits on it.
        spec: Spec name (stored in the header for people reading the file).
        variant: Test variant.

    Returns:
        The file's bytes.
    """
    from safetensors.torch import save

    tensors = {
        "tokens": tokens.detach().to(torch.int64).contiguous(),
        "logits": logits.detach().to(torch.float32).contiguous(),
    }
    return save(tensors, metadata={"spec": spec, "variant": variant or ""})


def decode_snapshot(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a snapshot's bytes.

    Args:
        data: safetensors bytes.

    Returns:
        ``(tokens, logits)``.

    Raises:
        ValueError: If the data is not a snapshot.
    """
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"not a readable safetensors file ({exc})") from exc
    if set(tensors) != {"tokens", "logits"}:
        raise ValueError(f"expected tensors 'tokens' and 'logits', found {sorted(tensors)}")
    tokens, logits = tensors["tokens"], tensors["logits"]
    if logits.shape[:2] != tokens.shape or logits.dtype != torch.float32:
        raise ValueError(
            f"bad shapes/dtypes: tokens {tuple(tokens.shape)}, logits "
            f"{tuple(logits.shape)} {logits.dtype}"
        )
    return tokens, logits


@dataclass
class StoredSnapshot:
    """A snapshot read from disk, or why it could not be."""

    key: str
    entry: dict[str, Any] | None
    tokens: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    problem: str | None = None  # "missing" or "corrupt"
    detail: str = ""


def load_snapshot(
    spec: str, variant: str | None, manifest: dict[str, Any], directory: str | Path | None = None
) -> StoredSnapshot:
    """Read and verify one stored snapshot against its manifest entry.

    Args:
        spec: Spec name.
        variant: Test variant.
        manifest: The manifest (:func:`read_manifest`).
        directory: Snapshot folder.

    Returns:
        The snapshot; ``problem`` is ``missing`` or ``corrupt`` when it cannot be used.
    """
    key = snapshot_key(spec, variant)
    entry = manifest["entries"].get(key)
    path = Path(directory or default_snapshot_dir()) / f"{key}.safetensors"
    if entry is None:
        return StoredSnapshot(key, None, problem="missing", detail="no manifest entry")
    if not path.exists():
        return StoredSnapshot(key, entry, problem="missing", detail=f"no file {path.name}")
    data = path.read_bytes()
    if entry.get("sha256") != file_sha256(data):
        return StoredSnapshot(
            key,
            entry,
            problem="corrupt",
            detail=f"{path.name} does not match the manifest's sha256 (edited or damaged)",
        )
    try:
        tokens, logits = decode_snapshot(data)
    except ValueError as exc:
        return StoredSnapshot(key, entry, problem="corrupt", detail=f"{path.name}: {exc}")
    return StoredSnapshot(key, entry, tokens, logits)

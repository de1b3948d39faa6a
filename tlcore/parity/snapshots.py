"""Snapshot logits: tlcore's own fp32 logits per spec and test variant, checked without HF.

Each case ``spec`` / ``spec/variant`` has a file ``<spec>[__<variant>].safetensors`` holding the
token batch (``tokens``, int64 ``[2, 12]``) and tlcore's unprocessed logits (``logits``, fp32
``[2, 12, d_vocab]``) on the spec's tiny seeded checkpoint. One JSON manifest, ``manifest.json``,
records per case the spec's content hash, the seeds, the versions that wrote it, the max logit
difference from HF at that time, the file's sha256 and the date.

A check rebuilds the tiny checkpoint (transformers builds it, but HF's forward never runs), loads
it through tlcore and compares with the stored logits. Statuses:

* ``ok``: within tolerance, spec unchanged.
* ``fail``: the logits moved although the spec did not: tlcore drifted (or torch/transformers did:
  the message names versions that differ from the ones that wrote the snapshot).
* ``stale``: the spec's content hash changed since the snapshot was written; run ``--update``.
* ``missing``: no manifest entry or no file.
* ``corrupt``: the file does not match the manifest's sha256 or cannot be read.
* ``orphan``: a manifest entry for a case that no longer exists (only reported when checking all).
* ``skipped``: an entry from a plugin that is not installed here.
* ``error``: the case could not be run.

Updating writes only snapshots whose case passes HF parity: a snapshot records verified logits.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from tlcore.parity.compare import TOKEN_SEED, case_label

SNAPSHOT_ATOL = 1e-5
SNAPSHOT_RTOL = 1e-6
"""Tolerance ``atol + rtol * max|stored logits|``. The scale term absorbs summation-order noise:
MoE specs' logits move by ~2e-5 (at |logits| ~40) between 1 and 2 torch threads."""
MANIFEST = "manifest.json"
FORMAT = 1
_OK_STATUSES = frozenset({"ok", "written", "updated", "unchanged", "skipped", "removed"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class SnapshotResult:
    """The snapshot side of one case."""

    spec: str
    variant: str | None
    status: str
    max_diff: float | None = None
    tolerance: float | None = None
    message: str = ""
    file: str | None = None

    @property
    def name(self) -> str:
        """``spec`` or ``spec/variant``."""
        return case_label(self.spec, self.variant)

    @property
    def ok(self) -> bool:
        """Whether this status passes a check."""
        return self.status in _OK_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns:
            The fields plus ``name`` and ``ok``.
        """
        return {**asdict(self), "name": self.name, "ok": self.ok}


def default_snapshot_dir() -> Path:
    """The built-in snapshot folder (``specs/snapshots`` in a checkout).

    Returns:
        The folder (it may not exist yet).
    """
    from tlcore.builtin.plugin import specs_dir

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


def tolerance(stored: torch.Tensor) -> float:
    """The allowed max abs difference from stored logits.

    Args:
        stored: Stored logits.

    Returns:
        ``SNAPSHOT_ATOL + SNAPSHOT_RTOL * max|stored|``.

    Example:
        >>> round(tolerance(torch.tensor([10.0, -40.0])), 8)
        5e-05
    """
    return SNAPSHOT_ATOL + SNAPSHOT_RTOL * float(stored.abs().max())


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
    return _atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> Path:
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions() -> dict[str, str]:
    """The versions that make snapshot logits what they are.

    Returns:
        ``{"tlcore": ..., "torch": ..., "transformers": ...}``.
    """
    import transformers

    import tlcore

    return {
        "tlcore": tlcore.__version__,
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
    if entry.get("sha256") != _sha256(data):
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


def compare_with_snapshot(
    stored: StoredSnapshot,
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    spec_hash: str,
    spec: str,
    variant: str | None,
) -> SnapshotResult:
    """Judge fresh tlcore logits against a stored snapshot.

    Args:
        stored: The stored snapshot (:func:`load_snapshot`).
        logits: tlcore's logits on ``stored.tokens``.
        spec_hash: The spec's current content hash.
        spec: Spec name.
        variant: Test variant.

    Returns:
        The snapshot result.
    """
    file = f"{stored.key}.safetensors"
    if stored.problem is not None:
        return SnapshotResult(spec, variant, stored.problem, message=stored.detail, file=file)
    assert stored.logits is not None and stored.entry is not None
    if logits.shape != stored.logits.shape:
        return SnapshotResult(
            spec,
            variant,
            "fail",
            file=file,
            message=f"logits shape {tuple(logits.shape)} != stored {tuple(stored.logits.shape)}",
        )
    diff = float((logits.float() - stored.logits).abs().max())
    tol = tolerance(stored.logits)
    old_hash = stored.entry.get("content_hash")
    if old_hash != spec_hash:
        return SnapshotResult(
            spec,
            variant,
            "stale",
            diff,
            tol,
            file=file,
            message=f"spec changed since the snapshot (content hash {old_hash} -> {spec_hash}); "
            f"logits max diff {diff:.3g}; run tools/parity.py --update",
        )
    if not diff <= tol:  # also catches NaN
        moved = {
            k: f"{v} (snapshot: {stored.entry.get('versions', {}).get(k)})"
            for k, v in versions().items()
            if stored.entry.get("versions", {}).get(k) != v
        }
        why = f"; versions differ: {moved}" if moved else ""
        return SnapshotResult(
            spec,
            variant,
            "fail",
            diff,
            tol,
            file=file,
            message=f"tlcore's logits moved by {diff:.3g} (> {tol:.3g}) with the spec "
            f"unchanged{why}",
        )
    return SnapshotResult(spec, variant, "ok", diff, tol, file=file, message="ok")


def store_snapshot(
    manifest: dict[str, Any],
    spec: str,
    variant: str | None,
    tokens: Int[torch.Tensor, "batch pos"],
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    *,
    spec_hash: str,
    source: str,
    seed: int,
    max_diff_vs_hf: float,
    processed_diff_vs_hf: float | None = None,
    directory: str | Path | None = None,
) -> SnapshotResult:
    """Write (or keep) one snapshot and its manifest entry (the manifest is written by the caller).

    An existing snapshot is kept, untouched, when the spec hash and versions are the same and the
    new logits are within tolerance of it: only real changes show up in a diff.

    Args:
        manifest: The manifest, updated in place.
        spec: Spec name.
        variant: Test variant.
        tokens: Token batch.
        logits: tlcore's logits on it.
        spec_hash: The spec's content hash.
        source: The plugin that registered the spec.
        seed: Weight-fill seed of the tiny checkpoint.
        max_diff_vs_hf: Logits max abs diff from HF now.
        processed_diff_vs_hf: Processed log-softmax max abs diff from HF now.
        directory: Snapshot folder.

    Returns:
        Status ``written``, ``updated`` (metadata only) or ``unchanged``.
    """
    folder = Path(directory or default_snapshot_dir())
    folder.mkdir(parents=True, exist_ok=True)
    key = snapshot_key(spec, variant)
    file = f"{key}.safetensors"
    now_versions = versions()
    old = load_snapshot(spec, variant, manifest, folder)
    if old.problem is None and old.logits is not None and old.tokens is not None:
        same_tokens = torch.equal(old.tokens, tokens.to(torch.int64))
        same_shape = old.logits.shape == logits.shape
        diff = float((logits.float() - old.logits).abs().max()) if same_shape else float("inf")
        if same_tokens and diff <= tolerance(old.logits):
            assert old.entry is not None
            meta_same = (
                old.entry.get("content_hash") == spec_hash
                and old.entry.get("versions") == now_versions
                and old.entry.get("seed") == seed
            )
            if meta_same:
                return SnapshotResult(
                    spec, variant, "unchanged", diff, file=file, message="unchanged"
                )
            old.entry.update(
                content_hash=spec_hash,
                versions=now_versions,
                seed=seed,
                source=source,
                max_diff_vs_hf=max_diff_vs_hf,
                processed_logprobs_diff_vs_hf=processed_diff_vs_hf,
                date=_now(),
            )
            return SnapshotResult(
                spec,
                variant,
                "updated",
                diff,
                file=file,
                message="logits unchanged; manifest entry refreshed",
            )
    data = encode_snapshot(tokens, logits, spec, variant)
    _atomic_write(folder / file, data)
    manifest["entries"][key] = {
        "spec": spec,
        "variant": variant,
        "file": file,
        "sha256": _sha256(data),
        "content_hash": spec_hash,
        "source": source,
        "seed": seed,
        "token_seed": TOKEN_SEED,
        "tokens_shape": list(tokens.shape),
        "logits_shape": list(logits.shape),
        "versions": now_versions,
        "max_diff_vs_hf": max_diff_vs_hf,
        "processed_logprobs_diff_vs_hf": processed_diff_vs_hf,
        "date": _now(),
    }
    return SnapshotResult(spec, variant, "written", file=file, message="written")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def orphan_entries(
    manifest: dict[str, Any], live_keys: set[str], loaded_sources: set[str]
) -> tuple[list[SnapshotResult], list[SnapshotResult]]:
    """Split manifest entries without a live case into orphans and skipped ones.

    Args:
        live_keys: Snapshot keys of the registered cases.
        loaded_sources: Names of the plugins loaded now.

    Returns:
        ``(orphans, skipped)``: entries whose plugin is loaded but whose case is gone, and entries
        whose plugin is not installed here.
    """
    orphans, skipped = [], []
    for key, entry in sorted(manifest["entries"].items()):
        if key in live_keys:
            continue
        spec, variant = entry.get("spec", key), entry.get("variant")
        source = entry.get("source", "")
        if source and source not in loaded_sources:
            skipped.append(
                SnapshotResult(
                    spec,
                    variant,
                    "skipped",
                    file=entry.get("file"),
                    message=f"plugin '{source}' is not installed",
                )
            )
        else:
            orphans.append(
                SnapshotResult(
                    spec,
                    variant,
                    "orphan",
                    file=entry.get("file"),
                    message="no such spec/variant is registered; --update removes it",
                )
            )
    return orphans, skipped


def remove_entries(
    manifest: dict[str, Any], results: list[SnapshotResult], directory: str | Path | None = None
) -> None:
    """Delete orphan snapshots (files and manifest entries).

    Args:
        manifest: The manifest, updated in place.
        results: Orphan results (:func:`orphan_entries`).
        directory: Snapshot folder.
    """
    folder = Path(directory or default_snapshot_dir())
    for result in results:
        key = snapshot_key(result.spec, result.variant)
        manifest["entries"].pop(key, None)
        (folder / f"{key}.safetensors").unlink(missing_ok=True)
        result.status, result.message = "removed", "orphan snapshot removed"

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from tlcore.parity.result import TOKEN_SEED, case_label
from tlcore.parity.snapshot_files import (
    FORMAT,
    MANIFEST,
    SNAPSHOT_ATOL,
    SNAPSHOT_RTOL,
    SNAPSHOT_RTOL_HALF,
    StoredSnapshot,
    atomic_write,
    decode_snapshot,
    default_snapshot_dir,
    encode_snapshot,
    file_sha256,
    load_snapshot,
    read_manifest,
    snapshot_key,
    versions,
    write_manifest,
)

__all__ = [
    "FORMAT",
    "SNAPSHOT_ATOL",
    "SNAPSHOT_RTOL",
    "SNAPSHOT_RTOL_HALF",
    "MANIFEST",
    "SnapshotResult",
    "StoredSnapshot",
    "compare_with_snapshot",
    "decode_snapshot",
    "default_snapshot_dir",
    "encode_snapshot",
    "file_sha256",
    "load_snapshot",
    "orphan_entries",
    "read_manifest",
    "remove_entries",
    "snapshot_key",
    "store_snapshot",
    "tolerance",
    "versions",
    "write_manifest",
]

_OK_STATUSES = frozenset({"ok", "written", "updated", "unchanged", "skipped", "removed"})


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


def tolerance(stored: torch.Tensor, rtol: float | None = None) -> float:
    """The allowed max abs difference from stored logits.

    Args:
        stored: Stored logits.
        rtol: The relative term (default :data:`SNAPSHOT_RTOL`; half-precision snapshots pass
            :data:`SNAPSHOT_RTOL_HALF`'s).

    Returns:
        ``SNAPSHOT_ATOL + rtol * max|stored|``.

    Example:
        >>> round(tolerance(torch.tensor([10.0, -40.0])), 8)
        5e-05
    """
    rel = SNAPSHOT_RTOL if rtol is None else rtol
    return SNAPSHOT_ATOL + rel * float(stored.abs().max())


def compare_with_snapshot(
    stored: StoredSnapshot,
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    spec_hash: str,
    spec: str,
    variant: str | None,
    rtol: float | None = None,
) -> SnapshotResult:
    """Judge fresh tlcore logits against a stored snapshot.

    Args:
        stored: The stored snapshot (:func:`load_snapshot`).
        logits: tlcore's logits on ``stored.tokens``.
        spec_hash: The spec's current content hash.
        spec: Spec name.
        variant: Test variant.
        rtol: The tolerance's relative term (see :func:`tolerance`).

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
    tol = tolerance(stored.logits, rtol)
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
    processed_diff_vs_unprocessed: float | None = None,
    directory: str | Path | None = None,
    rtol: float | None = None,
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
        processed_diff_vs_hf: Processed log-softmax max abs diff from HF (cast to float64) now,
            for information.
        processed_diff_vs_unprocessed: The processed check: processed vs unprocessed tlcore
            log-softmax, both float64.
        directory: Snapshot folder.
        rtol: The tolerance's relative term (see :func:`tolerance`).

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
        if same_tokens and diff <= tolerance(old.logits, rtol):
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
                processed_logprobs_diff_vs_unprocessed=processed_diff_vs_unprocessed,
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
    atomic_write(folder / file, data)
    manifest["entries"][key] = {
        "spec": spec,
        "variant": variant,
        "file": file,
        "sha256": file_sha256(data),
        "content_hash": spec_hash,
        "source": source,
        "seed": seed,
        "token_seed": TOKEN_SEED,
        "tokens_shape": list(tokens.shape),
        "logits_shape": list(logits.shape),
        "versions": now_versions,
        "max_diff_vs_hf": max_diff_vs_hf,
        "processed_logprobs_diff_vs_hf": processed_diff_vs_hf,
        "processed_logprobs_diff_vs_unprocessed": processed_diff_vs_unprocessed,
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

"""The output folder: SAELens's cached-activations format, written shard by shard.

SAELens (6.x, ``CacheActivationsRunner`` / ``ActivationsStore.load_cached_activation_dataset``)
reads cached activations with ``datasets.load_from_disk(path)``: one ``Dataset`` with a column per
hook, ``Array2D(shape=(context_size, d_in), dtype)``, and ``token_ids``,
``Sequence(Value("int32"), length=context_size)``, one row per context window. This folder is that
dataset, built incrementally::

    out/
      manifest.json                 model, hooks, dtype, tokens, seeds, versions, shard list
      shard-00000.arrow             Arrow IPC stream, the rows of shard 0 (datasets' ArrowWriter)
      shard-00000.json              its commit record: rows, token digest (written after the data)
      ...
      dataset_info.json, state.json written when every shard is in: then load_from_disk works

A shard counts as done when its commit record exists; its data file is renamed into place
before the record is written, so an interrupted run leaves at most a shard to redo, never a
half-written one counted as done. Rewriting a shard (a retry) replaces it whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "tlcore-harvest/1"


class HarvestStateError(ValueError):
    """The output folder holds a different harvest (or something else) than the one asked for."""


def shard_name(index: int) -> str:
    """File stem of a shard.

    Args:
        index: Shard index.

    Returns:
        ``shard-00012``.
    """
    return f"shard-{index:05d}"


def features(hook_dims: dict[str, int], context_size: int, store_dtype: str) -> Any:
    """The ``datasets.Features`` SAELens expects.

    Args:
        hook_dims: ``d_in`` per hook (the activation's trailing dims flattened).
        context_size: Positions per row.
        store_dtype: Activation dtype on disk.

    Returns:
        The features: one ``Array2D`` column per hook, plus ``token_ids``.
    """
    from datasets import Array2D, Features, Sequence, Value

    columns: dict[str, Any] = {
        name: Array2D(shape=(context_size, d_in), dtype=store_dtype)
        for name, d_in in hook_dims.items()
    }
    columns["token_ids"] = Sequence(Value(dtype="int32"), length=context_size)
    return Features(columns)


def write_shard(
    out: Path,
    index: int,
    feats: Any,
    acts: dict[str, np.ndarray],
    tokens: np.ndarray,
    digest: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard atomically: data file first, then its commit record.

    Args:
        out: Output folder.
        index: Shard index.
        feats: From :func:`features`.
        acts: ``[rows, context_size, d_in]`` per hook.
        tokens: ``[rows, context_size]`` int32.
        digest: The tokens' digest (see :func:`tlcore.harvest.packing.tokens_digest`).
        extra: More fields for the record (timings, worker).

    Returns:
        The commit record.
    """
    from datasets.arrow_writer import ArrowWriter

    stem = shard_name(index)
    tmp = out / f".{stem}.arrow.{os.getpid()}.tmp"
    batch: dict[str, Any] = dict(acts)
    batch["token_ids"] = tokens.astype(np.int32, copy=False)
    with ArrowWriter(features=feats, path=str(tmp)) as writer:
        writer.write_batch(batch)
        writer.finalize()
    os.replace(tmp, out / f"{stem}.arrow")
    record = {"shard": index, "rows": int(tokens.shape[0]), "tokens_sha256": digest}
    record.update(extra or {})
    _write_json(out / f"{stem}.json", record)
    return record


def done_shards(out: Path) -> dict[int, dict[str, Any]]:
    """The committed shards of an output folder.

    Args:
        out: Output folder.

    Returns:
        Commit records by shard index.
    """
    records = {}
    for path in sorted(out.glob("shard-*.json")):
        if not (out / f"{path.stem}.arrow").exists():
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:  # an interrupted record write: redo the shard
            continue
        records[int(record["shard"])] = record
    return records


def start(out: Path, settings: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the output folder, or check that it holds the same harvest (to resume).

    Args:
        out: Output folder.
        settings: Everything that decides the rows' content.
        manifest: The manifest to write for a new folder.

    Returns:
        The manifest in force.

    Raises:
        HarvestStateError: When the folder holds another harvest or unrelated files.
    """
    path = out / MANIFEST
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("format") != FORMAT:
            raise HarvestStateError(f"{path} is not a tlcore harvest manifest")
        old = existing.get("settings", {})
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            detail = "; ".join(
                f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in changed
            )
            raise HarvestStateError(
                f"{out} holds a harvest with other settings ({detail}). Resuming needs the same "
                "settings; use another output folder or delete this one."
            )
        return existing  # type: ignore[no-any-return]
    if out.exists() and any(out.iterdir()):
        raise HarvestStateError(
            f"{out} exists and is not a tlcore harvest folder; choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, manifest)
    return manifest


def finish(
    out: Path, manifest: dict[str, Any], feats: Any, records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Write ``state.json`` and ``dataset_info.json`` (making the folder loadable) and the manifest.

    Args:
        out: Output folder.
        manifest: The manifest so far.
        feats: The dataset's features.
        records: Every shard's commit record, in shard order.

    Returns:
        The final manifest.
    """
    from datasets import DatasetInfo

    files = [{"filename": f"{shard_name(r['shard'])}.arrow"} for r in records]
    digest = hashlib.sha256(
        json.dumps(
            [manifest["settings"], [r["tokens_sha256"] for r in records]], sort_keys=True
        ).encode()
    ).hexdigest()[:16]
    state: dict[str, Any] = {
        "_data_files": files,
        "_fingerprint": digest,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    DatasetInfo(features=feats).write_to_directory(str(out))
    _write_json(out / "state.json", state)
    rows = sum(int(r["rows"]) for r in records)
    manifest = dict(manifest)
    manifest.update(
        complete=True,
        rows=rows,
        tokens=rows * int(manifest["settings"]["context_size"]),
        shards=[
            {
                "file": f"{shard_name(r['shard'])}.arrow",
                "rows": r["rows"],
                "tokens_sha256": r["tokens_sha256"],
            }
            for r in records
        ],
        fingerprint=digest,
    )
    _write_json(out / MANIFEST, manifest)
    return manifest


def update_manifest(out: Path, **fields: Any) -> dict[str, Any]:
    """Set fields of the manifest on disk.

    Args:
        out: Output folder.
        **fields: Fields to set.

    Returns:
        The manifest.
    """
    path = out / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    _write_json(path, manifest)
    return manifest  # type: ignore[no-any-return]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)

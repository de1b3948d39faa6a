"""Run parity over every registered spec and test variant: HF comparison, snapshots, model table.

One pass per case builds the tiny checkpoint once and derives all requested outputs from it
(HF comparison, snapshot check or update, model-table facts), so the full CI check costs one
checkpoint per case.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlcore.encoder_specs import encoder_specs
from tlcore.parity.compare import CaseRun, run_case
from tlcore.parity.encoders import is_encoder_spec
from tlcore.parity.half import dtype_name
from tlcore.parity.report import Case, CaseReport, Report, SnapshotMode
from tlcore.parity.result import ParityResult
from tlcore.parity.snapshots import (
    SNAPSHOT_RTOL_HALF,
    SnapshotResult,
    compare_with_snapshot,
    default_snapshot_dir,
    load_snapshot,
    orphan_entries,
    read_manifest,
    remove_entries,
    snapshot_key,
    store_snapshot,
    write_manifest,
)
from tlcore.parity.table import inspect_model, table_row
from tlcore.plugins.manager import get_manager
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec
from tlcore.testing.tiny import DEFAULT_SEED

logger = logging.getLogger(__name__)


def cases(
    specs: Iterable[str | ArchitectureSpec] | None = None, variants: bool = True
) -> list[Case]:
    """List the cases to check: specs (default: every registered one) and their test variants.

    Args:
        specs: Spec names or spec objects (default: all registered, built-in and plugin).
        variants: Include each spec's ``test_variants``.

    Returns:
        Cases, in spec order then variant name order (base first).

    Raises:
        UnknownArchitectureError: For an unknown name.

    Example:
        >>> [c.name for c in cases(["gpt2"])]
        ['gpt2', 'gpt2/inverse_layer_scale']
    """
    registry = get_registry()
    encoders = encoder_specs()
    chosen = [*registry.spec_names(), *encoders] if specs is None else list(specs)
    out: list[Case] = []
    for item in chosen:
        if isinstance(item, str) and item not in registry.specs and item in encoders:
            spec = encoders[item]  # specs/encoders: HookedEncoder, HookedEncoderDecoder
        else:
            spec = registry.get_spec(item) if isinstance(item, str) else item
        entry = registry.specs.get(spec.name)
        if entry is not None:
            source = entry.source.plugin
        else:
            source = spec.source if encoders.get(spec.name) is spec else "unregistered"
        names = [None, *sorted(spec.test_variants)] if variants else [None]
        out.extend(Case(spec, v, source) for v in names)
    return out


@dataclass
class _Job:
    spec: ArchitectureSpec
    variant: str | None
    hf: bool
    processed: bool
    tokens: torch.Tensor | None
    seed: int | None
    table: bool
    dtype: torch.dtype = torch.float32


CaseRunner = Callable[..., CaseRun]
"""``runner(spec, variant, *, hf, processed, seed, tokens, inspect) -> CaseRun``, as
:func:`~tlcore.parity.compare.run_case` (a test session's shared
:class:`~tlcore.testing.cases.ParityCases` passes its ``run``)."""


def _run_job(job: _Job, runner: CaseRunner = run_case) -> CaseRun:
    """Run one case, turning any exception into an ``error`` result (one case must not stop all)."""
    inspect = inspect_model if job.table else None
    start = time.perf_counter()
    # Only a half-precision job passes dtype, so a custom runner need not know the argument.
    half = {"dtype": job.dtype} if job.dtype != torch.float32 else {}
    try:
        return runner(
            job.spec,
            job.variant,
            hf=job.hf,
            processed=job.processed,
            seed=job.seed,
            tokens=job.tokens,
            inspect=inspect,
            **half,
        )
    except Exception as exc:  # noqa: BLE001 - reported per case
        label = f"{job.spec.name}/{job.variant}" if job.variant else job.spec.name
        message = f"{label}: {type(exc).__name__}: {exc}"
        result = ParityResult(
            job.spec.name,
            job.variant,
            False,
            math.nan,
            message=message,
            error=f"{type(exc).__name__}: {exc}",
            spec_hash=job.spec.content_hash(),
            seconds=time.perf_counter() - start,
        )
        return CaseRun(result)


def _worker_init() -> None:
    # Each worker is one core's worth of work: torch's own thread pool would oversubscribe.
    torch.set_num_threads(1)
    logging.getLogger("tlcore").setLevel(logging.ERROR)


def _run_jobs(jobs: Sequence[_Job], workers: int) -> list[CaseRun]:
    if workers <= 1 or len(jobs) <= 1:
        return [_run_job(job) for job in jobs]
    # spawn, not fork: forking a process that already ran torch threads can deadlock. Workers load
    # plugins from entry points; spec objects travel with the job, so in-process registrations
    # (``add_plugin`` in a test) reach them as ``from_pretrained(..., spec=...)``.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        return list(pool.map(_run_job, jobs))


def verify(
    specs: Iterable[str | ArchitectureSpec] | None = None,
    variants: bool = True,
    *,
    hf: bool = True,
    processed: bool = True,
    snapshots: SnapshotMode | None = None,
    table: bool = False,
    workers: int = 1,
    snapshot_dir: str | Path | None = None,
    runner: CaseRunner | None = None,
    dtype: torch.dtype = torch.float32,
) -> Report:
    """The parity tool's single pass: every case once, all requested outputs from it.

    Args:
        specs: Spec names or objects (default: every registered spec).
        variants: Include test variants.
        hf: Compare with HF (raw logits, log-probs, every layer; processed log-probs).
        processed: Include the processed-model comparison (with ``hf``).
        snapshots: ``"check"`` compares with stored snapshots; ``"update"`` rewrites them (needs
            ``hf``: only cases that pass HF parity are written).
        table: Collect model-table facts (:mod:`tlcore.parity.table`).
        workers: Processes (1: in this process).
        snapshot_dir: Snapshot folder (default ``specs/snapshots``).
        runner: Runs one case instead of :func:`~tlcore.parity.compare.run_case` (in this
            process: ``workers`` must be 1), e.g. a test session's shared comparisons.
        dtype: float32, or a half dtype (:mod:`tlcore.parity.half`): tlcore and HF run in it,
            judged by the half-precision tolerance, with snapshots in their own folder
            (``specs/snapshots/<dtype>``).

    Returns:
        The report.

    Raises:
        ValueError: For ``snapshots="update"`` without ``hf``, or a ``runner`` with workers.
    """
    if runner is not None and workers > 1:
        raise ValueError("a custom runner runs in this process: use workers=1")
    if snapshots == "update" and not hf:
        raise ValueError("updating snapshots needs the HF comparison (hf=True)")
    start = time.perf_counter()
    todo = cases(specs, variants)
    rtol = None
    if dtype != torch.float32:
        # Encoders (HookedEncoder / HookedEncoderDecoder) are compared in float32 only.
        todo = [c for c in todo if not is_encoder_spec(c.spec)]
        name = dtype_name(dtype)
        if snapshot_dir is None:
            snapshot_dir = default_snapshot_dir() / name
        rtol = SNAPSHOT_RTOL_HALF[name]
    manifest = read_manifest(snapshot_dir) if snapshots else None
    stored = {}
    jobs = []
    for case in todo:
        tokens, seed = None, None
        if snapshots == "check":
            assert manifest is not None
            snap = load_snapshot(case.spec.name, case.variant, manifest, snapshot_dir)
            stored[case.name] = snap
            if snap.problem is None and snap.entry is not None:
                # Re-run exactly what was stored: its tokens and its weight seed.
                tokens, seed = snap.tokens, snap.entry.get("seed")
        jobs.append(_Job(case.spec, case.variant, hf, processed, tokens, seed, table, dtype))
    runs = [_run_job(job, runner) for job in jobs] if runner else _run_jobs(jobs, workers)
    reports = []
    for case, run in zip(todo, runs):
        snap_result = None
        if snapshots == "check":
            if run.result.error is not None or run.logits is None:
                snap_result = SnapshotResult(
                    case.spec.name, case.variant, "error", message=run.result.error or "no logits"
                )
            else:
                snap_result = compare_with_snapshot(
                    stored[case.name],
                    run.logits,
                    case.spec.content_hash(),
                    case.spec.name,
                    case.variant,
                    rtol=rtol,
                )
        elif snapshots == "update":
            assert manifest is not None
            if (
                run.result.ok
                and run.result.error is None
                and run.logits is not None
                and run.tokens is not None
            ):
                snap_result = store_snapshot(
                    manifest,
                    case.spec.name,
                    case.variant,
                    run.tokens,
                    run.logits,
                    spec_hash=case.spec.content_hash(),
                    source=case.source,
                    seed=DEFAULT_SEED,
                    max_diff_vs_hf=run.result.logits_max_diff,
                    # float32 runs: the processed check is vs unprocessed (float64), HF's
                    # figure informational; half runs judge the processed model vs HF's half.
                    processed_diff_vs_hf=run.result.processed_logprobs_vs_hf_max_diff
                    if dtype == torch.float32
                    else run.result.processed_logprobs_max_diff,
                    processed_diff_vs_unprocessed=run.result.processed_logprobs_max_diff
                    if dtype == torch.float32
                    else None,
                    directory=snapshot_dir,
                    rtol=rtol,
                )
            else:
                snap_result = SnapshotResult(
                    case.spec.name,
                    case.variant,
                    "fail",
                    message="not written: the case fails HF parity (a snapshot records verified "
                    "logits)",
                )
        row = None
        if table:
            row = table_row(case, run, snap_result)
        reports.append(CaseReport(case, run.result, snap_result, row))
    others: list[SnapshotResult] = []
    if snapshots and specs is None and manifest is not None:
        live = {snapshot_key(c.spec.name, c.variant) for c in todo}
        loaded = {name for name, record in get_manager().records.items() if record.state == "ok"}
        orphans, skipped = orphan_entries(manifest, live, loaded)
        if snapshots == "update":
            remove_entries(manifest, orphans, snapshot_dir)
        others = orphans + skipped
    if snapshots == "update" and manifest is not None:
        write_manifest(manifest, snapshot_dir)
    return Report(reports, others, time.perf_counter() - start, hf, snapshots)


def run_parity(
    specs: Iterable[str | ArchitectureSpec] | None = None,
    variants: bool = True,
    processed: bool = True,
    workers: int = 1,
) -> list[ParityResult]:
    """Compare every registered spec (built-in and plugin) and test variant with HuggingFace.

    Args:
        specs: Spec names or spec objects (default: every registered spec).
        variants: Include each spec's ``test_variants``.
        processed: Also compare the processed model's log-probs.
        workers: Processes to spread the cases over.

    Returns:
        One result per case; a case that could not run has ``error`` set and ``ok`` false.
    """
    report = verify(specs, variants, hf=True, processed=processed, workers=workers)
    return [c.parity for c in report.cases]


def check_snapshots(
    specs: Iterable[str | ArchitectureSpec] | None = None,
    variants: bool = True,
    workers: int = 1,
    snapshot_dir: str | Path | None = None,
) -> list[SnapshotResult]:
    """Re-verify tlcore against the stored snapshots, without running HF's forward.

    Checking every spec (``specs=None``) also reports manifest entries without a case.

    Args:
        specs: Spec names or objects (default: every registered spec).
        variants: Include test variants.
        workers: Processes.
        snapshot_dir: Snapshot folder (default ``specs/snapshots``).

    Returns:
        One result per case (plus orphan/skipped entries when checking all).
    """
    report = verify(
        specs, variants, hf=False, snapshots="check", workers=workers, snapshot_dir=snapshot_dir
    )
    return [c.snapshot for c in report.cases if c.snapshot is not None] + report.other_snapshots


def update_snapshots(
    specs: Iterable[str | ArchitectureSpec] | None = None,
    variants: bool = True,
    workers: int = 1,
    snapshot_dir: str | Path | None = None,
) -> list[SnapshotResult]:
    """Rewrite snapshots (only for cases that pass HF parity) and the manifest.

    Updating every spec (``specs=None``) also removes orphan snapshots.

    Args:
        specs: Spec names or objects (default: every registered spec).
        variants: Include test variants.
        workers: Processes.
        snapshot_dir: Snapshot folder (default ``specs/snapshots``).

    Returns:
        One result per case: ``written``, ``updated``, ``unchanged`` or ``fail`` (not written).
    """
    report = verify(
        specs, variants, hf=True, snapshots="update", workers=workers, snapshot_dir=snapshot_dir
    )
    return [c.snapshot for c in report.cases if c.snapshot is not None] + report.other_snapshots


def model_table(
    specs: Any = None, variants: bool = True, processed: bool = True, workers: int = 1
) -> list[dict[str, Any]]:
    """Build the model table: one row per spec and test variant, with HF parity.

    Args:
        specs: Spec names or objects (default: every registered spec).
        variants: Include test variants.
        processed: Include the processed-model comparison in the parity columns.
        workers: Processes.

    Returns:
        Rows (see :func:`table_row`).
    """
    report = verify(specs, variants, hf=True, processed=processed, table=True, workers=workers)
    return [c.table_row for c in report.cases if c.table_row is not None]

"""Harvest on Ray: Ray Data batch inference over shards, one model per worker (actor pool).

The driver packs the token rows (cheap next to the model) and writes each pending shard's rows
to ``out/.tokens/``; a Ray dataset of shard indices then flows through ``map_batches`` with a
fixed pool of :class:`HarvestWorker` actors, each holding one model. A worker computes a shard
exactly as the in-process path does (:func:`tlcore.harvest.shard_work.compute_shard`) and writes it
into ``out`` itself, so activations never travel through the driver: ``out`` must be a folder
every node sees (a shared filesystem; on one machine, any folder).

Failures: Ray Data restarts a dead actor and retries its shard (its actor defaults:
``max_restarts=-1``, ``max_task_retries=-1``); a shard file is replaced whole on a retry, and
counts only once its commit record exists, so a killed worker costs a recomputed shard, never a
lost or duplicated row. If the driver itself dies, rerunning the same command resumes from the
committed shards.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.harvest import store

TOKENS_DIR = ".tokens"
# Testing hook: "<shard>:<marker file>" makes the worker that picks up that shard first SIGKILL
# itself (once: the marker records it), to prove a dead worker loses nothing.
KILL_ENV = "TLCORE_HARVEST_KILL_AT_SHARD"


class HarvestWorker:
    """A Ray actor holding one model; each call computes and writes the shards it is given.

    Args:
        out: Output folder (shared by every node).
        settings: The harvest settings.
        load_kwargs: ``from_pretrained`` arguments.
        device: Model device.
        threads: Torch CPU threads.
    """

    def __init__(
        self,
        out: str,
        settings: dict[str, Any],
        load_kwargs: dict[str, Any],
        device: str | None,
        threads: int,
    ) -> None:
        import torch

        from tlcore.harvest.activations import check_hooks, stop_layer
        from tlcore.harvest.shard_work import load_model

        torch.set_num_threads(max(1, threads))
        torch.manual_seed(int(settings["seed"]))
        self.out, self.settings = Path(out), settings
        self.model = load_model(settings["model"], settings["processing"], device, load_kwargs)
        check_hooks(self.model, settings["hooks"])
        self.stop_at = stop_layer(settings["hooks"], self.model.cfg.n_layers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compute the shards named in ``batch["shard"]``.

        Args:
            batch: ``{"shard": [indices]}``.

        Returns:
            ``shard``, ``rows``, ``seconds`` and ``pid`` per shard.
        """
        from tlcore.harvest.shard_work import compute_shard

        rows, seconds, pids = [], [], []
        for index in batch["shard"].tolist():
            _maybe_die(index)
            tokens = np.load(self.out / TOKENS_DIR / f"{store.shard_name(index)}.npy")
            record = compute_shard(
                self.model,
                self.out,
                index,
                tokens,
                self.settings,
                self.stop_at,
                extra={"worker_pid": os.getpid()},
            )
            rows.append(record["rows"])
            seconds.append(record["seconds"])
            pids.append(os.getpid())
        return {
            "shard": batch["shard"],
            "rows": np.asarray(rows, dtype=np.int64),
            "seconds": np.asarray(seconds, dtype=np.float64),
            "pid": np.asarray(pids, dtype=np.int64),
        }


def _maybe_die(index: int) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    shard, _, marker = spec.partition(":")
    if int(shard) == index and marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def run_on_ray(
    out: Path,
    plan: Any,
    settings: dict[str, Any],
    load_kwargs: dict[str, Any],
    address: str | None,
    num_workers: int,
    worker_cpus: float,
    worker_gpus: float,
    device: str | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], set[int], int]:
    """Compute every pending shard on a Ray actor pool.

    Args:
        out: Output folder.
        plan: The shard plan (token rows per shard).
        settings: The harvest settings.
        load_kwargs: ``from_pretrained`` arguments.
        address: Ray cluster address, or None (the running cluster, else a local one).
        num_workers: Actors, one model each.
        worker_cpus: CPUs per actor.
        worker_gpus: GPUs per actor.
        device: Model device in the workers.
        progress: Show a progress bar.

    Returns:
        Every shard's commit record in order, the shards found done, and the worker count.

    Raises:
        ImportError: Without ``ray[data]`` (``pip install 'tlcore[harvest]'``).
        RuntimeError: When a shard is still missing after the run.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("harvest on Ray needs ray[data]: pip install 'tlcore[harvest]'") from exc
    from tlcore.harvest.shard_work import check_done, progress_bar

    done = store.done_shards(out)
    token_dir = out / TOKENS_DIR
    token_dir.mkdir(exist_ok=True)
    pending: list[int] = []
    order: list[int] = []
    resumed: set[int] = set()
    bar = progress_bar(settings, progress)
    try:
        for index, tokens in plan.shards:
            order.append(index)
            if check_done(done, index, tokens) is not None:
                resumed.add(index)
                bar.update(tokens.size)
                continue
            _save_tokens(token_dir / f"{store.shard_name(index)}.npy", tokens)
            pending.append(index)
        if pending:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.verbose_progress = False
            threads = max(1, int(worker_cpus))
            results = ray.data.from_items(
                [{"shard": i} for i in pending], override_num_blocks=len(pending)
            ).map_batches(
                HarvestWorker,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=num_workers),
                fn_constructor_kwargs={
                    "out": str(out),
                    "settings": settings,
                    "load_kwargs": load_kwargs,
                    "device": device,
                    "threads": threads,
                },
                num_cpus=worker_cpus,
                num_gpus=worker_gpus or None,
                # Ray Data's actor defaults do the fault tolerance: max_restarts=-1 and
                # max_task_retries=-1 (a dead actor is recreated and its shard retried).
            )
            context_size = int(settings["context_size"])
            for row in results.iter_rows():
                bar.update(int(row["rows"]) * context_size)
    finally:
        bar.close()
    records = store.done_shards(out)
    missing = [i for i in order if i not in records]
    if missing:
        raise RuntimeError(f"shards {missing} were not written; rerun the command to resume")
    for index in pending:
        (token_dir / f"{store.shard_name(index)}.npy").unlink(missing_ok=True)
    _remove_empty(token_dir)
    return [records[i] for i in order], resumed, num_workers


def _save_tokens(path: Path, tokens: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, tokens)
    os.replace(tmp, path)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

"""``harvest``: run a model over a text dataset and store hook activations for SAE training.

In-process by default: one model, shards computed in order. With ``ray=True`` (or a Ray address)
the shards go to a Ray Data actor pool, one model per worker (:mod:`tlcore.harvest.ray_backend`).
Either way the rows are the same, shard by shard, and a rerun with the same settings resumes
where the last one stopped.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.harvest import store
from tlcore.harvest.activations import check_hooks, stop_layer
from tlcore.harvest.packing import shards, token_rows
from tlcore.harvest.shard_work import check_done, compute_shard, load_model, progress_bar
from tlcore.harvest.sources import describe_source, iter_documents, open_source

_STORE_DTYPES = ("float32", "float16", "float64")
DEFAULT_SHARD_TOKENS = 2**16


@dataclass
class HarvestResult:
    """What a harvest wrote.

    Attributes:
        path: The output folder (``datasets.load_from_disk(path)`` reads it).
        rows: Context windows stored.
        tokens: Tokens stored (``rows * context_size``).
        shards: Shard files.
        resumed_shards: Shards found done from an earlier run (not recomputed).
        seconds: Wall time of this call.
        workers: Model replicas that computed (1 in-process).
        manifest: The manifest written to ``manifest.json``.
        computed_tokens: Tokens computed by this call (not found done).
    """

    path: Path
    rows: int
    tokens: int
    shards: int
    resumed_shards: int
    seconds: float
    workers: int
    manifest: dict[str, Any] = field(repr=False)

    computed_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Tokens computed by this call per second of wall time (resumed shards excluded)."""
        return self.computed_tokens / self.seconds if self.seconds > 0 else 0.0


def harvest(
    model: Any,
    dataset: Any,
    hooks: Sequence[str],
    out: str | Path,
    *,
    context_size: int = 128,
    tokens: int | None = None,
    batch_size: int = 8,
    dtype: str = "float32",
    store_dtype: str | None = None,
    seed: int = 0,
    shuffle: bool = False,
    text_column: str = "text",
    prepend_bos: bool = True,
    separator: str | None = "bos",
    rows_per_shard: int | None = None,
    processing: bool = False,
    device: str | None = None,
    tokenizer: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    ray: bool | str = False,
    num_workers: int = 2,
    worker_cpus: float = 1,
    worker_gpus: float = 0,
    progress: bool = True,
) -> HarvestResult:
    """Store hook activations of a model over a text dataset, in SAELens's cached format.

    The output folder is a ``datasets`` dataset (``datasets.load_from_disk(out)``), one row per
    context window: a column per hook, ``[context_size, d_in]`` (trailing dims flattened, e.g.
    ``hook_z``'s heads), and ``token_ids``. SAELens trains from it with
    ``use_cached_activations=True, cached_activations_path=out``. ``manifest.json`` records the
    model, hooks, dtypes, token counts, seed, shards and library versions.

    Args:
        model: Anything ``HookedTransformer.from_pretrained`` takes (alias, folder, ``.gguf``,
            hub id), or a loaded ``HookedTransformer`` (in-process only).
        dataset: Local ``.txt``/``.jsonl``/``.parquet`` file(s) or folder, a folder written by
            ``save_to_disk``, or a ``datasets.Dataset`` (see :mod:`tlcore.harvest.sources`).
        hooks: Hook names with a per-token activation (``blocks.3.hook_resid_post``, ...).
        out: Output folder: new or empty, or an earlier harvest with the same settings to resume.
        context_size: Tokens per row.
        tokens: Token budget (rows = ``tokens // context_size``); None takes the whole dataset.
        batch_size: Rows per forward pass.
        dtype: The model's dtype (``float32``, ``bfloat16``, ``float16``).
        store_dtype: Activation dtype on disk (default ``dtype``; bfloat16, which Arrow cannot
            store, is stored as float32: exact).
        seed: Seeds document shuffling and torch.
        shuffle: Shuffle documents before packing (files are read into memory for it).
        text_column: Text column of jsonl/parquet/datasets rows.
        prepend_bos: Start each row with BOS (SAELens's default).
        separator: Token between packed documents: ``"bos"``, ``"eos"`` or None.
        rows_per_shard: Rows per shard file (rounded up to a multiple of ``batch_size``;
            default about 65k tokens per shard).
        processing: Load with ``from_pretrained`` (fold LN, centre weights); default False loads
            with ``from_pretrained_no_processing``, as SAELens does.
        device: Model device (default: CUDA if available).
        tokenizer: Overrides the model's tokenizer.
        model_kwargs: More ``from_pretrained`` arguments.
        ray: True runs on Ray (connecting to a running cluster, else starting a local one); an
            address (``"ray://host:10001"``, ``"auto"``) connects there.
        num_workers: Ray workers, one model each.
        worker_cpus: CPUs per Ray worker (also its torch threads).
        worker_gpus: GPUs per Ray worker.
        progress: Show a progress bar.

    Returns:
        What was written.

    Raises:
        tlcore.errors.HookNameError: For an unknown hook or one without per-token activations.
        tlcore.harvest.store.HarvestStateError: When ``out`` holds a different harvest.
        ValueError: For bad sizes or dtypes.
    """
    started = time.perf_counter()
    if context_size < 1 or batch_size < 1:
        raise ValueError("context_size and batch_size must be at least 1")
    if tokens is not None and tokens < context_size:
        raise ValueError(f"token budget {tokens} is below one row of {context_size} tokens")
    store_dtype = store_dtype or ("float32" if dtype in ("bfloat16", "bf16") else dtype)
    if store_dtype not in _STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {_STORE_DTYPES}, got {store_dtype!r}")
    if separator not in ("bos", "eos", None):
        raise ValueError(f"separator must be 'bos', 'eos' or None, got {separator!r}")
    if rows_per_shard is None:
        rows_per_shard = max(1, -(-DEFAULT_SHARD_TOKENS // context_size))
    rows_per_shard = -(-rows_per_shard // batch_size) * batch_size
    loaded = model if not isinstance(model, (str, Path)) else None
    if loaded is not None and ray:
        raise ValueError("with ray, pass the model by name or path: each worker loads its own")
    model_name = str(model) if loaded is None else str(loaded.cfg.model_name)
    load_kwargs = {"dtype": dtype, **(model_kwargs or {})}
    settings = {
        "model": model_name,
        "processing": processing,
        "model_kwargs": _jsonable(model_kwargs or {}),
        "dtype": dtype,
        "store_dtype": store_dtype,
        "hooks": list(dict.fromkeys(hooks)),
        "context_size": context_size,
        "token_budget": tokens,
        "batch_size": batch_size,
        "rows_per_shard": rows_per_shard,
        "seed": seed,
        "shuffle": shuffle,
        "text_column": text_column,
        "prepend_bos": prepend_bos,
        "separator": separator,
        "dataset": describe_source(dataset),
    }
    out = Path(out)
    if ray:
        from tlcore.harvest.ray_backend import run_on_ray

        skeleton, found_tokenizer = _skeleton(model_name)
        check_hooks(skeleton, settings["hooks"])  # fail here, not in every worker
        tokenizer = tokenizer if tokenizer is not None else found_tokenizer
        manifest = store.start(out, settings, _manifest(settings, backend="ray"))
        plan = _plan(dataset, tokenizer, settings)
        records, resumed, workers = run_on_ray(
            out=out,
            plan=plan,
            settings=settings,
            load_kwargs=load_kwargs,
            address=ray if isinstance(ray, str) else None,
            num_workers=num_workers,
            worker_cpus=worker_cpus,
            worker_gpus=worker_gpus,
            device=device,
            progress=progress,
        )
    else:
        if loaded is None:
            loaded = load_model(model_name, processing, device, load_kwargs)
        torch.manual_seed(seed)
        check_hooks(loaded, settings["hooks"])
        manifest = store.start(out, settings, _manifest(settings, backend="in-process"))
        plan = _plan(dataset, tokenizer or loaded.tokenizer, settings)
        records, resumed = _run_in_process(loaded, out, plan, settings, progress)
        workers = 1
    if not records:
        raise ValueError("the dataset gave no complete row of context_size tokens")
    manifest = store.finish(out, manifest, _features(records, settings), records)
    return HarvestResult(
        path=out,
        rows=int(manifest["rows"]),
        tokens=int(manifest["tokens"]),
        shards=len(records),
        resumed_shards=len(resumed),
        seconds=time.perf_counter() - started,
        workers=workers,
        manifest=manifest,
        computed_tokens=sum(int(r["rows"]) for r in records if r["shard"] not in resumed)
        * context_size,
    )


@dataclass
class ShardPlan:
    """The shards to compute, in order, with the token rows of each."""

    shards: Iterator[tuple[int, np.ndarray]]


def _plan(dataset: Any, tokenizer: Any, settings: dict[str, Any]) -> ShardPlan:
    ctx = int(settings["context_size"])
    bos = _special(tokenizer, "bos") if settings["prepend_bos"] else None
    sep = _special(tokenizer, settings["separator"]) if settings["separator"] else None
    rows = token_rows(
        iter_documents(
            open_source(dataset, settings["seed"], settings["shuffle"]), settings["text_column"]
        ),
        tokenizer,
        ctx,
        bos,
        sep,
    )
    budget = settings["token_budget"]
    n_rows = None if budget is None else budget // ctx
    return ShardPlan(shards(rows, n_rows, int(settings["rows_per_shard"])))


def _run_in_process(
    model: Any, out: Path, plan: ShardPlan, settings: dict[str, Any], show: bool
) -> tuple[list[dict[str, Any]], set[int]]:
    done = store.done_shards(out)
    stop_at = stop_layer(settings["hooks"], model.cfg.n_layers)
    bar = progress_bar(settings, show)
    records: list[dict[str, Any]] = []
    resumed: set[int] = set()
    try:
        for index, tokens in plan.shards:
            record = check_done(done, index, tokens)
            if record is not None:
                resumed.add(index)
                bar.update(tokens.size)
            else:
                record = compute_shard(model, out, index, tokens, settings, stop_at, bar.update)
            records.append(record)
    finally:
        bar.close()
    return records, resumed


def _features(records: list[dict[str, Any]], settings: dict[str, Any]) -> Any:
    return store.features(
        records[0]["hook_dims"], int(settings["context_size"]), settings["store_dtype"]
    )


def _special(tokenizer: Any, which: str) -> int | None:
    if tokenizer is None:
        return None
    value = getattr(tokenizer, f"{which}_token_id", None)
    return None if value is None else int(value)


def _skeleton(model_name: str) -> tuple[Any, Any]:
    """The model built on the meta device (hook names, no weights) and its tokenizer.

    The Ray driver checks hook names on it and tokenises with the tokenizer, without loading the
    weights that only the workers need.
    """
    from tlcore.loading.resolve import resolve_checkpoint
    from tlcore.model import HookedTransformer
    from tlcore.model_loading import _load_tokenizer
    from tlcore.plan import resolve_plan

    resolved = resolve_checkpoint(model_name)
    plan = resolve_plan(resolved.spec, resolved.hf_config, device="meta")
    with torch.device("meta"):
        skeleton = HookedTransformer(plan, move_to_device=False, init_weights=False)
    tokenizer = _load_tokenizer(resolved.tokenizer_dir) if resolved.tokenizer_dir else None
    return skeleton, tokenizer


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _manifest(settings: dict[str, Any], backend: str) -> dict[str, Any]:
    return {
        "format": store.FORMAT,
        "complete": False,
        "settings": settings,
        "backend": backend,
        "sae_lens": {
            "loader": "datasets.load_from_disk",
            "columns": [*settings["hooks"], "token_ids"],
            "config": {
                "use_cached_activations": True,
                "context_size": settings["context_size"],
                "dtype": settings["store_dtype"],
                "prepend_bos": settings["prepend_bos"],
            },
        },
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import tlcore

    found = {"tlcore": tlcore.__version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "datasets", "pyarrow", "ray"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found

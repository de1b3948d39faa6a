"""The work on one shard, shared by the in-process and the Ray backends.

Loading the model, computing and writing a shard, recognising a shard already done, and the
progress bar: :mod:`tlcore.harvest.runner` drives them in-process and
:mod:`tlcore.harvest.ray_backend` inside Ray workers, so both write identical shards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.harvest import store
from tlcore.harvest.activations import batch_activations, to_numpy
from tlcore.harvest.packing import tokens_digest


def load_model(name: str, processing: bool, device: str | None, load_kwargs: dict[str, Any]) -> Any:
    """Load the model as harvest does.

    Args:
        name: Anything ``from_pretrained`` takes.
        processing: ``from_pretrained`` (True) or ``from_pretrained_no_processing``.
        device: Device, or None for the default.
        load_kwargs: More ``from_pretrained`` arguments (``dtype`` ...).

    Returns:
        The model, in eval mode.
    """
    from tlcore.model import HookedTransformer

    loader = (
        HookedTransformer.from_pretrained
        if processing
        else HookedTransformer.from_pretrained_no_processing
    )
    return loader(name, device=device, **load_kwargs).eval()


def compute_shard(
    model: Any,
    out: Path,
    index: int,
    tokens: np.ndarray,
    settings: dict[str, Any],
    stop_at: int | None,
    on_batch: Callable[[int], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute and write one shard (the unit of work, resume and retry).

    Args:
        model: A loaded model.
        out: Output folder.
        index: Shard index.
        tokens: ``[rows, context_size]`` token ids.
        settings: The harvest settings.
        stop_at: From :func:`tlcore.harvest.activations.stop_layer`.
        on_batch: Called with each batch's token count.
        extra: More fields for the commit record.

    Returns:
        The shard's commit record.
    """
    start = time.perf_counter()
    hooks, batch = settings["hooks"], int(settings["batch_size"])
    device = next(model.parameters()).device
    stacked: dict[str, np.ndarray] = {}
    for lo in range(0, tokens.shape[0], batch):
        chunk = torch.from_numpy(tokens[lo : lo + batch]).to(device=device, dtype=torch.long)
        acts = batch_activations(model, chunk, hooks, stop_at)
        for name, act in acts.items():
            if name not in stacked:
                shape = (tokens.shape[0], *act.shape[1:])
                stacked[name] = np.empty(shape, dtype=settings["store_dtype"])
            stacked[name][lo : lo + chunk.shape[0]] = to_numpy(act, settings["store_dtype"])
        if on_batch is not None:
            on_batch(chunk.numel())
    hook_dims = {name: int(a.shape[-1]) for name, a in stacked.items()}
    feats = store.features(hook_dims, int(settings["context_size"]), settings["store_dtype"])
    record_extra = {
        "hook_dims": hook_dims,
        "seconds": round(time.perf_counter() - start, 4),
        "device": str(device),
    }
    record_extra.update(extra or {})
    return store.write_shard(
        out, index, feats, stacked, tokens, tokens_digest(tokens), record_extra
    )


def check_done(
    done: dict[int, dict[str, Any]], index: int, tokens: np.ndarray
) -> dict[str, Any] | None:
    """A shard's commit record if it is done with these very tokens, else None.

    Args:
        done: From :func:`tlcore.harvest.store.done_shards`.
        index: Shard index.
        tokens: The shard's rows as this run computes them.

    Returns:
        The record, or None to compute the shard.

    Raises:
        tlcore.harvest.store.HarvestStateError: When the stored shard holds other tokens (the
            dataset or tokenizer changed since).
    """
    record = done.get(index)
    if record is None:
        return None
    if record["tokens_sha256"] != tokens_digest(tokens):
        raise store.HarvestStateError(
            f"shard {index} was written from other tokens than this dataset gives now: the "
            "dataset or tokenizer changed; use another output folder"
        )
    return record


def progress_bar(settings: dict[str, Any], show: bool) -> Any:
    """The harvest's labelled token progress bar (total from the token budget, if any).

    Args:
        settings: The harvest settings.
        show: Draw it (False gives a disabled bar that still counts).

    Returns:
        A ``tqdm`` bar.
    """
    from tqdm.auto import tqdm

    budget = settings["token_budget"]
    total = (
        None if budget is None else (budget // settings["context_size"]) * settings["context_size"]
    )
    return tqdm(
        total=total,
        desc=f"harvest {Path(str(settings['model'])).name}",
        unit="tok",
        unit_scale=True,
        disable=not show,
    )

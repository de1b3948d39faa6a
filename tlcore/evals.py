"""Rough evaluations of a ``HookedTransformer``, as TransformerLens 2.18's ``evals``.

Quick sanity checks and baselines, not benchmarks: the loss on a paragraph (:func:`sanity_check`),
on repeated random tokens (:func:`induction_loss`, which induction heads drive down), on four text
corpora (:func:`evaluate`), the indirect-object task (:class:`IOIDataset`, :func:`ioi_eval`) and
zero-shot MMLU (:func:`mmlu_eval`).

Differences from TransformerLens, all additions: every data loader takes ``dataset=`` (a
``datasets.Dataset``, a list of texts or a local path, see :func:`tlcore.utils.get_dataset`) so
nothing has to be downloaded; :func:`evaluate` and :func:`mmlu_eval` take the data the same way;
``device=None`` (the default here, ``"cuda"`` in TransformerLens) means the model's own device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import einops
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tlcore.evals_ioi import IOIDataset, ioi_eval
from tlcore.evals_mmlu import (
    MMLU_ANSWER_LETTERS,
    MMLU_SUBJECTS,
    make_mmlu_data_loader,
    mmlu_eval,
)
from tlcore.utils.attrs import override_or_use_default_value
from tlcore.utils.environment import warn_if_mps
from tlcore.utils.losses import lm_cross_entropy_loss
from tlcore.utils.tokenize import tokenize_and_concatenate

__all__ = [
    "DATASET_LOADERS",
    "DATASET_NAMES",
    "MMLU_ANSWER_LETTERS",
    "MMLU_SUBJECTS",
    "IOIDataset",
    "evaluate",
    "evaluate_on_dataset",
    "induction_loss",
    "ioi_eval",
    "make_code_data_loader",
    "make_mmlu_data_loader",
    "make_owt_data_loader",
    "make_pile_data_loader",
    "make_wiki_data_loader",
    "mmlu_eval",
    "sanity_check",
]

SANITY_TEXT = (
    "Many important transition points in the history of science have been moments when science "
    "'zoomed in.' At these points, we develop a visualization or tool that allows us to see the "
    "world in a new level of detail, and a new field of science develops to study the world "
    "through this lens."
)


def sanity_check(model: Any) -> torch.Tensor:
    """The model's loss on the first paragraph of "Zoom In" (Olah et al.), as TransformerLens.

    Below 5 the model is probably fine; above 7 something is wrong.

    Args:
        model: A ``HookedTransformer`` with a tokenizer.

    Returns:
        The mean next-token loss (a scalar tensor).
    """
    return model(SANITY_TEXT, return_type="loss")


def _texts(dataset: Any, hub_name: str, hub_config: str | None = None) -> Any:
    """The dataset a loader tokenises: the one given, a local path, or the hub's."""
    if dataset is None:
        import datasets

        args = (hub_name, hub_config) if hub_config else (hub_name,)
        return datasets.load_dataset(*args, split="train")
    if isinstance(dataset, str):
        from tlcore.utils.hub import get_dataset

        return get_dataset(dataset)
    return dataset


def _loader(
    texts: Any, tokenizer: Any, batch_size: int, column_name: str = "text"
) -> DataLoader[Any]:
    print(len(texts))
    tokens = tokenize_and_concatenate(texts, tokenizer, column_name=column_name)
    return DataLoader(tokens, batch_size=batch_size, shuffle=True, drop_last=True)


def make_wiki_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches of 1024 tokens from Wikitext-2's train split (``wikitext-2-v1``).

    Args:
        tokenizer: Tokenizes the texts (:func:`tlcore.utils.tokenize_and_concatenate`).
        batch_size: Sequences per batch.
        dataset: Texts to use instead of downloading Wikitext (rows with a ``text`` field, a list
            of strings, or a local path).

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}`` (last partial batch dropped).
    """
    return _loader(_texts(dataset, "wikitext", "wikitext-2-v1"), tokenizer, batch_size)


def make_owt_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches from OpenWebText's first 10k texts (``stas/openwebtext-10k``), GPT-2's corpus.

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Texts to use instead of the download.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    return _loader(_texts(dataset, "stas/openwebtext-10k"), tokenizer, batch_size)


def make_pile_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches from the Pile's first 10k texts (``NeelNanda/pile-10k``).

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Texts to use instead of the download.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    return _loader(_texts(dataset, "NeelNanda/pile-10k"), tokenizer, batch_size)


def make_code_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches of Python code (``codeparrot/codeparrot-valid-v2-near-dedup``, column ``content``).

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Rows with a ``content`` field (or a list of strings) to use instead.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    texts = _texts(dataset, "codeparrot/codeparrot-valid-v2-near-dedup")
    if isinstance(texts, list) and texts and isinstance(texts[0], str):
        texts = [{"content": t} for t in texts]
    return _loader(texts, tokenizer, batch_size, column_name="content")


DATASET_NAMES = ["wiki", "owt", "pile", "code"]
DATASET_LOADERS: list[Callable[..., DataLoader[Any]]] = [
    make_wiki_data_loader,
    make_owt_data_loader,
    make_pile_data_loader,
    make_code_data_loader,
]


def _model_device(model: Any, device: Any) -> Any:
    return device if device is not None else next(model.parameters()).device


@torch.inference_mode()
def evaluate_on_dataset(
    model: Any, data_loader: Any, truncate: int = 100, device: Any = None
) -> float:
    """Mean loss over the first ``truncate + 1`` batches of a loader of ``{"tokens": ...}``.

    Args:
        model: The model.
        data_loader: Yields ``{"tokens": [batch, pos]}``.
        truncate: Stop after this many batches (plus one, as TransformerLens counts).
        device: Where to run (default: the model's device).

    Returns:
        The mean of the per-batch losses.
    """
    device = _model_device(model, device)
    warn_if_mps(device)
    running_loss, total = 0.0, 0
    for batch in tqdm(data_loader, desc="evaluating"):
        running_loss += model(batch["tokens"].to(device), return_type="loss").mean().item()
        total += 1
        if total > truncate:
            break
    return running_loss / total


@torch.inference_mode()
def induction_loss(
    model: Any,
    tokenizer: Any = None,
    batch_size: int = 4,
    subseq_len: int = 384,
    prepend_bos: bool | None = None,
    device: Any = None,
) -> torch.Tensor:
    """Loss on the second copy of random token sequences repeated twice.

    A model with induction heads predicts the repeat, so this is far below its loss on the first
    copy. Tokens are drawn uniformly from ids 100-19999 (TransformerLens's range, clipped to the
    vocabulary) from torch's global generator; with ``prepend_bos`` (default
    ``model.cfg.default_prepend_bos``) the first token is replaced by BOS.

    Args:
        model: The model.
        tokenizer: Gives BOS (default: ``model.tokenizer``).
        batch_size: Sequences.
        subseq_len: Length of the random sequence (the input is twice as long).
        prepend_bos: Override the model's default.
        device: Where to run (default: the model's device).

    Returns:
        The mean loss over positions ``subseq_len + 1`` onwards (the repeat).
    """
    device = _model_device(model, device)
    warn_if_mps(device)
    high = min(20000, model.cfg.d_vocab)
    low = min(100, high // 2)
    first_half = torch.randint(low, high, (batch_size, subseq_len)).to(device)
    repeated = einops.repeat(first_half, "b p -> b (2 p)")
    if override_or_use_default_value(model.cfg.default_prepend_bos, override=prepend_bos):
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        repeated[:, 0] = tokenizer.bos_token_id
    logits = model(repeated, return_type="logits")
    per_token = lm_cross_entropy_loss(logits, repeated, per_token=True)
    return per_token[:, subseq_len + 1 :].mean()


@torch.inference_mode()
def evaluate(
    model: Any,
    truncate: int = 100,
    batch_size: int = 8,
    tokenizer: Any = None,
    *,
    datasets: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Loss on Wikitext, OpenWebText, the Pile and code (``{name}_loss`` per corpus).

    Args:
        model: The model.
        truncate: Batches per corpus (see :func:`evaluate_on_dataset`).
        batch_size: Sequences per batch.
        tokenizer: Default ``model.tokenizer``.
        datasets: Corpus name (``wiki``, ``owt``, ``pile``, ``code``) → local texts; the corpora
            named here are used instead of downloads, and only they are evaluated.

    Returns:
        ``{"wiki_loss": ..., ...}``.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    losses = {}
    for name, make_loader in zip(DATASET_NAMES, DATASET_LOADERS):
        if datasets is not None and name not in datasets:
            continue
        local = datasets[name] if datasets is not None else None
        loader = make_loader(tokenizer=tokenizer, batch_size=batch_size, dataset=local)
        loss = evaluate_on_dataset(model, loader, truncate=truncate)
        print(f"{name}: {loss}")
        losses[f"{name}_loss"] = loss
    return losses

"""Processing's side of a tied unembedding: hold it derived, and run the steps on that form.

:func:`tie_unembedding_` switches a tied ``W_U`` (equal to ``W_E.T``) to its derived form
(:class:`~tlcore.components.tied_unembed.TiedUnembedding`) before the steps that would untie it
(``fold_ln``, ``center_writing_weights``, ``center_unembed``); the steps of
:mod:`tlcore.processing_steps` then hand the derived weight to :func:`fold_derived_`,
:func:`center_derived_` and :func:`before_centring_` instead of rewriting a parameter.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tlcore.components.tied_unembed import TiedUnembedding
from tlcore.processing_tensors import assign

_KEEP_TIED: contextvars.ContextVar[bool] = contextvars.ContextVar("tlcore_keep_tied", default=True)
_LOADED_TIES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "tlcore_loaded_ties", default=None
)


@contextlib.contextmanager
def loaded_ties(ties: dict[str, str]) -> Iterator[None]:
    """Vouch, while inside, that ``name == other.T`` for each ``{name: other}`` of ``ties``.

    ``from_pretrained`` passes what its loader reports (views of one checkpoint tensor read
    twice, not written since), so deriving the unembedding does not compare (and page in) both
    matrices.

    Args:
        ties: The loader's ``{parameter: parameter it equals transposed}``.

    Yields:
        Nothing.
    """
    token = _LOADED_TIES.set(dict(ties))
    try:
        yield
    finally:
        _LOADED_TIES.reset(token)


@contextlib.contextmanager
def keep_tied(enabled: bool = True) -> Iterator[None]:
    """Whether processing keeps a tied unembedding in its derived form while inside.

    Args:
        enabled: False makes processing materialise ``W_U`` as a parameter of its own (the
            behaviour before the derived form; tests compare the two).

    Yields:
        Nothing.
    """
    token = _KEEP_TIED.set(enabled)
    try:
        yield
    finally:
        _KEEP_TIED.reset(token)


def _derived(module: nn.Module, name: str) -> TiedUnembedding | None:
    getter = getattr(module, "derived_weight", None)
    return getter(name) if callable(getter) else None


def tie_unembedding_(model: Any) -> bool:
    """Hold ``model.unembed.W_U`` in derived form if it equals ``model.embed.W_E.T`` exactly.

    Called by processing before the steps that would untie them; a no-op inside
    ``keep_tied(False)``, for a model without both modules, or when the values differ. Inside
    :func:`loaded_ties` naming the pair, the values are not compared.

    Args:
        model: A built model.

    Returns:
        Whether the unembedding is (now) derived from the embedding.
    """
    unembed, embed = getattr(model, "unembed", None), getattr(model, "embed", None)
    tie = getattr(unembed, "tie_to_", None)
    if not _KEEP_TIED.get() or embed is None or not callable(tie):
        return False
    trusted = (_LOADED_TIES.get() or {}).get("unembed.W_U") == "embed.W_E"
    return bool(tie(embed, "W_E", trusted))


def fold_derived_(
    module: nn.Module,
    name: str,
    bias_name: str,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    center: bool,
) -> bool:
    """``fold_ln`` into a derived weight (the ``ln_final`` fold into a tied ``W_U``).

    Args:
        module: The reading module.
        name: The weight's name.
        bias_name: The reading bias's name (it exists: ``b_U``).
        weight: The norm's weight.
        bias: The norm's bias.
        center: Centre over ``d_model`` afterwards.

    Returns:
        Whether ``module.<name>`` was derived (and so folded here).
    """
    derived = _derived(module, name)
    if derived is None:
        return False
    extra = derived.fold_(weight, bias, center)
    if extra is not None:
        current = getattr(module, bias_name)
        assign(module, bias_name, current.detach().to(extra) + extra, current.dtype)
    return True


def center_derived_(module: nn.Module, name: str, dim: int) -> bool:
    """Centre a derived weight over ``dim``.

    Args:
        module: The module.
        name: The weight's name.
        dim: The axis.

    Returns:
        Whether ``module.<name>`` was derived (and so centred here).
    """
    derived = _derived(module, name)
    if derived is None:
        return False
    derived.center_(dim)
    return True


def before_centring_(model: Any, module: nn.Module, name: str) -> None:
    """Tell a weight derived from ``module.<name>`` that it is about to be centred (last axis).

    Args:
        model: The model.
        module: The writer's module.
        name: The writer's parameter.
    """
    unembed = getattr(model, "unembed", None)
    derived = _derived(unembed, "W_U") if unembed is not None else None
    if derived is not None and derived.embed is module and derived.name == name:
        derived.source_centred_()

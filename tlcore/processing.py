"""TransformerLens's weight processing, applied in place to a built model.

The five steps of TransformerLens 2.x's ``process_weights_`` (same names, same order, same maths):

1. :func:`fold_layer_norm`: fold each pre-norm's weight (and LayerNorm bias) into the linear maps
   that read it, centre those reading weights (LayerNorm only), and leave the norm parameter-free
   (TransformerLens's ``LNPre``/``RMSPre``). Gemma's ``1 + w`` norms fold ``1 + w``.
2. :func:`center_writing_weights`: subtract the ``d_model`` mean from everything that writes to the
   residual stream (``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``).
3. :func:`center_unembed`: subtract the vocabulary mean from ``W_U`` and ``b_U``.
4. :func:`fold_value_biases`: ``b_O += Σ_h b_V[h] @ W_O[h]``, then ``b_V = 0``.
5. :func:`refactor_factored_attn_matrices`: rebalance ``W_Q``/``W_K`` and ``W_V``/``W_O`` by SVD
   (off by default).

Each step is exact (log-probabilities are unchanged; raw logits move by a per-position constant)
only for some architectures. Which ones is decided from the model's traits, never from its name, by
:func:`~tlcore.processing_plan.processing_plan` (re-exported here); a requested step that does not
apply is skipped with a logged warning, and ``model.cfg`` records what was applied
(``cfg.fold_ln`` ...) together with the reason in ``cfg.extra["weight_processing"]``. The maths
lives in :mod:`tlcore.processing_steps`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tlcore import processing_steps as steps
from tlcore.errors import UnsupportedConfigError
from tlcore.processing_plan import FLAGS, ProcessingPlan, processing_plan
from tlcore.processing_tensors import in_place as _in_place
from tlcore.processing_tied import tie_unembedding_

__all__ = [
    "FLAGS",
    "center_unembed",
    "center_writing_weights",
    "fold_layer_norm",
    "fold_value_biases",
    "process_weights_",
    "processing_plan",
    "refactor_factored_attn_matrices",
]

logger = logging.getLogger(__name__)


def _record(cfg: Any, flag: str, applied: bool, reason: str) -> bool:
    setattr(cfg, flag, applied)
    cfg.extra.setdefault("weight_processing", {})[flag] = {"applied": applied, "reason": reason}
    return applied


def _skip(cfg: Any, flag: str, reason: str) -> bool:
    # TransformerLens skips centring silently for RMS models, where it is never possible; every
    # other skip surprises someone who asked for it, so it is a warning.
    log = logger.info if flag == "center_writing_weights" else logger.warning
    log("%s skipped: %s", flag, reason)
    return _record(cfg, flag, False, reason)


def _optimize_layout(model: Any) -> None:
    """Re-stride new (plain contiguous) projection weights into the layout the forward expects."""
    for module in model.modules():
        method = getattr(module, "optimize_layout_", None)
        if module is not model and callable(method):
            method()


# -------------------------------------------------------------------------------- public steps
def _run(
    model: Any,
    flag: str,
    step: Any,
    *args: Any,
    relayout: bool = True,
    plan: ProcessingPlan | None = None,
) -> bool:
    applies, reason = (plan or processing_plan(model.cfg))[flag]
    if not applies:
        return _skip(model.cfg, flag, reason)
    with torch.no_grad():
        step(model, *args)
    if relayout:
        _optimize_layout(model)
    return _record(model.cfg, flag, True, reason)


def fold_layer_norm(model: Any, fold_biases: bool = True, center_weights: bool = True) -> bool:
    """Fold the block and final norms into the linear maps that read them, in place.

    ``ln1`` folds into ``W_Q/W_K/W_V`` (and their biases), ``ln2`` into the MLP's ``W_in`` and
    ``W_gate`` (every expert, the router and the shared expert of an MoE), ``ln_final`` into
    ``W_U``/``b_U``; a parallel block with one norm folds ``ln1`` into both. For LayerNorm the
    reading weights are then centred over ``d_model``. The norms keep their normalisation and
    lose their parameters (``cfg.normalization_type`` LN → LNPre, RMS → RMSPre). Which norm feeds
    which branch is the block's declared wiring; post-norms (sandwich), qk-norms and embedding
    norms are left as they are. Skipped (with a warning, ``cfg.fold_ln = False``) where
    :func:`processing_plan` says it is not exact.

    Args:
        model: A built ``HookedTransformer``.
        fold_biases: Fold LayerNorm biases into the readers' biases (TransformerLens's flag; a
            nonzero bias cannot be left behind, so False is refused for such a norm).
        center_weights: Centre the reading weights (LayerNorm only).

    Returns:
        Whether the fold was applied.

    Raises:
        UnsupportedConfigError: ``fold_biases=False`` with a nonzero LayerNorm bias (nothing is
            changed).
    """
    return _run(model, "fold_ln", steps.fold_layer_norm_, fold_biases, center_weights)


def center_writing_weights(model: Any) -> bool:
    """Subtract the ``d_model`` mean from every weight writing to the residual stream, in place.

    ``W_E``, ``W_pos`` (learned positions added to the residual), ``W_O``, ``b_O``, ``W_out``,
    ``b_out`` (every expert's and the shared expert's in an MoE). Exact only when every reader of
    the residual stream is a LayerNorm (which removes the mean anyway); skipped otherwise.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the centring was applied.
    """
    return _run(model, "center_writing_weights", steps.center_writing_weights_)


def center_unembed(model: Any) -> bool:
    """Subtract the vocabulary mean from ``W_U`` and ``b_U``, in place.

    Log-probabilities are unchanged; logits move by a per-position constant. Skipped with a final
    logit soft-cap, which is not shift-invariant.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the centring was applied.
    """
    return _run(model, "center_unembed", steps.center_unembed_)


def fold_value_biases(model: Any) -> bool:
    """Fold the value biases into the output bias: ``b_O += Σ_h b_V[h] @ W_O[h]``, ``b_V = 0``.

    Exact because each pattern row sums to 1, so a head's value bias adds a constant. Grouped
    key/value heads are expanded to their query heads for the sum; the stored ``_b_V`` is zeroed.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the fold was applied.
    """
    return _run(model, "fold_value_biases", steps.fold_value_biases_)


def refactor_factored_attn_matrices(model: Any) -> bool:
    """Rebalance each head's factored matrices, in place (TransformerLens's experimental refactor).

    ``[W_Q; b_Q] [W_K; b_K]^T`` is refactored as ``(U √S)(√S V^T)``, so ``W_Q`` and ``W_K`` carry
    equal halves of each singular value; ``b_V`` is folded into ``b_O`` and ``W_V W_O = U S V^T``
    becomes ``W_V = U S``, ``W_O = V^T`` (an isometry). Attention scores and outputs are unchanged.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        True (it was applied).

    Raises:
        UnsupportedConfigError: With rotary positions (the QK matrix depends on position), grouped
            keys/values, qk-norm, clip_qkv or attention sinks; the model is left unchanged.
    """
    applies, reason = processing_plan(model.cfg)["refactor_factored_attn_matrices"]
    if not applies:
        raise UnsupportedConfigError(f"refactor_factored_attn_matrices: {reason}")
    return _run(model, "refactor_factored_attn_matrices", steps.refactor_factored_attn_matrices_)


def process_weights_(
    model: Any,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    refactor_factored_attn_matrices: bool = False,
    plan: ProcessingPlan | None = None,
    in_place: bool = False,
) -> Any:
    """Apply TransformerLens's weight processing in place, in TransformerLens's order.

    fold_ln → center_writing_weights → center_unembed → fold_value_biases →
    refactor_factored_attn_matrices. A requested step that is not exact for this architecture is
    skipped with a warning (see :func:`processing_plan`); ``model.cfg`` records, for each requested
    flag, whether it was applied (``cfg.fold_ln`` ...) and why (``cfg.extra["weight_processing"]``).
    Flags not requested are left as they were.

    Args:
        model: A built ``HookedTransformer``.
        fold_ln: Fold norms into the next linear maps.
        center_writing_weights: Centre the weights writing to the residual stream.
        center_unembed: Centre the unembedding over the vocabulary.
        fold_value_biases: Fold value biases into ``b_O``.
        refactor_factored_attn_matrices: Refactor ``W_Q/W_K`` and ``W_V/W_O`` (off by default).
        plan: The model plan's processing plan (default: the plan of ``model.cfg`` now).
        in_place: Rewrite each parameter in its own memory where no other parameter shares it
            (peak memory stays at one copy of the weights; tensors obtained from the parameters
            before see the new values). False (the default) gives processed parameters new
            tensors and leaves the old ones unchanged.

    Returns:
        The model.

    Raises:
        UnsupportedConfigError: If ``refactor_factored_attn_matrices`` is requested where it does
            not apply (rotary positions, ...), before anything is changed.
    """
    plan = plan if plan is not None else processing_plan(model.cfg)
    if refactor_factored_attn_matrices and not plan["refactor_factored_attn_matrices"][0]:
        raise UnsupportedConfigError(
            f"refactor_factored_attn_matrices: {plan['refactor_factored_attn_matrices'][1]}"
        )
    todo = (
        (fold_ln, "fold_ln", steps.fold_layer_norm_, (True, True)),
        (center_writing_weights, "center_writing_weights", steps.center_writing_weights_, ()),
        (center_unembed, "center_unembed", steps.center_unembed_, ()),
        (fold_value_biases, "fold_value_biases", steps.fold_value_biases_, ()),
        (
            refactor_factored_attn_matrices,
            "refactor_factored_attn_matrices",
            steps.refactor_factored_attn_matrices_,
            (),
        ),
    )
    with _in_place(model, in_place):
        if any(r and plan[f][0] for r, f, _, _ in todo[:3]):
            # These steps would untie a tied W_U from W_E: hold it derived instead (no copy).
            tie_unembedding_(model)
        for requested, flag, step, args in todo:
            if requested:
                _run(model, flag, step, *args, relayout=False, plan=plan)
    _optimize_layout(model)
    return model

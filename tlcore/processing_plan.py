"""Which of TransformerLens's weight-processing steps are exact for a model, and why.

The plan is decided from the resolved traits, never from a model or layout name, by reading what
each trait declares:

- the block layout's wiring (:class:`~tlcore.components.wiring.BlockWiring`): which norms read the
  residual stream into a branch (``fold_ln`` folds those and the final norm), whether the stream
  is additive, and whether a write to a branch output reaches the stream unchanged in its mean
  (``center_writing_weights``);
- the norm traits (:class:`~tlcore.components.norms.NormTrait`): whether they centre (centring is
  exact only when every reader of the residual stream removes the mean) and their parameter-free
  form;
- ``linear_io`` on the attention, mixer, MLP and unembedding traits (their modules declare the
  linear maps that read and write the residual stream);
- each trait's :meth:`~tlcore.spec.Trait.processing_refusals` (shortformer positions, rotary
  positions, attention sinks, a final soft-cap...).

A requested step that does not apply is skipped with a logged warning; ``model.cfg`` records what
was applied and why (``cfg.extra["weight_processing"]``).
"""

from __future__ import annotations

from typing import Any

from tlcore.components.block import BlockTrait
from tlcore.components.norms import NormTrait
from tlcore.components.wiring import BlockWiring
from tlcore.spec.traits import Trait

FLAGS: tuple[str, ...] = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)
"""The processing flags, in the order ``process_weights_`` applies them."""

ProcessingPlan = dict[str, tuple[bool, str]]
"""``{flag: (applies, reason)}`` for every flag of :data:`FLAGS`."""

_LINEAR_SLOTS = ("attention", "mixer", "mlp", "unembed")


def processing_plan(cfg: Any) -> ProcessingPlan:
    """Say, for each processing flag, whether it is exact for this architecture, and why not.

    Args:
        cfg: A resolved ``HookedTransformerConfig`` (its ``traits`` decide).

    Returns:
        ``{flag: (applies, reason)}`` for every flag in :data:`FLAGS`; the reason says what the step
        does when it applies and why it is skipped when it does not.

    Examples:
        >>> from tlcore.config import HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(d_model=8, n_layers=1, n_ctx=4, d_head=4, n_heads=2,
        ...                               d_vocab=10, act_fn="relu", normalization_type="RMS")
        >>> processing_plan(cfg)["fold_ln"]
        (True, 'folds ln1, ln2, ln_final into the linear maps reading them')
        >>> processing_plan(cfg)["center_writing_weights"][0]  # RMSNorm does not remove the mean
        False
    """
    traits: dict[str, Trait] = {slot: cfg.trait(slot) for slot in _slots(cfg)}
    refusals: dict[str, str] = {}
    for trait in traits.values():
        for flag, reason in trait.processing_refusals().items():
            refusals.setdefault(flag, reason)
    checks = {
        "fold_ln": _fold_ln,
        "center_writing_weights": _center_writing_weights,
        "center_unembed": _center_unembed,
        "fold_value_biases": _fold_value_biases,
        "refactor_factored_attn_matrices": _refactor,
    }
    plan: ProcessingPlan = {}
    for flag in FLAGS:
        if "block" not in traits:
            plan[flag] = (False, "the config has no traits (no block layout)")
        elif flag in refusals:
            plan[flag] = (False, refusals[flag])
        else:
            plan[flag] = checks[flag](cfg, traits)
    return plan


def _slots(cfg: Any) -> list[str]:
    slots = list(cfg.traits)
    if "norm" in cfg.traits and "final_norm" not in slots:
        slots.append("final_norm")  # falls back to the block norm's trait
    return slots


def _wiring(traits: dict[str, Trait]) -> tuple[str, BlockWiring | None]:
    block = traits["block"]
    if not isinstance(block, BlockTrait):
        return block.kind, None
    try:
        return block.kind, block.wiring()
    except NotImplementedError:
        return block.kind, None


def _not_linear(traits: dict[str, Trait]) -> str | None:
    """Name a component kind not declaring ``linear_io`` (a plugin's), or None."""
    for slot in _LINEAR_SLOTS:
        trait = traits.get(slot)
        if trait is not None and not type(trait).linear_io:
            return (
                f"{slot} kind '{trait.kind}' does not declare linear_io (reads and writes "
                f"the residual stream only through linear maps), so folding is not known exact"
            )
    return None


def _norm_trait(traits: dict[str, Trait], slot: str) -> NormTrait | None:
    trait = traits.get(slot)
    return trait if isinstance(trait, NormTrait) else None


def _fold_ln(cfg: Any, traits: dict[str, Trait]) -> tuple[bool, str]:
    kind, wiring = _wiring(traits)
    if wiring is None:
        return False, f"block kind '{kind}' does not declare its wiring"
    if not wiring.additive:
        # A post-norm's output is the residual stream itself, not only the input of linear maps.
        return False, (
            f"block layout '{kind}' normalises the residual stream after the residual add, so "
            f"its norms do not feed only linear maps and cannot be folded (TransformerLens "
            f"refuses fold_ln for post-norm models)"
        )
    if not wiring.input_norms:
        return False, (
            f"block layout '{kind}' reads the residual stream into its branches without a norm "
            f"(its post-norms sit between each branch and the residual add), so there is no "
            f"pre-norm to fold (TransformerLens refuses fold_ln for post-norm models such as "
            f"OLMo-2)"
        )
    for slot in ("norm", "final_norm"):
        if _norm_trait(traits, slot) is None:
            return False, (
                f"{slot} kind '{traits[slot].kind}' is not a NormTrait, so how to fold it is "
                f"not declared"
            )
    unknown = _not_linear(traits)
    if unknown:
        return False, unknown
    names: list[str] = []
    norm, final = _norm_trait(traits, "norm"), _norm_trait(traits, "final_norm")
    if norm is not None and norm.builds_module:
        names += wiring.input_norms
    if final is not None and final.builds_module:
        names.append("ln_final")
    if not names:
        return False, "the model has no block or final norm to fold"
    reason = f"folds {', '.join(names)} into the linear maps reading them"
    kept = [b.post_norm for b in wiring.branches if b.post_norm is not None]
    if kept and norm is not None and norm.builds_module:
        reason += f"; the post-norms {'/'.join(kept)} keep their weights"
    return True, reason


def _center_writing_weights(cfg: Any, traits: dict[str, Trait]) -> tuple[bool, str]:
    kind, wiring = _wiring(traits)
    if wiring is None:
        return False, f"block kind '{kind}' does not declare its wiring"
    if not wiring.additive or not wiring.input_norms:
        return False, (
            f"block layout '{kind}': the residual stream is read without a centring "
            f"LayerNorm in front of every reader"
        )
    for branch in wiring.branches:
        if branch.post_norm is not None:
            return False, (
                f"block layout '{kind}': the post-norm {branch.post_norm} sits between the "
                f"{branch.name} output and the residual stream, so centring the weights writing "
                f"it centres nothing that is written"
            )
        if not branch.preserves_mean:
            return False, (
                f"block layout '{kind}': the {branch.name} output is mapped per channel before "
                f"the residual add, so a centred write does not reach the stream centred"
            )
    for slot in ("norm", "final_norm"):
        norm = _norm_trait(traits, slot)
        if norm is None or not norm.centres:
            return False, (
                f"the residual stream is read through a '{traits[slot].kind}' "
                f"{slot.replace('_', ' ')}, which does not remove the mean; centring is exact "
                f"only when every reader is a centring norm (TransformerLens: normalization_type "
                f"LN/LNPre, no final RMS)"
            )
    unknown = _not_linear(traits)
    if unknown:
        return False, unknown
    return True, "subtracts the d_model mean from every weight and bias writing to the stream"


def _center_unembed(cfg: Any, traits: dict[str, Trait]) -> tuple[bool, str]:
    unembed = traits.get("unembed")
    if unembed is None or not type(unembed).linear_io:
        return False, f"unembed kind '{getattr(unembed, 'kind', None)}' does not declare linear_io"
    if cfg.output_logits_soft_cap > 0:
        return False, (
            f"the final logit soft-cap ({cfg.output_logits_soft_cap}) is not shift-invariant, so "
            f"centring W_U would change the log-probs (TransformerLens refuses too)"
        )
    return True, (
        "subtracts the vocabulary mean from W_U and b_U (log-probs unchanged, logits "
        "shift by a per-position constant)"
    )


def _fold_value_biases(cfg: Any, traits: dict[str, Trait]) -> tuple[bool, str]:
    attention = traits.get("attention")
    if attention is None or not type(attention).linear_io:
        kind = getattr(attention, "kind", None)
        return False, f"attention kind '{kind}' does not declare linear_io"
    return True, "folds b_V through W_O into b_O and zeroes b_V"


def _refactor(cfg: Any, traits: dict[str, Trait]) -> tuple[bool, str]:
    attention = traits.get("attention")
    if attention is None or not type(attention).linear_io:
        kind = getattr(attention, "kind", None)
        return False, f"attention kind '{kind}' does not declare linear_io"
    if cfg.n_key_value_heads not in (None, cfg.n_heads):
        return False, (
            "grouped keys/values: a refactored W_K is per query head and cannot be "
            "stored in the shared key/value heads"
        )
    return True, "rebalances W_Q/W_K (with biases) and W_V/W_O by SVD"

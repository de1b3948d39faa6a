"""Traits for a config written by hand with TransformerLens's fields (no spec, no checkpoint).

TransformerLens users build toy models as ``HookedTransformer(HookedTransformerConfig(n_layers=2,
d_model=128, ..., act_fn="gelu", normalization_type="LN"))``. tlcore builds every model from traits,
so such a config gets the traits its flat fields describe. TransformerLens's fields only describe
built-in kinds, so they are validated against the built-in trait table (never the plugin registry:
building a config loads no plugin).
"""

from __future__ import annotations

from typing import Any

from tlcore.builtin.traits import builtin_trait_model
from tlcore.errors import SpecError
from tlcore.spec.trait_resolution import resolve_trait

_NORMS: dict[str | None, dict[str, Any]] = {
    "LN": {"kind": "layernorm"},
    "LNPre": {"kind": "layernorm", "weight": False, "bias": False},
    "RMS": {"kind": "rmsnorm"},
    "RMSPre": {"kind": "rmsnorm", "weight": False},
    None: {"kind": "none"},
}


def trait_blocks_from_fields(cfg: Any) -> dict[str, dict[str, Any]]:
    """The trait blocks that TransformerLens's flat config fields describe.

    Args:
        cfg: A ``HookedTransformerConfig`` whose ``traits`` are empty.

    Returns:
        Raw trait blocks per slot (validated by :func:`traits_from_fields`).

    Raises:
        SpecError: For fields tlcore cannot express this way (``attn_only``, unknown values).
    """
    if cfg.attn_only:
        raise SpecError("attn_only configs are not supported: tlcore blocks always have an MLP")
    if cfg.normalization_type not in _NORMS:
        raise SpecError(
            f"normalization_type {cfg.normalization_type!r}: expected one of {list(_NORMS)}"
        )
    norm = {**_NORMS[cfg.normalization_type]}
    if norm["kind"] != "none":
        norm["eps"] = cfg.eps
    positional: dict[str, Any]
    if cfg.positional_embedding_type == "standard":
        positional = {"kind": "learned_absolute"}
    elif cfg.positional_embedding_type == "shortformer":
        positional = {"kind": "shortformer"}
    elif cfg.positional_embedding_type == "rotary":
        positional = {
            "kind": "rotary",
            "dim": cfg.rotary_dim or cfg.d_head,
            "base": cfg.rotary_base,
            "style": "interleaved" if cfg.rotary_adjacent_pairs else "half",
        }
    elif cfg.positional_embedding_type == "alibi":
        positional = {"kind": "alibi"}
    else:
        raise SpecError(
            f"positional_embedding_type {cfg.positional_embedding_type!r} is not supported"
        )
    attention: dict[str, Any] = {
        "kind": "attention",
        "scale_by_inverse_layer": cfg.scale_attn_by_inverse_layer_idx,
    }
    if not cfg.use_attn_scale:
        attention["scale"] = 1.0
    elif cfg.attn_scale > 0:
        attention["scale"] = 1.0 / cfg.attn_scale
    if cfg.attn_scores_soft_cap > 0:
        attention["softcap"] = cfg.attn_scores_soft_cap
    if cfg.use_local_attn and cfg.window_size:
        attention["sliding_window"] = cfg.window_size
        if cfg.attn_types:
            attention["window_layers"] = [t == "local" for t in cfg.attn_types]
    if cfg.use_qk_norm:
        attention["qk_norm"] = {"kind": "rmsnorm", "eps": cfg.eps}
    if cfg.num_experts:
        mlp: dict[str, Any] = {
            "kind": "moe",
            "n_experts": cfg.num_experts,
            "top_k": cfg.experts_per_token or 1,
        }
    else:
        mlp = {"kind": "gated" if cfg.gated_mlp else "plain"}
    unembed: dict[str, Any] = {"kind": "linear"}
    if cfg.output_logits_soft_cap > 0:
        unembed["softcap"] = cfg.output_logits_soft_cap
    block = {"kind": "parallel", "norms": 2} if cfg.parallel_attn_mlp else {"kind": "pre_norm"}
    return {
        "embedding": {"kind": "token"},
        "positional": positional,
        "norm": norm,
        "block": block,
        "attention": attention,
        "mlp": mlp,
        "unembed": unembed,
    }


def traits_from_fields(cfg: Any) -> dict[str, Any]:
    """Validate :func:`trait_blocks_from_fields` against the built-in trait kinds.

    Args:
        cfg: A ``HookedTransformerConfig`` whose ``traits`` are empty.

    Returns:
        Resolved traits per slot.
    """
    return {
        slot: resolve_trait(block, slot, builtin_trait_model, {}, {}, f"config field traits.{slot}")
        for slot, block in trait_blocks_from_fields(cfg).items()
    }

"""Traits for a config written by hand with TransformerLens's fields (no spec, no checkpoint).

TransformerLens users build toy models as ``HookedTransformer(HookedTransformerConfig(n_layers=2,
d_model=128, ..., act_fn="gelu", normalization_type="LN"))``. tlcore builds every model from traits,
so such a config gets the traits its flat fields describe.

Field → trait:

- ``normalization_type`` → ``norm`` (LN, LNPre, RMS, RMSPre, None); ``final_rms`` → an RMS
  ``final_norm`` under LN/LNPre blocks.
- ``positional_embedding_type`` → ``positional`` (standard, shortformer, rotary, alibi, and
  tlcore's ``"none"``: no positional information, no ``pos_embed`` weights);
  ``rotary_dim``, ``rotary_base``, ``rotary_adjacent_pairs`` and ``use_NTK_by_parts_rope`` with its
  four numbers (HF's ``llama3`` rope type) → the rotary parameters; ``rotary_base_local`` → the
  theta of the ``attn_types == "local"`` layers.
- ``attention_dir`` → ``attention.causal``; ``use_attn_scale``, ``attn_scale``,
  ``scale_attn_by_inverse_layer_idx``, ``attn_scores_soft_cap``, ``use_local_attn`` with
  ``window_size``/``attn_types``, ``use_qk_norm`` → the other ``attention`` parameters.
- ``gated_mlp``, ``num_experts``/``experts_per_token``, ``act_fn`` → ``mlp`` (plain, gated, moe);
  ``act_fn="solu_ln"`` → a plain MLP with SoLU and an ``act_norm`` LayerNorm (``hook_mid``,
  ``mlp.ln``); ``act_fn="xielu"`` → the MLP owns a trainable xIELU (``mlp.act_fn``).
- ``attn_only``, ``parallel_attn_mlp``, ``use_normalization_before_and_after`` → ``block``
  (attn_only, parallel, sandwich, else pre_norm).
- ``post_embedding_ln`` → a LayerNorm inside ``embedding``; ``output_logits_soft_cap`` →
  ``unembed``.

Fields that need a trait tlcore does not have yet are accepted by the config and refused when the
model is built, with :class:`~tlcore.errors.UnsupportedConfigError` naming the field
(:data:`NEEDS_NEW_TRAIT`).

The fields only describe built-in kinds, so they are validated against the built-in trait table
(never the plugin registry: building a config loads no plugin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tlcore.builtin.traits import builtin_trait_model
from tlcore.errors import InvalidConfigError, UnsupportedConfigError
from tlcore.spec.trait_resolution import resolve_trait
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait

_NORMS: dict[str | None, dict[str, Any]] = {
    "LN": {"kind": "layernorm"},
    "LNPre": {"kind": "layernorm", "weight": False, "bias": False},
    "RMS": {"kind": "rmsnorm"},
    "RMSPre": {"kind": "rmsnorm", "weight": False},
    None: {"kind": "none"},
}

NEEDS_NEW_TRAIT: dict[str, str] = {
    "positional_embedding_type=relative_positional_bias": "T5's bucketed relative position bias",
    "load_in_4bit": "4-bit quantised weights",
    "n_devices": "splitting blocks over several devices",
}
"""TransformerLens fields (or values) that no trait of tlcore expresses yet, and what they need."""


def unsupported_fields(cfg: Any) -> list[str]:
    """The keys of :data:`NEEDS_NEW_TRAIT` that ``cfg`` uses.

    Args:
        cfg: The config.

    Returns:
        The keys, in :data:`NEEDS_NEW_TRAIT`'s order.
    """
    used = {
        "positional_embedding_type=relative_positional_bias": (
            cfg.positional_embedding_type == "relative_positional_bias"
        ),
        "load_in_4bit": cfg.load_in_4bit,
        "n_devices": cfg.n_devices > 1,
    }
    return [key for key in NEEDS_NEW_TRAIT if used[key]]


def trait_blocks_from_fields(cfg: Any) -> dict[str, dict[str, Any]]:
    """The trait blocks that TransformerLens's flat config fields describe.

    Args:
        cfg: A ``HookedTransformerConfig`` whose ``traits`` are empty.

    Returns:
        Raw trait blocks per slot (validated by :func:`traits_from_fields`).

    Raises:
        UnsupportedConfigError: For fields no trait expresses yet (:data:`NEEDS_NEW_TRAIT`).
        InvalidConfigError: For values TransformerLens does not define.
    """
    missing = unsupported_fields(cfg)
    if missing:
        raise UnsupportedConfigError(
            "this config cannot be built yet: "
            + "; ".join(f"{key} needs {NEEDS_NEW_TRAIT[key]}" for key in missing)
            + ". tlcore has no trait for it; the config itself is valid and round-trips"
        )
    if cfg.normalization_type not in _NORMS:
        raise InvalidConfigError(
            f"normalization_type {cfg.normalization_type!r}: expected one of {list(_NORMS)}"
        )
    norm = {**_NORMS[cfg.normalization_type]}
    if norm["kind"] != "none":
        norm["eps"] = cfg.eps
    blocks: dict[str, dict[str, Any]] = {
        "embedding": _embedding(cfg),
        "positional": _positional(cfg),
        "norm": norm,
        "block": _block(cfg),
        "attention": _attention(cfg),
        "mlp": _mlp(cfg),
        "unembed": _unembed(cfg),
    }
    if cfg.final_rms and cfg.normalization_type in ("LN", "LNPre"):
        # TransformerLens's SoLU models: LayerNorm blocks, an RMSNorm (RMSNormPre) before unembed.
        blocks["final_norm"] = {
            "kind": "rmsnorm",
            "eps": cfg.eps,
            "weight": cfg.normalization_type == "LN",
        }
    return blocks


def _embedding(cfg: Any) -> dict[str, Any]:
    embedding: dict[str, Any] = {"kind": "token"}
    if cfg.post_embedding_ln:  # TransformerLens's Embed.ln is a LayerNorm whatever the blocks use
        embedding["norm"] = {"kind": "layernorm", "eps": cfg.eps}
    return embedding


def _positional(cfg: Any) -> dict[str, Any]:
    kind = cfg.positional_embedding_type
    if kind == "none":  # tlcore's addition: no positional information at all
        return {"kind": "none"}
    if kind == "standard":
        return {"kind": "learned_absolute"}
    if kind == "shortformer":
        return {"kind": "shortformer"}
    if kind == "alibi":
        return {"kind": "alibi"}
    if kind != "rotary":
        raise InvalidConfigError(
            f"positional_embedding_type {kind!r}: expected 'standard', 'shortformer', 'rotary', "
            f"'alibi', 'relative_positional_bias' or 'none'"
        )
    dim = cfg.rotary_dim or cfg.d_head
    rotary: dict[str, Any] = {
        "kind": "rotary",
        "dim": dim,
        "style": "interleaved" if cfg.rotary_adjacent_pairs else "half",
    }
    global_params = _rope_parameters(cfg, cfg.rotary_base)
    if cfg.rotary_base_local is not None and cfg.use_local_attn and cfg.attn_types:
        # TransformerLens gives the attn_types == "local" layers their own theta (Gemma 3).
        rotary["layer_types"] = [
            "sliding_attention" if t == "local" else "full_attention" for t in cfg.attn_types
        ]
        rotary["rope_parameters"] = {
            "full_attention": global_params,
            "sliding_attention": _rope_parameters(cfg, cfg.rotary_base_local),
        }
    else:
        rotary["rope_parameters"] = global_params
    if cfg.use_NTK_by_parts_rope and cfg.hf_config is None:
        cfg.hf_config = _ntk_hf_config(cfg, dim, rotary["rope_parameters"])
    return rotary


def _rope_parameters(cfg: Any, base: float) -> dict[str, Any]:
    if not cfg.use_NTK_by_parts_rope:
        return {"rope_type": "default", "rope_theta": float(base)}
    # TransformerLens's NTK-by-parts is HF's "llama3" rope type, with the same four numbers.
    return {
        "rope_type": "llama3",
        "rope_theta": float(base),
        "factor": cfg.NTK_by_parts_factor,
        "low_freq_factor": cfg.NTK_by_parts_low_freq_factor,
        "high_freq_factor": cfg.NTK_by_parts_high_freq_factor,
        "original_max_position_embeddings": cfg.NTK_original_ctx_len,
    }


def _ntk_hf_config(cfg: Any, dim: int, rope_parameters: Any) -> Any:
    """A minimal HF config for HF's ``llama3`` rope function (it reads head_dim and the params)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=cfg.d_model,
        num_attention_heads=cfg.n_heads,
        head_dim=dim,
        max_position_embeddings=max(cfg.n_ctx, cfg.NTK_original_ctx_len + 1),
        rope_parameters=rope_parameters,
    )


def _attention(cfg: Any) -> dict[str, Any]:
    attention: dict[str, Any] = {
        "kind": "attention",
        "scale_by_inverse_layer": cfg.scale_attn_by_inverse_layer_idx,
        "causal": cfg.attention_dir == "causal",
    }
    if not cfg.use_attn_scale:
        attention["scale"] = 1.0
    elif cfg.attn_scale > 0 and cfg.attn_scale != math.sqrt(cfg.d_head):
        attention["scale"] = 1.0 / cfg.attn_scale
    if cfg.attn_scores_soft_cap > 0:
        attention["softcap"] = cfg.attn_scores_soft_cap
    # TransformerLens applies the local window inside its causal mask: none when bidirectional.
    if cfg.use_local_attn and cfg.window_size and cfg.attention_dir == "causal":
        attention["sliding_window"] = cfg.window_size
        if cfg.attn_types:
            attention["window_layers"] = [t == "local" for t in cfg.attn_types]
    if cfg.use_qk_norm:
        attention["qk_norm"] = {"kind": "rmsnorm", "eps": cfg.eps}
    return attention


def _mlp(cfg: Any) -> dict[str, Any]:
    if cfg.num_experts:  # TransformerLens's experts are gated MLPs, softmax → top-k → renormalise
        return {"kind": "moe", "n_experts": cfg.num_experts, "top_k": cfg.experts_per_token or 1}
    mlp: dict[str, Any] = {"kind": "gated" if cfg.gated_mlp else "plain"}
    if cfg.act_fn == "solu_ln" and not cfg.gated_mlp:
        # SoLU, then a LayerNorm over d_mlp (LNPre unless the blocks use LN), as TransformerLens.
        with_affine = cfg.normalization_type == "LN"
        mlp["act"] = "solu"
        mlp["act_norm"] = {
            "kind": "layernorm",
            "eps": cfg.eps,
            "weight": with_affine,
            "bias": with_affine,
        }
    return mlp


def _unembed(cfg: Any) -> dict[str, Any]:
    unembed: dict[str, Any] = {"kind": "linear"}
    if cfg.output_logits_soft_cap > 0:
        unembed["softcap"] = cfg.output_logits_soft_cap
    return unembed


def _block(cfg: Any) -> dict[str, Any]:
    if cfg.attn_only:  # TransformerLens: no MLP, no ln2, whatever the other layout fields say
        return {"kind": "attn_only"}
    if cfg.parallel_attn_mlp:
        return {"kind": "parallel", "norms": 2}
    if cfg.use_normalization_before_and_after:
        return {"kind": "sandwich"}
    return {"kind": "pre_norm"}


def traits_from_fields(cfg: Any, strict: bool = True) -> dict[str, Any]:
    """Validate :func:`trait_blocks_from_fields` against the built-in trait kinds.

    Args:
        cfg: The config.
        strict: Raise for fields no trait expresses yet; with False, return ``{}`` for them (the
            config stays valid and :meth:`~tlcore.config.HookedTransformerConfig.trait` raises
            when the model is built).

    Returns:
        Resolved traits per slot.

    Raises:
        UnsupportedConfigError: With ``strict``, for fields in :data:`NEEDS_NEW_TRAIT`.
    """
    if not strict and unsupported_fields(cfg):
        return {}
    return {
        slot: resolve_trait(
            block,
            SLOT_KINDS_FROM.get(slot, slot),
            builtin_trait_model,
            {},
            {},
            f"config field traits.{slot}",
        )
        for slot, block in trait_blocks_from_fields(cfg).items()
    }


def loaded_trait_model(slot: str, kind: str) -> type[Trait] | None:
    """The trait class of ``slot``/``kind`` among those loaded (built-ins and loaded plugins').

    A config dict names its kinds; resolving them needs their classes, not the plugin registry
    (which would load every plugin): a plugin's kinds are known once the plugin is imported.

    Returns:
        The class, or None.
    """
    found = builtin_trait_model(slot, kind)
    if found is not None:
        return found
    pending = list(Trait.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        field = cls.model_fields.get("kind")
        if cls.slot == slot and field is not None and field.default == kind:
            return cls
    return None


def traits_from_dicts(traits: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve traits written as dicts (by :meth:`HookedTransformerConfig.to_dict`) back to traits.

    Args:
        traits: Slot → a trait or its dict.

    Returns:
        Slot → trait.

    Raises:
        InvalidConfigError: For a dict whose ``kind`` no loaded trait has (a plugin's kinds are
            known once ``tlcore.registry.get_registry()`` has loaded the plugins).
    """
    out: dict[str, Any] = {}
    for slot, value in traits.items():
        if not isinstance(value, Mapping):
            out[slot] = value
            continue
        kinds_slot = SLOT_KINDS_FROM.get(slot, slot)
        if loaded_trait_model(kinds_slot, str(value.get("kind"))) is None:
            raise InvalidConfigError(
                f"traits.{slot}: no loaded trait kind {value.get('kind')!r} (a plugin's kinds are "
                "known once tlcore.registry.get_registry() has loaded it)"
            )
        out[slot] = resolve_trait(value, kinds_slot, loaded_trait_model, {}, {}, f"traits.{slot}")
    return out

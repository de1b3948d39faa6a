"""The built-in trait kinds: ``(slot, parameter model, component factory)``, in registry order.

The built-in plugin registers them through ``register_traits``, like any plugin. A config written
by hand with TransformerLens's fields takes its traits from this table directly
(:mod:`tlcore.config_traits`), so building such a config never loads plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tlcore.components import (
    alibi,
    attention,
    block,
    cross,
    embed,
    encoder,
    mla,
    mlp,
    moe,
    moe_grouped,
    norms,
    positions,
    rotary,
    unembed,
    xielu,
)
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait

TRAITS: list[tuple[str, type[Trait], Callable[..., Any]]] = [
    ("embedding", embed.TokenEmbeddingTrait, embed.make_embed),
    ("positional", positions.NoPositionTrait, positions.make_no_position),
    ("positional", positions.LearnedPositionTrait, positions.make_learned_positions),
    ("positional", positions.ShortformerTrait, positions.make_shortformer),
    ("positional", rotary.RotaryTrait, rotary.make_rotary),
    ("positional", alibi.AlibiTrait, alibi.make_alibi),
    ("norm", norms.LayerNormTrait, norms.make_layernorm),
    ("norm", norms.RMSNormTrait, norms.make_rmsnorm),
    ("norm", norms.NoNormTrait, norms.make_no_norm),
    ("block", block.PreNormTrait, block.make_pre_norm_block),
    ("block", block.ParallelTrait, block.make_parallel_block),
    ("block", block.PostNormTrait, block.make_post_norm_block),
    ("block", block.SandwichTrait, block.make_sandwich_block),
    ("block", block.PostOnlyTrait, block.make_post_only_block),
    ("attention", attention.AttentionTrait, attention.make_attention),
    ("attention", mla.MLATrait, mla.make_mla),
    ("mlp", mlp.PlainMLPTrait, mlp.make_plain_mlp),
    ("mlp", mlp.GatedMLPTrait, mlp.make_gated_mlp),
    ("mlp", moe.MoETrait, moe.make_moe),
    ("mlp", moe_grouped.GroupedMoETrait, moe_grouped.make_grouped_moe),
    ("mlp", xielu.XIELUMLPTrait, xielu.make_xielu_mlp),
    ("unembed", unembed.UnembedTrait, unembed.make_unembed),
    *encoder.TRAITS,
    *cross.TRAITS,
]


def builtin_trait_model(slot: str, kind: str) -> type[Trait] | None:
    """The built-in parameter model of ``slot``/``kind`` (``final_norm`` takes ``norm`` kinds).

    Returns:
        The model, or None when no built-in kind has that name.

    Example:
        >>> builtin_trait_model("final_norm", "rmsnorm").__name__
        'RMSNormTrait'
    """
    try:
        factory = builtin_component(slot, kind)
    except KeyError:
        return None
    return next(m for _, m, f in TRAITS if f is factory)


def builtin_component(slot: str, kind: str) -> Callable[..., Any]:
    """The built-in component factory of ``slot``/``kind``.

    Returns:
        The factory.

    Raises:
        KeyError: When no built-in kind has that name.
    """
    slot = SLOT_KINDS_FROM.get(slot, slot)
    for s, model, factory in TRAITS:
        if s == slot and model.model_fields["kind"].default == kind:
            return factory
    raise KeyError((slot, kind))

"""The generic builder: one pass from a model plan to modules. No per-architecture code.

Each slot's trait kind names a component factory in the plan; the builder only wires them:
embedding, positional component, one block per layer (attention + MLP + norms, in the block trait's
layout), final norm, unembedding. Components that own norms (qk-norms, an embedding norm) get a
``norm_factory`` from the builder instead of looking norm kinds up themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlcore.components.block import runs_mlp
from tlcore.components.positions import PositionalEncoding
from tlcore.plan import ModelPlan
from tlcore.spec.traits import Trait


@dataclass
class BuiltModules:
    """The top-level modules of a model, as TransformerLens names them."""

    embed: nn.Module
    pos_embed: PositionalEncoding
    blocks: nn.ModuleList
    ln_final: nn.Module | None
    unembed: nn.Module


def build_modules(plan: ModelPlan) -> BuiltModules:
    """Assemble all modules of a plan from its component factories.

    Args:
        plan: The model plan.

    Returns:
        The modules (parameters uninitialised unless the caller initialises them).
    """
    cfg = plan.cfg

    def make(slot: str, *args: object) -> nn.Module:
        trait = cfg.trait(slot)
        return plan.component(slot, trait.kind)(trait, *args)

    def norm_factory(trait: Trait, d: int | tuple[int, ...]) -> nn.Module | None:
        return plan.component("norm", trait.kind)(trait, d, cfg.dtype)

    def make_norm() -> nn.Module | None:
        return norm_factory(cfg.trait("norm"), cfg.d_model)

    positional = make("positional", cfg)
    assert isinstance(positional, PositionalEncoding), "positional components subclass it"
    has_mlp = runs_mlp(cfg.trait("block"))  # attn_only: no MLP
    blocks = []
    for layer in range(cfg.n_layers):
        attn = make("attention", cfg, layer, positional, norm_factory)
        mlp = make("mlp", cfg, layer) if has_mlp else None
        blocks.append(make("block", cfg, layer, attn, mlp, make_norm))
    return BuiltModules(
        embed=make("embedding", cfg, norm_factory),
        pos_embed=positional,
        blocks=nn.ModuleList(blocks),
        ln_final=norm_factory(cfg.trait("final_norm"), cfg.d_model),
        unembed=make("unembed", cfg),
    )

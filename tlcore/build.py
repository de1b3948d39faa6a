"""The generic builder: one pass from a model plan to modules. No per-architecture code.

Each slot's trait kind names a component factory in the plan; the builder only wires them:
embedding, positional component, one block per layer (a sequence mixer + MLP + norms, in the block
trait's layout), final norm, unembedding. Each layer's sequence mixer is the ``mixer`` trait's where
it holds that layer (:meth:`~tlcore.components.mixer.MixerTrait.holds`), else attention; a spec
without an ``mlp`` trait builds blocks without an MLP. Components that own norms (qk-norms, an
embedding norm) get a ``norm_factory`` from the builder instead of looking norm kinds up themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlcore.components.block import runs_mlp
from tlcore.components.mixer import MixerTrait
from tlcore.components.positions import PositionalEncoding
from tlcore.errors import SpecError
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
    mixer = cfg.traits.get("mixer")
    # A block without an MLP branch: attn_only blocks, or specs without an ``mlp`` slot (Mamba).
    has_mlp = "mlp" in cfg.traits and runs_mlp(cfg.trait("block"))
    blocks = []
    for layer in range(cfg.n_layers):
        if isinstance(mixer, MixerTrait) and mixer.holds(layer):
            seq_mixer = make("mixer", cfg, layer)
        elif "attention" in cfg.traits:
            seq_mixer = make("attention", cfg, layer, positional, norm_factory)
        else:
            raise SpecError(f"layer {layer} holds no mixer and the spec has no attention")
        mlp = make("mlp", cfg, layer) if has_mlp else None
        blocks.append(make("block", cfg, layer, seq_mixer, mlp, make_norm))
    return BuiltModules(
        embed=make("embedding", cfg, norm_factory),
        pos_embed=positional,
        blocks=nn.ModuleList(blocks),
        ln_final=norm_factory(cfg.trait("final_norm"), cfg.d_model),
        unembed=make("unembed", cfg),
    )

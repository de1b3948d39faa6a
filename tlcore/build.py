"""The generic builder: one pass from a resolved config (its traits) to modules.

No per-architecture code.

Each slot's trait kind names a component factory in the registry; the builder only wires them:
embedding, positional component, one block per layer (attention + MLP + norms, in the block trait's
layout), final norm, unembedding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tlcore.components.norms import build_norm
from tlcore.components.positions import PositionalEncoding
from tlcore.config import HookedTransformerConfig
from tlcore.registry import get_registry


@dataclass
class BuiltModules:
    """The top-level modules of a model, as TransformerLens names them."""

    embed: nn.Module
    pos_embed: PositionalEncoding
    blocks: nn.ModuleList
    ln_final: nn.Module | None
    unembed: nn.Module


def build_modules(cfg: HookedTransformerConfig) -> BuiltModules:
    """Assemble all modules for ``cfg`` from the registered trait components.

    Args:
        cfg: A resolved config (with ``traits``).

    Returns:
        The modules (parameters uninitialised unless the caller initialises them).
    """
    registry = get_registry()

    def component(slot: str):  # noqa: ANN202 - returns the slot's factory
        return registry.component(slot, cfg.trait(slot).kind)

    embed = component("embedding")(cfg.trait("embedding"), cfg)
    positional = component("positional")(cfg.trait("positional"), cfg)
    norm_trait = cfg.trait("norm")

    def make_norm() -> nn.Module | None:
        return build_norm(norm_trait, cfg.d_model, cfg.dtype)

    blocks = []
    for layer in range(cfg.n_layers):
        attn = component("attention")(cfg.trait("attention"), cfg, layer, positional)
        mlp = component("mlp")(cfg.trait("mlp"), cfg, layer)
        blocks.append(component("block")(cfg.trait("block"), cfg, layer, attn, mlp, make_norm))
    ln_final = build_norm(cfg.trait("final_norm"), cfg.d_model, cfg.dtype)
    unembed = component("unembed")(cfg.trait("unembed"), cfg)
    return BuiltModules(embed, positional, nn.ModuleList(blocks), ln_final, unembed)

"""Small random models for tests: from a spec's test config or straight from traits.

Weights are far from the identity (norm weights around 1 ± 0.5, non-zero biases, fan-in scaled
matrices), so folding, centring and every decomposition is exercised, not passed by accident.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tlcore.components.attention import AttentionTrait, QKVOFlags
from tlcore.components.block import PreNormTrait
from tlcore.components.embed import TokenEmbeddingTrait
from tlcore.components.mlp import PlainMLPTrait
from tlcore.components.norms import LayerNormTrait, Norm
from tlcore.components.positions import LearnedPositionTrait
from tlcore.components.unembed import UnembedTrait
from tlcore.config import HookedTransformerConfig
from tlcore.config_resolution import resolve_config
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.spec.traits import SLOTS
from tlcore.testing.tiny import tiny_hf_config


def randomise_(model: torch.nn.Module, seed: int = 0) -> None:
    """Fill every parameter far from the identity, so nothing passes by accident.

    Norm parameters (any :class:`~tlcore.components.norms.Norm`'s, whatever its kind) and other
    vectors that multiply (gates) around ``1 ± 0.5``; biases and sinks ``0.3 · N(0, 1)``;
    embeddings ``N(0, 1)``; matrices fan-in scaled.
    """
    generator = torch.Generator().manual_seed(seed)
    owners = dict(model.named_modules())
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            owner_name, _, leaf = name.rpartition(".")
            is_bias = leaf.startswith("b") or leaf in ("bias", "sinks")
            if isinstance(owners[owner_name], Norm) and not is_bias:
                value = 1.0 + 0.5 * noise  # norm weights, 1+w offsets, qk- and post-norms
            elif is_bias:
                value = 0.3 * noise
            elif leaf in ("W_E", "W_pos"):
                value = noise
            elif param.dim() <= 1:
                value = 1.0 + 0.5 * noise  # a per-channel multiplier (a residual gate)
            else:
                if leaf == "weight":  # nn.Linear: [out, in]
                    fan_in = param.shape[-1]
                elif leaf == "W_O":  # [head, d_head, d_model]
                    fan_in = param.shape[0] * param.shape[1]
                else:  # [..., d_in, d_out]
                    fan_in = param.shape[-2]
                value = noise / math.sqrt(fan_in)
            param.copy_(value.to(param.dtype))


def spec_model(
    name: str, dtype: torch.dtype = torch.float32, seed: int = 0, variant: str | None = None
) -> HookedTransformer:
    """A registered spec's model on its tiny test config, randomised (no checkpoint)."""
    spec = get_registry().get_spec(name)
    cfg = resolve_config(spec, tiny_hf_config(spec, variant), dtype=dtype)
    model = HookedTransformer(cfg)
    randomise_(model, seed)
    return model


def trait_model(
    traits: dict[str, Any], dtype: torch.dtype = torch.float32, seed: int = 0, **fields: Any
) -> HookedTransformer:
    """A model straight from traits (layouts no built-in spec covers yet)."""
    values: dict[str, Any] = dict(
        d_model=32,
        n_layers=2,
        n_ctx=16,
        d_head=8,
        n_heads=4,
        d_vocab=61,
        d_mlp=48,
        act_fn="gelu_new",
        dtype=dtype,
    )
    values.update(fields)
    for slot in SLOTS:
        if slot in traits:
            traits[slot].apply_to_cfg(values)
    model = HookedTransformer(HookedTransformerConfig(**values, traits=dict(traits)))
    randomise_(model, seed)
    return model


def base_traits(**override: Any) -> dict[str, Any]:
    """GPT-2-like traits (LayerNorm, pre-norm, biases, learned positions), ``override`` applied."""
    traits: dict[str, Any] = {
        "embedding": TokenEmbeddingTrait(),
        "positional": LearnedPositionTrait(),
        "norm": LayerNormTrait(),
        "block": PreNormTrait(),
        "attention": AttentionTrait(bias=QKVOFlags(q=True, k=True, v=True, o=True)),
        "mlp": PlainMLPTrait(),
        "unembed": UnembedTrait(bias=True),
    }
    traits.update(override)
    return traits


def tokens_for(model: HookedTransformer, seed: int = 1) -> torch.Tensor:
    """A seeded ``[3, 11]`` token batch for ``model``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (3, 11), generator=generator)

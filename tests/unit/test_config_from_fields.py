"""Toy models from TransformerLens-style configs written by hand (no spec, no checkpoint)."""

from __future__ import annotations

import pytest
import torch

from tlcore import HookedTransformer, HookedTransformerConfig
from tlcore.config_resolution import resolve_config
from tlcore.errors import SpecError
from tlcore.registry import get_registry
from tlcore.testing.tiny import tiny_hf_config

BASE = {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_head": 16, "d_vocab": 512, "n_ctx": 64}


def test_gpt2_like_fields_build_the_gpt2_architecture() -> None:
    handmade = HookedTransformer(
        {**BASE, "act_fn": "gelu_new", "normalization_type": "LN", "d_mlp": 256}
    )
    spec = get_registry().get_spec("gpt2")
    from_spec = HookedTransformer(resolve_config(spec, tiny_hf_config(spec)))
    assert set(handmade.state_dict()) == set(from_spec.state_dict())
    from_spec.load_state_dict(handmade.state_dict())
    tokens = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(handmade(tokens), from_spec(tokens), atol=1e-5)


def test_llama_like_fields() -> None:
    cfg = HookedTransformerConfig(
        **BASE,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        n_key_value_heads=2,
        rotary_dim=8,
    )
    model = HookedTransformer(cfg)
    assert cfg.d_mlp == 4 * cfg.d_model
    assert cfg.traits["positional"].dim == 8 and cfg.traits["mlp"].kind == "gated"
    _, cache = model.run_with_cache(torch.randint(0, 512, (1, 6)))
    assert cache["blocks.1.attn.hook_rot_k"].shape == (1, 6, 2, 16)
    assert cache["blocks.1.mlp.hook_pre_linear"].shape == (1, 6, 256)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attn_only", True, "attn_only"),
        ("normalization_type", "BatchNorm", "normalization_type"),
        ("positional_embedding_type", "relative_positional_bias", "positional_embedding_type"),
    ],
)
def test_unsupported_fields_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        HookedTransformerConfig(**BASE, act_fn="relu", **{field: value})


def test_pre_norm_fields_build_parameter_free_norms() -> None:
    model = HookedTransformer({**BASE, "act_fn": "relu", "normalization_type": "LNPre"})
    assert model.blocks[0].ln1.w is None and model.blocks[0].ln1.b is None

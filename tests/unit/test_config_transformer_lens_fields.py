"""HookedTransformerConfig takes TransformerLens 2.x's fields, defaults and derivations.

Facts come from TransformerLens 2.18 itself: ``tests/data/transformer_lens_2/configs.json`` holds
``cfg.to_dict()`` of its ``HookedTransformerConfig`` for hand-written configs and for pretrained
architectures (written by ``tools/transformer_lens_fixtures.py``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tlcore import HookedTransformer, HookedTransformerConfig
from tlcore.config_fields import TRANSFORMER_LENS_CONFIG_FIELDS, to_torch_dtype
from tlcore.errors import InvalidConfigError, UnsupportedConfigError

DATA = json.loads(
    (
        Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2" / "configs.json"
    ).read_text()
)
HAND_WRITTEN = DATA["hand_written"]
PRETRAINED = DATA["pretrained"]
BASE = {"n_layers": 2, "d_model": 16, "d_head": 4, "n_ctx": 8, "d_vocab": 20, "device": "cpu"}


def comparable(key: str, value: Any) -> Any:
    if key == "dtype":
        return to_torch_dtype(value)
    if key == "device":
        return str(value)
    return value


def assert_same_fields(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for key in TRANSFORMER_LENS_CONFIG_FIELDS:
        assert comparable(key, ours[key]) == comparable(key, theirs[key]), key


def test_the_field_list_is_transformer_lens_2s() -> None:
    for layout in [*HAND_WRITTEN.values(), *({"to_dict": d} for d in PRETRAINED.values())]:
        assert set(layout["to_dict"]) == set(TRANSFORMER_LENS_CONFIG_FIELDS)
    assert len(TRANSFORMER_LENS_CONFIG_FIELDS) == 69


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_defaults_and_derivations_match_transformer_lens(name: str) -> None:
    cfg = HookedTransformerConfig(**HAND_WRITTEN[name]["kwargs"])
    assert_same_fields(cfg.to_dict(), HAND_WRITTEN[name]["to_dict"])


@pytest.mark.parametrize(
    "layout",
    [pytest.param(v["to_dict"], id=k) for k, v in sorted(HAND_WRITTEN.items())]
    + [pytest.param(v, id=k) for k, v in sorted(PRETRAINED.items())],
)
def test_transformer_lens_dicts_round_trip(layout: dict[str, Any]) -> None:
    cfg = HookedTransformerConfig.from_dict(dict(layout))
    assert_same_fields(cfg.to_dict(), layout)
    again = HookedTransformerConfig.from_dict(cfg.to_dict())  # tlcore's own dict, traits included
    assert again == cfg and again.traits == cfg.traits


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained_layouts_build_at_toy_size(name: str) -> None:
    """A TransformerLens pretrained config's traits build (sizes shrunk to a toy)."""
    layout = dict(PRETRAINED[name])
    n_kv = 1 if layout["n_key_value_heads"] else None
    attn_types = layout["attn_types"][:2] if layout["attn_types"] else None
    layout.update(
        n_layers=2, d_model=16, d_head=4, n_heads=4, n_key_value_heads=n_kv, d_mlp=32,
        d_vocab=30, d_vocab_out=-1, n_ctx=16, attn_types=attn_types, rotary_dim=None,
        init_weights=True, seed=0,
    )  # fmt: skip
    model = HookedTransformer(HookedTransformerConfig.from_dict(layout))
    logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4, 5]]))
    assert logits.shape == (1, 5, 30) and torch.isfinite(logits).all()
    assert model.cfg.original_architecture == layout["original_architecture"]
    if layout["positional_embedding_type"] == "rotary":
        assert "blocks.0.attn.hook_rot_q" in cache
    if layout["use_normalization_before_and_after"]:
        assert "blocks.1.ln1_post.hook_scale" in cache


def test_derivations() -> None:
    cfg = HookedTransformerConfig(n_layers=3, d_model=64, n_ctx=16, d_head=8, act_fn="relu")
    assert cfg.n_heads == 8 and cfg.d_mlp == 256
    assert cfg.initializer_range == pytest.approx(0.8 / 8)
    assert cfg.attn_scale == pytest.approx(np.sqrt(8))
    assert cfg.n_params == 3 * (64 * 8 * 8 * 4 + 64 * 256 * 2)
    assert cfg.d_vocab == -1 and cfg.d_vocab_out == -1  # unset until a tokenizer gives it
    assert cfg.device in ("cpu", "cuda", "mps")
    gated_moe = HookedTransformerConfig(
        **BASE, act_fn="silu", gated_mlp=True, num_experts=4, experts_per_token=2
    )
    assert gated_moe.n_params == 2 * (16 * 4 * 4 * 4 + (16 * 64 * 3 + 16) * 4)
    assert (
        HookedTransformerConfig(**BASE, init_mode="xavier_normal", act_fn="relu").initializer_range
        == 1.0
    )
    rotary = HookedTransformerConfig(**BASE, act_fn="relu", positional_embedding_type="rotary")
    assert rotary.rotary_dim == 4
    attn_only = HookedTransformerConfig(**BASE, attn_only=True)
    assert attn_only.d_mlp is None and attn_only.n_params == 2 * 16 * 4 * 4 * 4


def test_seed_seeds_python_numpy_and_torch() -> None:
    HookedTransformerConfig(**BASE, act_fn="relu", seed=123)
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    HookedTransformerConfig(**BASE, act_fn="relu", seed=123)
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())
    cfg = HookedTransformerConfig(**BASE, act_fn="relu")
    cfg.set_seed_everywhere(123)
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())


def test_unwrap_and_is_layer_norm_activation() -> None:
    cfg = HookedTransformerConfig.unwrap({**BASE, "act_fn": "solu_ln"})
    assert isinstance(cfg, HookedTransformerConfig)
    assert HookedTransformerConfig.unwrap(cfg) is cfg
    assert cfg.is_layer_norm_activation()
    assert not HookedTransformerConfig(**BASE, act_fn="solu").is_layer_norm_activation()
    assert repr(cfg).startswith("HookedTransformerConfig:\n{")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"positional_embedding_type": "relative_positional_bias"}, "relative_positional_bias"),
        ({"load_in_4bit": True}, "load_in_4bit"),
    ],
)
def test_fields_without_a_trait_are_accepted_and_refused_at_build(
    fields: dict[str, Any], named: str
) -> None:
    cfg = HookedTransformerConfig(**{"act_fn": "relu", **BASE, **fields})
    assert HookedTransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UnsupportedConfigError, match=named):
        HookedTransformer(cfg)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"normalization_type": "BatchNorm"}, "normalization_type"),
        ({"positional_embedding_type": "sinusoidal"}, "positional_embedding_type"),
        ({"act_fn": None}, "act_fn"),
        ({"act_fn": "swoosh"}, "act_fn"),
        ({"init_mode": "orthogonal"}, "init_mode"),
        ({"attention_dir": "sideways"}, "attention_dir"),
        ({"use_local_attn": True}, "window_size"),
        ({"num_experts": 4}, "experts_per_token"),
        ({"dtype": "float99"}, "dtype"),
    ],
)
def test_invalid_values_are_config_errors(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidConfigError, match=named) as info:
        cfg = HookedTransformerConfig(**{"act_fn": "relu", **BASE, **fields})
        HookedTransformer(cfg)
    assert isinstance(info.value, ValueError)  # TransformerLens raised AssertionError/ValueError


def test_d_vocab_comes_from_the_tokenizer() -> None:
    from tlcore_offline_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_ctx=8, act_fn="relu")
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    assert cfg.d_vocab == cfg.d_vocab_out == max(tokenizer.get_vocab().values()) + 1 == 50257
    assert model.W_E.shape == (50257, 8) and model.W_U.shape == (8, 50257)
    with pytest.raises(InvalidConfigError, match="d_vocab"):
        HookedTransformer(
            HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_ctx=8, act_fn="relu")
        )


def test_tokenizer_name_loads_a_local_tokenizer(tmp_path: Path) -> None:
    from tlcore_offline_models import gpt2_tokenizer

    gpt2_tokenizer().save_pretrained(tmp_path)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, d_head=4, n_ctx=8, act_fn="relu", tokenizer_name=str(tmp_path)
    )
    model = HookedTransformer(cfg)
    assert model.tokenizer is not None and cfg.d_vocab == 50257
    assert model.to_str_tokens("Hello world", prepend_bos=False) == ["Hello", " world"]


def test_init_weights_false_leaves_parameters_alone() -> None:
    torch.manual_seed(0)
    a = HookedTransformer({**BASE, "act_fn": "relu", "seed": 5})
    b = HookedTransformer({**BASE, "act_fn": "relu", "seed": 5})
    assert torch.equal(a.W_Q, b.W_Q)  # the seed makes init reproducible
    c = HookedTransformer({**BASE, "act_fn": "relu", "init_weights": False})
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.W_Q, a.W_Q)


def test_attention_dir_bidirectional_sees_later_tokens() -> None:
    for direction, sees_future in (("causal", False), ("bidirectional", True)):
        model = HookedTransformer({**BASE, "act_fn": "relu", "attention_dir": direction, "seed": 0})
        a = model(torch.tensor([[1, 2, 3, 4]]))
        b = model(torch.tensor([[1, 2, 3, 9]]))
        assert (not torch.allclose(a[0, 0], b[0, 0])) == sees_future

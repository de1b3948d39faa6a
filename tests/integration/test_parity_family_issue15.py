"""Issue 15's families vs HuggingFace: olmo3, smollm3, cohere2, exaone4, glm, glm4, olmoe,
flex_olmo, ernie4_5, seed_oss, hunyuan_v1_dense, apertus and the Qwen2-VL text tower.

Every spec and test variant goes through the parity tool (shared with the snapshot check, so no
extra cost), then one feature of a loaded tlcore model is broken at a time and parity must fail:
each test config really exercises its NoPE layers, windows, rotary style, qk-norm placement,
post-norms and learned activation.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tlcore.registry import get_registry
from tlcore.testing.sensitivity import (
    assert_detects,
    copy_trait,
    no_qk_norm,
    no_windows,
    rotate_half,
    zero_q_bias,
)
from tlcore.testing.tiny import spec_cases

FAMILY = [
    *("olmo3", "smollm3", "cohere2", "exaone4", "glm", "glm4", "olmoe", "flex_olmo"),
    *("ernie4_5", "seed_oss", "hunyuan_v1_dense", "apertus", "qwen2_vl_text"),
]
ATOL = 1e-4
CASES = spec_cases(FAMILY)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases: Any, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    spec = get_registry().get_spec(name)
    n_layers = {**spec.test_config, **spec.test_variants.get(variant or "", {})}.get(
        "num_hidden_layers", 2
    )
    assert len(result.layer_max_diffs) == n_layers
    assert max(result.layer_max_diffs) < ATOL, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL, result.message


def _rotary_everywhere(m: Any) -> None:
    copy_trait(m.pos_embed, layers=None)


def _qk_norm_before_rotary(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, qk_norm_after_rotary=False)


def _swap_post_norms(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            w = block.ln1_post.w.clone()
            block.ln1_post.w.copy_(block.ln2_post.w)
            block.ln2_post.w.copy_(w)


def _swap_xielu_alphas(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            a = block.mlp.alpha_p.clone()
            block.mlp.alpha_p.copy_(block.mlp.alpha_n)
            block.mlp.alpha_n.copy_(a)


def _swap_gate_and_up(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            gate = block.mlp.W_gate.clone()
            block.mlp.W_gate.copy_(block.mlp.W_in)
            block.mlp.W_in.copy_(gate)


def _no_ntk_alpha(m: Any) -> None:
    params = {k: v for k, v in m.pos_embed.trait.rope_parameters.items() if k != "alpha"}
    copy_trait(m.pos_embed, rope_parameters={**params, "rope_type": "default"})


def _no_clip(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, clip_qkv=None)


SENSITIVITY = [
    ("olmo3", None, no_windows),
    ("olmo3", None, _swap_post_norms),
    ("smollm3", None, _rotary_everywhere),
    ("smollm3", "sliding", no_windows),
    ("cohere2", None, _rotary_everywhere),
    ("cohere2", None, no_windows),
    ("exaone4", None, _rotary_everywhere),
    ("exaone4", None, no_qk_norm),
    ("glm", None, rotate_half),
    ("glm", None, _swap_gate_and_up),
    ("glm", None, zero_q_bias),
    ("glm4", None, _swap_post_norms),
    ("olmoe", None, no_qk_norm),
    ("olmoe", "clip_qkv", _no_clip),
    ("flex_olmo", None, _swap_post_norms),
    ("ernie4_5", None, rotate_half),
    ("seed_oss", None, zero_q_bias),
    ("hunyuan_v1_dense", None, _qk_norm_before_rotary),
    ("hunyuan_v1_dense", "ntk_alpha", _no_ntk_alpha),
    ("apertus", None, _swap_xielu_alphas),
    ("apertus", None, no_qk_norm),
]


@pytest.mark.parametrize(
    ("name", "variant", "breaker"),
    SENSITIVITY,
    ids=[f"{n}-{v or 'base'}-{b.__name__.strip('_')}" for n, v, b in SENSITIVITY],
)
def test_parity_detects_a_broken_feature(
    parity_cases: Any, name: str, variant: str | None, breaker: Any
) -> None:
    assert_detects(parity_cases, name, variant, breaker, atol=ATOL)

"""Qwen3.5 and Qwen3.5-MoE (issue 15, item 4): specs on qwen3_next's traits, and their wrappers.

Every spec and variant goes through the parity tool (shared with the snapshot check). The released
checkpoints are ``Qwen3_5ForConditionalGeneration`` / ``Qwen3_5MoeForConditionalGeneration``
wrappers: a tiny one of each is built with transformers' own classes (a one-block vision tower),
written with ``save_pretrained`` and loaded through tlcore's text tower; text-only prompts must give
the wrapper's logits and every layer's residual stream within 1e-4, and greedy generation with the
recurrent state and KV cache must give HF's tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.loading.sources import SafetensorsDirSource
from tlcore.loading.text_tower import TextTowerSource
from tlcore.parity.compare import compare_model, parity_tokens
from tlcore.registry import get_registry
from tlcore.testing.sensitivity import assert_detects
from tlcore.testing.tiny import fill_seeded_, hf_model_from_config, spec_cases

SPECS = ["qwen3_5", "qwen3_5_moe"]
CASES = spec_cases(SPECS)
ATOL = 1e-4
# A one-block vision tower whose output width is the language model's (32).
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32)
VISION.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
VISION.update(num_position_embeddings=16)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases: Any, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 3
    assert max(result.layer_max_diffs) < ATOL and result.logits_max_diff < ATOL
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < 1e-10


def _swap_q_and_k(m: Any) -> None:
    """The order of in_proj_qkv's row blocks (q, then k)."""
    with torch.no_grad():
        for block in m.blocks:
            if hasattr(block, "linear_attn"):
                q = block.linear_attn.W_q.clone()
                block.linear_attn.W_q.copy_(block.linear_attn.W_k)
                block.linear_attn.W_k.copy_(q)


def _swap_b_and_a(m: Any) -> None:
    """in_proj_b (write strength) and in_proj_a (decay) read apart."""
    with torch.no_grad():
        for block in m.blocks:
            if hasattr(block, "linear_attn"):
                b = block.linear_attn.W_b.clone()
                block.linear_attn.W_b.copy_(block.linear_attn.W_a)
                block.linear_attn.W_a.copy_(b)


def _plain_shared_expert(m: Any) -> None:
    """The shared expert's sigmoid gate left out."""
    with torch.no_grad():
        for block in m.blocks:
            block.mlp.shared_expert_gate.weight.fill_(1e4)  # sigmoid -> 1


SENSITIVITY = [
    ("qwen3_5", None, _swap_q_and_k),
    ("qwen3_5", None, _swap_b_and_a),
    ("qwen3_5_moe", None, _swap_q_and_k),
    ("qwen3_5_moe", None, _plain_shared_expert),
]


@pytest.mark.parametrize(
    ("name", "variant", "breaker"),
    SENSITIVITY,
    ids=[f"{n}-{b.__name__.strip('_')}" for n, _, b in SENSITIVITY],
)
def test_parity_detects_a_broken_feature(
    parity_cases: Any, name: str, variant: str | None, breaker: Any
) -> None:
    assert_detects(parity_cases, name, variant, breaker, atol=ATOL)


def _wrapper(spec_name: str, folder: Path) -> Any:
    """A tiny Qwen3.5(-MoE) wrapper whose text config is the spec's test config, saved."""
    from transformers import AutoConfig

    spec = get_registry().get_spec(spec_name)
    text = {"model_type": spec.hf.model_types[0], **spec.test_config}
    config = AutoConfig.for_model(spec_name, text_config=text, vision_config=VISION)
    hf_model = hf_model_from_config(
        config, "AutoModelForImageTextToText", dtype=torch.float32, attn_implementation="eager"
    )
    fill_seeded_(hf_model)
    hf_model.eval().save_pretrained(folder)
    hf_model.generation_config.eos_token_id = None
    return hf_model


@pytest.fixture(scope="module", params=SPECS)
def wrapper(request: Any, tmp_path_factory: Any) -> tuple[str, Path, Any]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, folder, _wrapper(request.param, folder)


def test_wrapper_text_only_logits_match(wrapper: tuple[str, Path, Any]) -> None:
    name, folder, hf_model = wrapper
    assert type(hf_model).__name__.endswith("ForConditionalGeneration")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert model.cfg.spec_name == name
    assert model.cfg.original_architecture == type(hf_model).__name__
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, ATOL, name, "wrapper")
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 3
    # The vision tower's tensors are hidden from the loader.
    source = TextTowerSource(SafetensorsDirSource(folder), get_registry().text_towers[name][0])
    assert any(k.startswith("model.visual.") for k in source.skipped)
    assert all(k.startswith(("model.", "lm_head.")) for k in source.keys())


def test_wrapper_kv_cached_greedy_generation_equals_hfs(wrapper: tuple[str, Path, Any]) -> None:
    _, folder, hf_model = wrapper
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = torch.tensor([[2, 17, 301, 44, 9, 250, 77], [5, 400, 3, 88, 123, 6, 31]])
    ours = model.generate(tokens, 8, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=tokens, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours, theirs)
    uncached = model.generate(
        tokens, 8, do_sample=False, stop_at_eos=False, verbose=False, use_past_kv_cache=False
    )
    assert torch.equal(ours, uncached)


@pytest.mark.parametrize("name", SPECS)
def test_released_checkpoint_keys_map_to_the_language_model(name: str) -> None:
    """Real checkpoints: model.language_model.*, model.visual.*, lm_head.*, and the MTP head."""
    tower = get_registry().text_towers[name][0]
    assert tower.text_key("model.language_model.layers.0.linear_attn.in_proj_qkv.weight") == (
        "model.layers.0.linear_attn.in_proj_qkv.weight"
    )
    assert tower.text_key("lm_head.weight") == "lm_head.weight"
    assert tower.text_key("model.visual.blocks.0.attn.qkv.weight") is None
    assert tower.text_key("mtp.layers.0.mlp.gate_proj.weight") is None

"""Llama 4 (llama4_text and the llama4 wrapper's text tower) vs HuggingFace (issue 15, item 2).

The tiny config has four layers: 0-2 rotate their interleaved pairs, attend in chunks of 5 and
L2-normalise q and k after rotary; layer 3 is NoPE, attends fully and scales its queries by the
temperature ``1 + 0.5 * log1p(floor((n + 1) / 4))``. Every variant goes through the parity tool
(shared with the snapshot check); each feature is then broken alone and parity must fail; the
attention pattern and scores are checked against the formulas; cached forwards and greedy
generation run past a chunk boundary and past several temperature steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.loading.sources import SafetensorsDirSource
from tlcore.loading.text_tower import TextTowerSource
from tlcore.parity.compare import compare_model, parity_tokens
from tlcore.registry import get_registry
from tlcore.testing.sensitivity import assert_detects, copy_trait, no_qk_norm, rotate_half
from tlcore.testing.tiny import fill_seeded_, spec_cases

ATOL = 1e-4
CASES = spec_cases(["llama4_text"])
CHUNK, FLOOR, ATTN_SCALE = 5, 4, 0.5  # the spec's test_config
TOKENS = torch.tensor([[1, 17, 301, 44, 9, 250, 77, 5, 130, 411, 66, 3]])


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases: Any, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 4
    assert max(result.layer_max_diffs) < ATOL, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL, result.message


def _no_chunks(m: Any) -> None:
    for block in m.blocks:
        block.attn.chunk = None


def _rotary_everywhere(m: Any) -> None:
    copy_trait(m.pos_embed, layers=None)


def _no_temperature(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, temperature_layers=None)


def _weigh_expert_outputs(m: Any) -> None:
    for block in m.blocks:
        if hasattr(block.mlp, "experts"):
            copy_trait(block.mlp, weigh_input=False)


def _softmax_router(m: Any) -> None:
    for block in m.blocks:
        if hasattr(block.mlp, "experts"):
            copy_trait(block.mlp, routing="topk_softmax")


SENSITIVITY = [
    (None, _no_chunks),
    (None, _rotary_everywhere),
    (None, rotate_half),
    (None, no_qk_norm),
    (None, _no_temperature),
    ("explicit_nope", _no_temperature),
    (None, _weigh_expert_outputs),
    (None, _softmax_router),
]


@pytest.mark.parametrize(
    ("variant", "breaker"),
    SENSITIVITY,
    ids=[f"{v or 'base'}-{b.__name__.strip('_')}" for v, b in SENSITIVITY],
)
def test_parity_detects_a_broken_feature(parity_cases: Any, variant: str | None, breaker: Any):
    assert_detects(parity_cases, "llama4_text", variant, breaker, atol=ATOL)


@pytest.fixture(scope="module")
def model_and_hf(tiny_checkpoint: Any) -> tuple[HookedTransformer, Any]:
    folder, hf_model = tiny_checkpoint("llama4_text")
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu"), hf_model


def test_chunks_nope_layers_and_temperature_in_the_scores(model_and_hf: Any) -> None:
    model, _ = model_and_hf
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS)
    n, d_head = TOKENS.shape[1], model.cfg.d_head
    q_idx, k_idx = torch.arange(n)[:, None], torch.arange(n)[None, :]
    causal = k_idx <= q_idx
    chunked = causal & (q_idx // CHUNK == k_idx // CHUNK)
    # Rotary layer 0: chunked pattern; scores of the L2-normalised rotated heads (GQA: 2 per kv).
    pattern0 = cache["pattern", 0][0]
    assert (pattern0[:, ~chunked] == 0).all() and (pattern0[:, chunked] > 0).all()
    q, k = cache["blocks.0.attn.hook_rot_q"][0], cache["blocks.0.attn.hook_rot_k"][0]
    assert not torch.allclose(q, cache["blocks.0.attn.hook_q"][0])  # rotated
    eps = model.cfg.eps

    def l2(x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    k = k.repeat_interleave(2, dim=1)
    expected0 = torch.einsum("qhd,khd->hqk", l2(q), l2(k)) / math.sqrt(d_head)
    scores0 = cache["attn_scores", 0][0]
    torch.testing.assert_close(scores0[:, chunked], expected0[:, chunked], atol=1e-5, rtol=1e-5)
    # NoPE layer 3: full causal pattern, unrotated heads, queries scaled by the temperature.
    pattern3 = cache["pattern", 3][0]
    assert (pattern3[:, causal] > 0).all()
    q3, k3 = cache["blocks.3.attn.hook_rot_q"][0], cache["blocks.3.attn.hook_rot_k"][0]
    assert torch.equal(q3, cache["blocks.3.attn.hook_q"][0])  # NoPE: no rotation, no qk-norm
    temperature = torch.tensor(
        [1 + ATTN_SCALE * math.log1p(math.floor((i + 1) / FLOOR)) for i in range(n)]
    )
    k3 = k3.repeat_interleave(2, dim=1)
    expected3 = torch.einsum("qhd,khd->hqk", q3, k3) / math.sqrt(d_head)
    expected3 = expected3 * temperature[None, :, None]
    scores3 = cache["attn_scores", 3][0]
    torch.testing.assert_close(scores3[:, causal], expected3[:, causal], atol=1e-5, rtol=1e-5)


def test_cached_forward_equals_the_full_forward(model_and_hf: Any) -> None:
    """Chunks and temperatures count absolute positions: 7 cached tokens, then 1 + 4 more."""
    model, _ = model_and_hf
    with torch.no_grad():
        full = model(TOKENS)
        cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 1)
        steps = [
            model(TOKENS[:, :7], past_kv_cache=cache),
            model(TOKENS[:, 7:8], past_kv_cache=cache),
        ]
        steps.append(model(TOKENS[:, 8:], past_kv_cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", [None, "explicit_nope", "moe_step2"])
def test_kv_cached_greedy_equals_hf_generate(tiny_checkpoint: Any, variant: str | None) -> None:
    """Prompt 7 + 12 new tokens: past two chunk boundaries (5, 10, 15) and four temperatures."""
    folder, hf_model = tiny_checkpoint("llama4_text", variant)
    hf_model.generation_config.eos_token_id = None
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    prompt = TOKENS[:, :7]
    ours = model.generate(prompt, 12, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    uncached = model.generate(
        prompt, 12, do_sample=False, stop_at_eos=False, verbose=False, use_past_kv_cache=False
    )
    assert torch.equal(ours, uncached)


def test_left_padded_batch_generation_equals_hf(model_and_hf: Any) -> None:
    """Left padding shifts the chunks (positions count from each row's first token), while the
    temperature counts cache indices, padding included, as HF does."""
    model, hf_model = model_and_hf
    hf_model.generation_config.eos_token_id = None
    tokens = torch.randint(3, 512, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[1, :2] = mask[2, :3] = 0
    tokens = tokens * mask
    kwargs: dict[str, Any] = dict(do_sample=False, stop_at_eos=False, verbose=False)
    ours = model.generate(tokens, 10, attention_mask=mask, **kwargs)
    theirs = hf_model.generate(
        tokens, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0
    )
    assert torch.equal(ours, theirs)


def _wrapper(folder: Path) -> Any:
    import transformers

    text = dict(get_registry().get_spec("llama4_text").test_config, model_type="llama4_text")
    text["interleave_moe_layer_step"] = 2  # dense and MoE layers
    vision = dict(model_type="llama4_vision_model", hidden_size=32, num_hidden_layers=1)
    vision.update(num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14)
    vision.update(vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)
    config = transformers.AutoConfig.for_model("llama4", text_config=text, vision_config=vision)
    hf_model = transformers.AutoModelForImageTextToText.from_config(
        config, dtype=torch.float32, attn_implementation="eager"
    )
    fill_seeded_(hf_model)
    hf_model.eval().save_pretrained(folder)
    return hf_model


def test_text_tower_matches_the_wrapper(tmp_path: Path) -> None:
    hf_model = _wrapper(tmp_path)
    assert type(hf_model).__name__ == "Llama4ForConditionalGeneration"
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    assert model.cfg.spec_name == "llama4_text"
    assert model.cfg.original_architecture == "Llama4ForConditionalGeneration"
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, ATOL, "llama4_text", "llama4")
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 4
    source = TextTowerSource(
        SafetensorsDirSource(tmp_path), get_registry().text_towers["llama4"][0]
    )
    assert any(k.startswith("vision_model.") for k in source.skipped)
    assert any(k.startswith("multi_modal_projector.") for k in source.skipped)
    assert "lm_head.weight" in source.keys()

"""Ministral 3 (ministral3 and the mistral3 wrapper's text tower) vs HuggingFace (issue 15, item 1).

The tiny config is Mistral with yarn rotary and Llama 4's attention scaling on every layer's
rotated queries, ``1 + 0.5 * log(1 + floor(p / 4))`` at position id ``p`` (the real models use
beta 0.1 and 8192 or 16384 original positions; 4 makes the 12-token parity batch cross three
steps). Every variant goes through the parity tool (shared with the snapshot check); the scaling
is then broken alone and parity must fail; the attention scores are checked against the formula;
cached forwards and greedy generation (also left-padded, where position ids and cache indices
differ) cross the scaling steps.
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
from tlcore.testing.sensitivity import assert_detects, copy_trait
from tlcore.testing.tiny import fill_seeded_, hf_model_from_config, spec_cases

ATOL = 1e-4
CASES = spec_cases(["ministral3"])
BETA, ORIGINAL, WINDOW = 0.5, 4, 5  # the spec's test_config
TOKENS = torch.tensor([[1, 17, 301, 44, 9, 250, 77, 5, 130, 411, 66, 3]])


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases: Any, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 2
    assert max(result.layer_max_diffs) < ATOL, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL, result.message


def _no_scaling(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, temperature_layers=None)


def _llama4_offset(m: Any) -> None:
    """Llama 4's ``floor((p + 1) / floor)`` instead of Ministral 3's ``floor(p / original)``."""
    for block in m.blocks:
        copy_trait(block.attn, temperature_offset=1.0)


SENSITIVITY = [
    (None, _no_scaling),
    ("default_rope", _no_scaling),
    ("no_window", _no_scaling),
    (None, _llama4_offset),
]


@pytest.mark.parametrize(
    ("variant", "breaker"),
    SENSITIVITY,
    ids=[f"{v or 'base'}-{b.__name__.strip('_')}" for v, b in SENSITIVITY],
)
def test_parity_detects_a_broken_feature(parity_cases: Any, variant: str | None, breaker: Any):
    assert_detects(parity_cases, "ministral3", variant, breaker, atol=ATOL)


def test_no_scaling_variant_is_plain_mistral(tiny_checkpoint: Any) -> None:
    """llama_4_scaling_beta 0 (Devstral-2-123B) switches the scaling off on every layer."""
    folder, _ = tiny_checkpoint("ministral3", "no_scaling")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    positions = torch.arange(12)[None]
    assert all(b.attn.trait.temperature(0, positions, 12) is None for b in model.blocks)


@pytest.fixture(scope="module")
def model_and_hf(tiny_checkpoint: Any) -> tuple[HookedTransformer, Any]:
    folder, hf_model = tiny_checkpoint("ministral3")
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu"), hf_model


def test_scaled_queries_in_the_scores(model_and_hf: Any) -> None:
    model, _ = model_and_hf
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS)
    n, d_head = TOKENS.shape[1], model.cfg.d_head
    q_idx, k_idx = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (k_idx <= q_idx) & (q_idx - k_idx < WINDOW)
    scale = torch.tensor([1 + BETA * math.log(1 + math.floor(i / ORIGINAL)) for i in range(n)])
    assert scale[:4].eq(1).all() and scale[4] > 1 and scale[8] > scale[4]  # three steps
    for layer in range(model.cfg.n_layers):
        q = cache[f"blocks.{layer}.attn.hook_rot_q"][0]
        k = cache[f"blocks.{layer}.attn.hook_rot_k"][0].repeat_interleave(2, dim=1)
        expected = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d_head) * scale[None, :, None]
        scores = cache["attn_scores", layer][0]
        torch.testing.assert_close(scores[:, allowed], expected[:, allowed], atol=1e-5, rtol=1e-5)
        assert (cache["pattern", layer][0][:, ~allowed] == 0).all()


def test_cached_forward_equals_the_full_forward(model_and_hf: Any) -> None:
    """The scale counts absolute positions: 3 cached tokens, then 1 + 8 more (steps at 4, 8)."""
    model, _ = model_and_hf
    with torch.no_grad():
        full = model(TOKENS)
        cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 1)
        steps = [
            model(TOKENS[:, :3], past_kv_cache=cache),
            model(TOKENS[:, 3:4], past_kv_cache=cache),
        ]
        steps.append(model(TOKENS[:, 4:], past_kv_cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", [None, "no_window", "yarn_mscale"])
def test_kv_cached_greedy_equals_hf_generate(tiny_checkpoint: Any, variant: str | None) -> None:
    """Prompt 3 + 10 new tokens: past the scaling steps at positions 4, 8 and 12."""
    folder, hf_model = tiny_checkpoint("ministral3", variant)
    hf_model.generation_config.eos_token_id = None
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    prompt = TOKENS[:, :3]
    ours = model.generate(prompt, 10, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    uncached = model.generate(
        prompt, 10, do_sample=False, stop_at_eos=False, verbose=False, use_past_kv_cache=False
    )
    assert torch.equal(ours, uncached)


def test_left_padded_batch_generation_equals_hf(model_and_hf: Any) -> None:
    """The scale counts each row's position ids (from its first real token), not cache indices:
    with 2 and 3 padding tokens the rows cross the steps at different cache indices."""
    model, hf_model = model_and_hf
    hf_model.generation_config.eos_token_id = None
    tokens = torch.randint(3, 512, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[1, :2] = mask[2, :3] = 0
    tokens = tokens * mask
    kwargs: dict[str, Any] = dict(do_sample=False, stop_at_eos=False, verbose=False)
    ours = model.generate(tokens, 8, attention_mask=mask, **kwargs)
    theirs = hf_model.generate(
        tokens, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0
    )
    assert torch.equal(ours, theirs)


def _wrapper(folder: Path) -> Any:
    import transformers

    text = dict(get_registry().get_spec("ministral3").test_config, model_type="ministral3")
    vision = dict(model_type="pixtral", hidden_size=32, num_hidden_layers=1, head_dim=16)
    vision.update(num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14)
    config = transformers.AutoConfig.for_model("mistral3", text_config=text, vision_config=vision)
    hf_model = hf_model_from_config(config, dtype=torch.float32, attn_implementation="eager")
    fill_seeded_(hf_model)
    hf_model.eval().save_pretrained(folder)
    return hf_model


def test_text_tower_matches_the_wrapper(tmp_path: Path) -> None:
    hf_model = _wrapper(tmp_path)
    assert type(hf_model).__name__ == "Mistral3ForConditionalGeneration"
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    assert model.cfg.spec_name == "ministral3"
    assert model.cfg.original_architecture == "Mistral3ForConditionalGeneration"
    assert all(b.attn.trait.temperature_layers is True for b in model.blocks)
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, ATOL, "ministral3", "mistral3")
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 2
    source = TextTowerSource(
        SafetensorsDirSource(tmp_path), get_registry().text_towers["mistral3"][0]
    )
    assert any(k.startswith("vision_tower.") for k in source.skipped)
    assert any(k.startswith("multi_modal_projector.") for k in source.skipped)


CORPUS = Path(__file__).resolve().parents[1] / "data" / "hub_configs"
FP8_CONFIGS = [
    "mistralai__Devstral-Small-2-24B-Instruct-2512.json",  # mistral3 wrapper, beta 0.1
    "mistralai__Devstral-2-123B-Instruct-2512.json",  # Ministral3ForCausalLM, beta 0.0
]


@pytest.mark.parametrize("file", FP8_CONFIGS)
def test_real_fp8_configs_without_their_quantisation(file: str, tmp_path: Path) -> None:
    """The same configs without ``quantization_config`` (the corpus test loads them with it, FP8
    weights dequantised) resolve to ministral3, dry-load on the meta device against HF's meta
    model, and a shrunken copy matches HF."""
    import json

    from tlcore.loading.loader import load_checkpoint
    from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
    from tlcore.loading.sources import StateDictSource
    from tlcore.plan import resolve_plan
    from tlcore.testing.shrink import build_shrunken_hf_model

    raw = json.loads((CORPUS / file).read_text())
    assert raw.pop("quantization_config")["quant_method"] == "fp8"
    config = hf_config_object(raw)
    spec = spec_for_hf_config(config)
    assert spec.name == "ministral3"
    plan = resolve_plan(spec, config, device="meta")
    text = config.get_text_config()
    assert (plan.cfg.n_layers, plan.cfg.d_model) == (text.num_hidden_layers, text.hidden_size)
    with torch.device("meta"):
        hf_meta = hf_model_from_config(config, dtype=torch.float32)
        model = HookedTransformer(plan, move_to_device=False, init_weights=False)
    assert plan.weights is not None
    load_checkpoint(
        model,
        plan.weights,
        StateDictSource(hf_meta),
        device="meta",
        dtype=torch.float32,
        where=file,
    )
    hf_model = build_shrunken_hf_model(raw, spec.parity.attn_for(None))
    hf_model.save_pretrained(tmp_path)
    small = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    result = compare_model(small, hf_model, parity_tokens(small.cfg.d_vocab), ATOL, "ministral3")
    assert result.ok, result.message

"""Ministral (transformers' ``ministral`` type) vs HuggingFace: per-layer sliding windows.

Three layers with window 5 (< the 12 parity tokens); ``layer_types`` picks which layers slide.
Every variant goes through the parity tool; windows on the wrong layers must fail parity; greedy
generation past the window equals HF's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.testing.sensitivity import assert_detects, copy_trait
from tlcore.testing.tiny import spec_cases

ATOL = 1e-4
CASES = spec_cases(["ministral"])


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases: Any, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == 3
    assert max(result.layer_max_diffs) < ATOL, result.message


def _window_everywhere(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, window_layers=None)
        block.attn.window = 5


def _no_window(m: Any) -> None:
    for block in m.blocks:
        block.attn.window = None


@pytest.mark.parametrize(
    ("variant", "breaker"),
    [(None, _no_window), ("explicit_layer_types", _window_everywhere)],
    ids=["base-no_window", "explicit_layer_types-window_everywhere"],
)
def test_parity_detects_a_broken_feature(parity_cases: Any, variant: str | None, breaker: Any):
    assert_detects(parity_cases, "ministral", variant, breaker, atol=ATOL)


def test_layer_types_pick_the_sliding_layers(tiny_checkpoint: Any) -> None:
    folder, hf_model = tiny_checkpoint("ministral", "explicit_layer_types")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert [b.attn.window for b in model.blocks] == [5, None, 5]
    assert hf_model.config.layer_types == [
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ]


def test_kv_cached_greedy_equals_hf_generate(tiny_checkpoint: Any) -> None:
    """Prompt 4 + 8 new tokens: past the window of 5."""
    folder, hf_model = tiny_checkpoint("ministral", "explicit_layer_types")
    hf_model.generation_config.eos_token_id = None
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    prompt = torch.tensor([[1, 17, 301, 44]])
    ours = model.generate(prompt, 8, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)

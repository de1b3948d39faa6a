"""KV-cached greedy generation equals HF's for the specs of issue 15 (item 2, and the Qwen2-VL text
tower): a prompt longer than the test configs' sliding window (5), so cached steps cross it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

NEW_SPECS = [
    *("apertus", "cohere2", "ernie4_5", "exaone4", "flex_olmo", "glm", "glm4"),
    *("hunyuan_v1_dense", "olmo3", "olmoe", "qwen2_vl_text", "seed_oss", "smollm3"),
]


@pytest.mark.parametrize("name", NEW_SPECS)
def test_kv_cached_greedy_equals_hf_generate(name: str, tmp_path: Path):
    _, hf_model = save_tiny_checkpoint(get_registry().get_spec(name), tmp_path)
    hf_model.generation_config.eos_token_id = None
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = torch.tensor([[3, 17, 301, 44, 9, 250, 77]])
    ours = model.generate(tokens, 8, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=tokens, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    uncached = model.generate(
        tokens, 8, do_sample=False, stop_at_eos=False, verbose=False, use_past_kv_cache=False
    )
    assert torch.equal(ours, uncached)

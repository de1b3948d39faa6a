"""Multimodal wrapper checkpoints load their language model (issue 15, item 1).

Each case builds a tiny ``...ForConditionalGeneration`` model with transformers' own classes (a
one-block vision tower), writes it with ``save_pretrained`` (the hub's on-disk key layout) and
loads it through tlcore's real loader: text-only prompts must give the wrapper's logits and every
layer's residual stream within 1e-4, and the vision tower's tensors are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.errors import CheckpointFormatError
from tlcore.loading.sources import SafetensorsDirSource
from tlcore.loading.text_tower import TextTowerSource
from tlcore.parity.compare import compare_model, parity_tokens
from tlcore.registry import get_registry
from tlcore.testing.tiny import fill_seeded_, hf_model_from_config

TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TEXT.update(head_dim=16, intermediate_size=128, vocab_size=512)
VISION = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
VISION.update(image_size=28, patch_size=14)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}

# wrapper model_type → (its config fields, the spec its language model resolves to)
WRAPPERS: dict[str, tuple[dict[str, Any], str]] = {
    "gemma3": (
        {
            "text_config": {
                **TEXT,
                "model_type": "gemma3_text",
                "num_hidden_layers": 6,
                "sliding_window": 5,
                "query_pre_attn_scalar": 24,
            },  # fmt: skip
            "vision_config": {**VISION, "model_type": "siglip_vision_model"},
            "mm_tokens_per_image": 4,
        },
        "gemma3",
    ),
    "mistral3": (
        {
            "text_config": {**TEXT, "model_type": "mistral", "sliding_window": 5},
            "vision_config": {**VISION, "model_type": "pixtral", "head_dim": 16},
        },
        "mistral",
    ),
    "llava": (
        {
            "text_config": {**TEXT, "model_type": "llama"},
            "vision_config": {**VISION, "model_type": "clip_vision_model"},
        },
        "llama",
    ),
    "llava_next": (
        {
            "text_config": {**TEXT, "model_type": "qwen2"},
            "vision_config": {**VISION, "model_type": "clip_vision_model"},
        },
        "qwen2",
    ),
    "qwen2_vl": (
        {
            "text_config": {**TEXT, "model_type": "qwen2_vl_text", "rope_parameters": MROPE},
            "vision_config": {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2},
        },
        "qwen2_vl_text",
    ),
    "qwen2_5_vl": (
        {
            "text_config": {**TEXT, "model_type": "qwen2_5_vl_text", "rope_parameters": MROPE},
            "vision_config": {
                "depth": 1,
                "hidden_size": 32,
                "out_hidden_size": 64,
                "num_heads": 2,
                "intermediate_size": 64,
                "fullatt_block_indexes": [0],
            },  # fmt: skip
        },
        "qwen2_vl_text",
    ),
}


def _wrapper(model_type: str, folder: Path) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **WRAPPERS[model_type][0])
    hf_model = hf_model_from_config(config, dtype=torch.float32, attn_implementation="eager")
    fill_seeded_(hf_model)
    hf_model.eval().save_pretrained(folder)
    return hf_model


@pytest.mark.parametrize("model_type", sorted(WRAPPERS))
def test_text_tower_matches_the_wrapper(model_type: str, tmp_path: Path):
    hf_model = _wrapper(model_type, tmp_path)
    assert type(hf_model).__name__.endswith("ForConditionalGeneration")
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    assert model.cfg.spec_name == WRAPPERS[model_type][1]
    assert model.cfg.original_architecture == type(hf_model).__name__
    assert model.cfg.n_layers == hf_model.config.get_text_config().num_hidden_layers
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, 1e-4, model.cfg.spec_name, model_type)
    assert result.ok, result.message
    assert len(result.layer_max_diffs) == model.cfg.n_layers


def test_kv_cached_greedy_generation_equals_hfs(tmp_path: Path):
    hf_model = _wrapper("gemma3", tmp_path)
    hf_model.generation_config.eos_token_id = None
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = torch.tensor([[2, 17, 301, 44, 9, 250, 77]])
    ours = model.generate(tokens, 8, do_sample=False, stop_at_eos=False, verbose=False)
    theirs = hf_model.generate(input_ids=tokens, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours, theirs)


class _Recording:
    """A source that records which tensors were read."""

    def __init__(self, inner: SafetensorsDirSource) -> None:
        self.inner, self.read = inner, []

    def keys(self) -> set[str]:
        return self.inner.keys()

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        self.read.append(key)
        return self.inner.get(key, separate_map)


def test_other_towers_are_never_read(tmp_path: Path):
    _wrapper("llava", tmp_path)
    recording = _Recording(SafetensorsDirSource(tmp_path))
    tower = get_registry().text_towers["llava"][0]
    source = TextTowerSource(recording, tower)
    assert source.keys() and all(k.startswith(("model.", "lm_head.")) for k in source.keys())
    assert any(k.startswith("vision_tower.") for k in source.skipped)
    assert any(k.startswith("multi_modal_projector.") for k in source.skipped)
    for key in sorted(source.keys()):
        source.get(key)
    assert recording.read and not set(recording.read) & set(source.skipped)
    assert "language_model.lm_head.weight" in recording.read


def test_two_spellings_of_one_tensor_are_refused(tmp_path: Path):
    class Both:
        def keys(self) -> set[str]:
            return {"model.language_model.norm.weight", "language_model.model.norm.weight"}

    with pytest.raises(CheckpointFormatError, match="both hold the language model's"):
        TextTowerSource(Both(), get_registry().text_towers["gemma3"][0])

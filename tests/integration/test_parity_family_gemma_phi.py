"""Gemma 1/2/3, Phi, StableLM and Cohere specs against HuggingFace.

Every spec and test variant goes through the parity tool (tiny seeded checkpoint → save_pretrained →
tlcore's loader → logits, every layer, processed log-probs). The sensitivity tests then break one
feature of a loaded tlcore model at a time and check that parity fails, so each test config really
exercises what its spec claims (windows shorter than the batch, soft-caps that bite, partial rotary,
per-head norms that differ per head). Real hub config.json files check the config guard.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore.config_resolution import resolve_config
from tlcore.errors import CheckpointMismatchError, UnsupportedConfigError
from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
from tlcore.model import HookedTransformer
from tlcore.testing.sensitivity import (
    assert_detects,
    copy_trait,
    full_rotary,
    head_dim_scale,
    logits_diff,
    no_embed_scale,
    no_logit_scale,
    no_qk_norm,
    no_windows,
    rotate_half,
    windows_everywhere,
)
from tlcore.testing.tiny import spec_cases

FAMILY = ["gemma", "gemma2", "gemma3", "phi", "stablelm", "stablelm_parallel", "cohere"]
ATOL = 1e-4


CASES = spec_cases(FAMILY)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert result.logits_max_diff < ATOL
    assert result.layer_max_diffs and max(result.layer_max_diffs) < ATOL
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL


# -- sensitivity: break one feature of the tlcore model, parity must fail ------------------------


def _no_norm_offset(m: Any) -> None:
    for mod in m.modules():
        if hasattr(mod, "offset"):
            mod.offset = False


def _no_attn_softcap(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, softcap=None)


def _attn_softcap(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, softcap=5.0)


def _no_final_softcap(m: Any) -> None:
    copy_trait(m.unembed, softcap=None)


def _swap_ln1_post_ln2(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            w = block.ln1_post.w.clone()
            block.ln1_post.w.copy_(block.ln2.w)
            block.ln2.w.copy_(w)


def _one_rope_for_all_layers(m: Any) -> None:
    # Every layer takes the sliding layers' theta (1e4) instead of its own layer type's.
    rotary = m.pos_embed
    params = dict(rotary.trait.rope_parameters)
    copy_trait(rotary, layer_types=None, rope_parameters=params["sliding_attention"])


def _no_lm_head_bias(m: Any) -> None:
    with torch.no_grad():
        m.unembed.b_U.zero_()


def _roll_q_norm_heads(m: Any) -> None:
    # Per-head DISTINCT weights: giving each head its neighbour's row must change the output.
    with torch.no_grad():
        for block in m.blocks:
            block.attn.q_norm.w.copy_(block.attn.q_norm.w.roll(1, dims=0))


SENSITIVITY = [
    ("gemma", None, no_embed_scale),
    ("gemma", None, _no_norm_offset),
    ("gemma2", None, no_windows),
    ("gemma2", None, windows_everywhere),
    ("gemma2", None, _no_attn_softcap),
    ("gemma2", None, _no_final_softcap),
    ("gemma2", None, head_dim_scale),
    ("gemma2", None, _swap_ln1_post_ln2),
    ("gemma3", None, no_qk_norm),
    ("gemma3", None, no_windows),
    ("gemma3", None, _one_rope_for_all_layers),
    ("gemma3", "attn_softcap_ignored", _attn_softcap),
    ("gemma3", "final_softcap", _no_final_softcap),
    ("phi", None, full_rotary),
    ("phi", None, _no_lm_head_bias),
    ("phi", "qk_layernorm", no_qk_norm),
    ("stablelm", None, full_rotary),
    ("stablelm", "qk_layernorm", _roll_q_norm_heads),
    ("stablelm_parallel", "qk_layernorm", _roll_q_norm_heads),
    ("cohere", None, rotate_half),
    ("cohere", "logit_scale", no_logit_scale),
    ("cohere", "qk_norm", _roll_q_norm_heads),
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


def test_gemma2_keeps_the_softcapped_logits_uncentred(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("gemma2")
    model = HookedTransformer.from_pretrained(str(folder), device="cpu")
    assert model.cfg.output_logits_soft_cap == 3.0
    assert model.cfg.center_unembed is False
    assert model.cfg.fold_ln


def test_sliding_layers_follow_layer_types(parity_cases) -> None:
    gemma2, _, _ = parity_cases.load("gemma2")
    assert [b.attn.window for b in gemma2.blocks] == [5, None, 5]
    gemma3, _, _ = parity_cases.load("gemma3")
    assert [b.attn.window for b in gemma3.blocks] == [5] * 5 + [None]
    explicit, _, _ = parity_cases.load("gemma3", "explicit_layer_types")
    assert [b.attn.window for b in explicit.blocks] == [None, 5, None]


def test_parallel_stablelm_resolves_to_its_own_spec(parity_cases) -> None:
    model, _, _ = parity_cases.load("stablelm_parallel")
    assert model.cfg.spec_name == "stablelm_parallel"
    assert model.cfg.parallel_attn_mlp
    assert not hasattr(model.blocks[0], "ln2")


def test_per_head_norms_are_stacked_per_head(parity_cases) -> None:
    model, hf_model, _ = parity_cases.load("stablelm", "qk_layernorm")
    attn = hf_model.model.layers[1].self_attn
    assert model.blocks[1].attn.q_norm.w.shape == (4, 16)
    assert model.blocks[1].attn.k_norm.w.shape == (2, 16)
    for h in range(4):
        assert torch.equal(model.blocks[1].attn.q_norm.w[h], attn.q_layernorm.norms[h].weight)
    for h in range(2):
        assert torch.equal(model.blocks[1].attn.k_norm.w[h], attn.k_layernorm.norms[h].weight)


@pytest.mark.parametrize(("name", "variant"), [("stablelm", "qk_layernorm"), ("cohere", "qk_norm")])
def test_distinct_key_norms_survive_ungrouping(parity_cases, name: str, variant: str) -> None:
    model, hf_model, tokens = parity_cases.load(name, variant)
    model.cfg.ungroup_grouped_query_attention = True
    try:
        assert logits_diff(model, hf_model, tokens) < ATOL
    finally:
        model.cfg.ungroup_grouped_query_attention = False


def _rewrite_checkpoint(src: Path, dst: Path, edit: Any) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    (weights,) = dst.glob("*.safetensors")
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})


def test_missing_head_norm_is_reported(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("stablelm", "qk_layernorm")
    _rewrite_checkpoint(
        folder,
        tmp_path / "ckpt",
        lambda t: t.pop("model.layers.0.self_attn.q_layernorm.norms.3.weight"),
    )
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.attn\.q_norm\.w"):
        HookedTransformer.from_pretrained_no_processing(str(tmp_path / "ckpt"), device="cpu")


def test_extra_head_norm_is_reported(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("stablelm", "qk_layernorm")

    def add_head(t: dict[str, torch.Tensor]) -> None:
        t["model.layers.0.self_attn.k_layernorm.norms.2.weight"] = torch.ones(16)

    _rewrite_checkpoint(folder, tmp_path / "ckpt", add_head)
    with pytest.raises(CheckpointMismatchError, match=r"k_layernorm\.norms\.2\.weight"):
        HookedTransformer.from_pretrained_no_processing(str(tmp_path / "ckpt"), device="cpu")


# -- real hub configs: the guard accepts them and the config reads them right --------------------

HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "google/gemma-2b": {
        "architectures": ["GemmaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "head_dim": 256,
        "hidden_act": "gelu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 16384,
        "max_position_embeddings": 8192,
        "model_type": "gemma",
        "num_attention_heads": 8,
        "num_hidden_layers": 18,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.0.dev0",
        "use_cache": True,
        "vocab_size": 256000,
    },
    "google/gemma-1.1-2b-it": {
        "architectures": ["GemmaForCausalLM"],
        "attention_bias": False,
        "head_dim": 256,
        "hidden_act": "gelu",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "max_position_embeddings": 8192,
        "model_type": "gemma",
        "num_attention_heads": 8,
        "num_hidden_layers": 18,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "vocab_size": 256000,
    },
    "google/gemma-2-2b": {
        "architectures": ["Gemma2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": [1, 107],
        "final_logit_softcapping": 30.0,
        "head_dim": 256,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2304,
        "initializer_range": 0.02,
        "intermediate_size": 9216,
        "max_position_embeddings": 8192,
        "model_type": "gemma2",
        "num_attention_heads": 8,
        "num_hidden_layers": 26,
        "num_key_value_heads": 4,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "torch_dtype": "float32",
        "transformers_version": "4.42.4",
        "use_cache": True,
        "vocab_size": 256000,
    },
    "google/gemma-3-1b-it": {
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": [1, 106],
        "final_logit_softcapping": None,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "initializer_range": 0.02,
        "intermediate_size": 6912,
        "max_position_embeddings": 32768,
        "model_type": "gemma3_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 26,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0",
        "use_cache": True,
        "vocab_size": 262144,
    },
    "microsoft/phi-2": {
        "architectures": ["PhiForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 50256,
        "embd_pdrop": 0.0,
        "eos_token_id": 50256,
        "hidden_act": "gelu_new",
        "hidden_size": 2560,
        "initializer_range": 0.02,
        "intermediate_size": 10240,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048,
        "model_type": "phi",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 32,
        "partial_rotary_factor": 0.4,
        "qk_layernorm": False,
        "resid_pdrop": 0.1,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.37.0",
        "use_cache": True,
        "vocab_size": 51200,
    },
    "stabilityai/stablelm-2-1_6b": {
        "architectures": ["StableLmForCausalLM"],
        "bos_token_id": 100257,
        "eos_token_id": 100257,
        "hidden_act": "silu",
        "hidden_dropout": 0.0,
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 5632,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 4096,
        "model_type": "stablelm",
        "num_attention_heads": 32,
        "num_hidden_layers": 24,
        "num_key_value_heads": 32,
        "partial_rotary_factor": 0.25,
        "qk_layernorm": False,
        "rope_scaling": None,
        "rope_theta": 10000,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.0",
        "use_cache": True,
        "use_parallel_residual": False,
        "use_qkv_bias": True,
        "vocab_size": 100352,
    },
    "stabilityai/stablelm-2-12b": {
        "architectures": ["StableLmForCausalLM"],
        "hidden_act": "silu",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 4096,
        "model_type": "stablelm",
        "num_attention_heads": 32,
        "num_hidden_layers": 40,
        "num_key_value_heads": 8,
        "partial_rotary_factor": 0.25,
        "qk_layernorm": True,
        "rope_theta": 10000,
        "tie_word_embeddings": False,
        "use_parallel_residual": True,
        "use_qkv_bias": False,
        "vocab_size": 100352,
    },
    "CohereForAI/c4ai-command-r-v01": {
        "architectures": ["CohereForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 5,
        "eos_token_id": 255001,
        "hidden_act": "silu",
        "hidden_size": 8192,
        "initializer_range": 0.02,
        "intermediate_size": 22528,
        "layer_norm_eps": 1e-05,
        "logit_scale": 0.0625,
        "max_position_embeddings": 8192,
        "model_type": "cohere",
        "num_attention_heads": 64,
        "num_hidden_layers": 40,
        "num_key_value_heads": 64,
        "pad_token_id": 0,
        "rope_theta": 8000000.0,
        "torch_dtype": "float16",
        "transformers_version": "4.38.2",
        "use_cache": True,
        "use_qk_norm": False,
        "vocab_size": 256000,
    },
}

# spec, act_fn, d_head, rotary_dim, rotary_base, attention types of the first six layers
EXPECTED = {
    "google/gemma-2b": ("gemma", "gelu_pytorch_tanh", 256, 256, 1e4, None),
    "google/gemma-1.1-2b-it": ("gemma", "gelu_pytorch_tanh", 256, 256, 1e4, None),
    "google/gemma-2-2b": ("gemma2", "gelu_pytorch_tanh", 256, 256, 1e4, ["local", "global"] * 3),
    "google/gemma-3-1b-it": (
        "gemma3",
        "gelu_pytorch_tanh",
        256,
        256,
        1e6,
        ["local"] * 5 + ["global"],
    ),
    "microsoft/phi-2": ("phi", "gelu_new", 80, 32, 1e4, None),
    "stabilityai/stablelm-2-1_6b": ("stablelm", "silu", 64, 16, 1e4, None),
    "stabilityai/stablelm-2-12b": ("stablelm_parallel", "silu", 160, 40, 1e4, None),
    "CohereForAI/c4ai-command-r-v01": ("cohere", "silu", 128, 128, 8e6, None),
}


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_hub_config_resolves(repo: str) -> None:
    hf_config = hf_config_object(dict(HUB_CONFIGS[repo]))
    spec = spec_for_hf_config(hf_config)
    cfg = resolve_config(spec, hf_config)  # the guard accepts every field of the real config
    name, act, d_head, rotary_dim, base, attn_types = EXPECTED[repo]
    assert (spec.name, cfg.act_fn, cfg.d_head, cfg.rotary_dim, cfg.rotary_base) == (
        name,
        act,
        d_head,
        rotary_dim,
        base,
    )
    if attn_types is not None:
        assert cfg.attn_types[:6] == attn_types


def test_hub_config_field_hf_never_reads_is_accepted_and_recorded() -> None:
    # Refusal of fields HF reads is tested in tests/unit/test_guard.py; an unread key is recorded.
    hf_config = hf_config_object({**HUB_CONFIGS["microsoft/phi-2"], "some_new_switch": True})
    cfg = resolve_config(spec_for_hf_config(hf_config), hf_config)
    assert "some_new_switch" in cfg.extra["config_guard"]["not_read_by_hf"]


@pytest.mark.parametrize("repo", ["google/gemma-2b", "google/gemma-2-2b", "google/gemma-3-1b-it"])
def test_bidirectional_gemma_is_refused(repo: str) -> None:
    hf_config = hf_config_object({**HUB_CONFIGS[repo], "use_bidirectional_attention": True})
    with pytest.raises(UnsupportedConfigError, match="use_bidirectional_attention=True"):
        resolve_config(spec_for_hf_config(hf_config), hf_config)

"""Llama family vs HuggingFace: mistral, qwen2, qwen3, phi3, granite, olmo, olmo2, starcoder2.

Every spec and test variant goes through the parity tool (tiny seeded checkpoint → save_pretrained →
tlcore's loader → logits, every layer's residual stream, processed log-probs). The sensitivity tests
then break one feature of a loaded tlcore model at a time and check that parity fails, so each test
config really exercises what its spec claims (windows shorter than the batch, both kinds of layer,
partial rotary, long and short LongRoPE factors, multipliers far from 1, clamps that bite). Real hub
config.json files check the config guard and what the specs read from them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore.config_resolution import resolve_config
from tlcore.errors import UnsupportedConfigError
from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens
from tlcore.registry import get_registry
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
    windows_everywhere,
    zero_q_bias,
)
from tlcore.testing.tiny import spec_cases

FAMILY = ["mistral", "qwen2", "qwen3", "phi3", "granite", "olmo", "olmo2", "starcoder2"]
ATOL = 1e-4


CASES = spec_cases(FAMILY)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert result.logits_max_diff < ATOL, result.message
    n_layers = get_registry().get_spec(name).test_config["num_hidden_layers"]
    assert len(result.layer_max_diffs) == n_layers
    assert max(result.layer_max_diffs) < ATOL, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL, result.message


# -- sensitivity: break one feature of the tlcore model, parity must fail ------------------------


def _swap_gate_and_up(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            gate = block.mlp.W_gate.clone()
            block.mlp.W_gate.copy_(block.mlp.W_in)
            block.mlp.W_in.copy_(gate)


def _longrope_factors(m: Any, use: str) -> None:
    # The rotary component asks HF's rope init for the factors, so edit the config it reads.
    hf_config = copy.deepcopy(m.pos_embed.hf_config)
    params = dict(hf_config.rope_parameters)
    params["long_factor"] = params["short_factor"] = params[f"{use}_factor"]
    hf_config.rope_parameters = params
    m.pos_embed.hf_config = hf_config


def _short_factors_only(m: Any) -> None:
    _longrope_factors(m, "short")


def _long_factors_only(m: Any) -> None:
    _longrope_factors(m, "long")


def _no_residual_multiplier(m: Any) -> None:
    for block in m.blocks:
        block.residual_multiplier = 1.0


def _no_clip(m: Any) -> None:
    for block in m.blocks:
        copy_trait(block.attn, clip_qkv=None)


def _swap_post_norms(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            w = block.ln1_post.w.clone()
            block.ln1_post.w.copy_(block.ln2_post.w)
            block.ln2_post.w.copy_(w)


def _zero_mlp_biases(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            block.mlp.b_in.zero_()
            block.mlp.b_out.zero_()


def _zero_norm_biases(m: Any) -> None:
    with torch.no_grad():
        for norm in [m.ln_final, *(b.ln1 for b in m.blocks), *(b.ln2 for b in m.blocks)]:
            norm.b.zero_()


SENSITIVITY = [
    ("mistral", None, no_windows),
    ("qwen2", None, zero_q_bias),
    ("qwen2", "sliding", no_windows),
    ("qwen2", "sliding", windows_everywhere),
    ("qwen2", "layer_types", windows_everywhere),
    ("qwen3", None, no_qk_norm),
    ("qwen3", "sliding", no_windows),
    ("qwen3", "layer_types", windows_everywhere),
    ("phi3", None, full_rotary),
    ("phi3", None, no_windows),
    ("phi3", None, _swap_gate_and_up),
    ("phi3", "longrope_long", _short_factors_only),
    ("phi3", "longrope_short", _long_factors_only),
    ("granite", None, no_embed_scale),
    ("granite", None, head_dim_scale),
    ("granite", None, _no_residual_multiplier),
    ("granite", None, no_logit_scale),
    ("olmo", "clip_qkv", _no_clip),
    ("olmo2", None, no_qk_norm),
    ("olmo2", None, _swap_post_norms),
    ("starcoder2", None, no_windows),
    ("starcoder2", None, _zero_mlp_biases),
    ("starcoder2", None, _zero_norm_biases),
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


@pytest.mark.parametrize("name", FAMILY)
def test_in_memory_hf_model_loads_like_the_saved_folder(tiny_checkpoint: Any, name: str) -> None:
    # hf_model= reads HF's in-memory state dict, the folder what save_pretrained wrote: the spec's
    # weight map must serve both.
    folder, hf_model = tiny_checkpoint(name)
    from_memory = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf_model, device="cpu"
    )
    from_disk = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    disk_params = dict(from_disk.named_parameters())
    for param_name, param in from_memory.named_parameters():
        assert torch.equal(param, disk_params[param_name]), param_name
    tokens = parity_tokens(from_disk.cfg.d_vocab)
    assert logits_diff(from_memory, hf_model, tokens) < ATOL


# -- structure: windows per layer, absent parameters, fused splits ------------------------------

WINDOWS = [
    ("mistral", None, [5, 5]),
    ("mistral", "no_window", [None, None]),
    ("qwen2", None, [None, None]),
    ("qwen2", "sliding", [None, 5]),
    ("qwen2", "layer_types", [5, None]),
    ("qwen3", "sliding", [None, 5]),
    ("qwen3", "layer_types", [5, None]),
    ("phi3", None, [5, 5]),
    ("phi3", "full_rotary_no_window", [None, None]),
    ("starcoder2", None, [5, 5]),
    ("starcoder2", "no_window", [None, None]),
]


@pytest.mark.parametrize(
    ("name", "variant", "windows"), WINDOWS, ids=[f"{n}-{v or 'base'}" for n, v, _ in WINDOWS]
)
def test_sliding_windows_per_layer(
    parity_cases: Any, name: str, variant: str | None, windows: list[int | None]
) -> None:
    model, _, _ = parity_cases.load(name, variant)
    assert [block.attn.window for block in model.blocks] == windows


def test_olmo_norms_have_no_parameters(parity_cases: Any) -> None:
    model, _, _ = parity_cases.load("olmo")
    assert model.cfg.normalization_type == "LNPre"
    for norm in [model.ln_final, model.blocks[0].ln1, model.blocks[0].ln2]:
        assert norm.w is None and norm.b is None
        assert norm.eps == 1e-5


def test_phi3_fused_blocks_split_with_gqa_sizes(parity_cases: Any) -> None:
    model, hf_model, _ = parity_cases.load("phi3")
    qkv = hf_model.model.layers[1].self_attn.qkv_proj.weight  # [(4 + 2 + 2) * 16, 64]
    attn = model.blocks[1].attn
    # Key head 1 is rows [4*16 + 16, 4*16 + 32) of the fused weight, as [d_model, d_head].
    assert torch.equal(attn._W_K[1], qkv[80:96].T)
    assert torch.equal(attn._W_V[0], qkv[96:112].T)
    assert torch.equal(attn.W_Q[3], qkv[48:64].T)
    gate_up = hf_model.model.layers[1].mlp.gate_up_proj.weight  # [2 * 128, 64]: gate rows first
    assert torch.equal(model.blocks[1].mlp.W_gate, gate_up[:128].T)
    assert torch.equal(model.blocks[1].mlp.W_in, gate_up[128:].T)


def test_olmo2_norms_multiply_by_the_weight_in_fp32(parity_cases: Any) -> None:
    # In fp32 both orders agree; in bf16 only HF's order (w * x̂ in fp32, then cast) matches
    # bit for bit, and the llama order (cast, then w * x̂) does not.
    model, hf_model, _ = parity_cases.load("olmo2")
    hf_layer = hf_model.model.layers[0]
    pairs = [
        (model.blocks[0].ln1_post, hf_layer.post_attention_layernorm, 64),
        (model.blocks[0].attn.q_norm, hf_layer.self_attn.q_norm, 64),
        (model.blocks[0].attn.k_norm, hf_layer.self_attn.k_norm, 32),
        (model.ln_final, hf_model.model.norm, 64),
    ]
    generator = torch.Generator().manual_seed(0)
    for ours, theirs, width in pairs:
        ours, theirs = copy.deepcopy(ours).bfloat16(), copy.deepcopy(theirs).bfloat16()
        x = (3 * torch.randn(2, 12, width, generator=generator)).bfloat16()
        assert torch.equal(ours(x), theirs(x))
        ours.weight_in_fp32 = False
        assert not torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("name", ["olmo", "olmo2"])
def test_olmo_rotary_runs_in_fp32(parity_cases: Any, name: str) -> None:
    # OLMo's rotary keeps cos/sin in fp32 and rotates bf16 q/k in fp32 before casting back; the
    # usual order (cos/sin cast to bf16 first) rounds differently.
    import importlib

    model, hf_model, _ = parity_cases.load(name)
    hf_module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    generator = torch.Generator().manual_seed(0)
    q = (3 * torch.randn(2, 12, 4, 16, generator=generator)).bfloat16()  # [batch, pos, head, d]
    positions = torch.arange(12).expand(2, 12)
    cos, sin = hf_model.model.rotary_emb(q, positions)
    theirs, _ = hf_module.apply_rotary_pos_emb(q.transpose(1, 2), q.transpose(1, 2), cos, sin)
    rotary = model.pos_embed
    assert torch.equal(rotary.rotate(q, positions, 0), theirs.transpose(1, 2))
    rotary.trait = rotary.trait.model_copy(update={"in_fp32": False})
    assert not torch.equal(rotary.rotate(q, positions, 0), theirs.transpose(1, 2))


# -- real hub configs: the guard accepts them and the config reads them right --------------------

# The config.json files of released checkpoints, abridged to the fields that matter to the guard.
# The Phi 128k configs carry 48 LongRoPE factors each; placeholders of that length stand in.
_LONG = [1.0 + i / 8 for i in range(48)]
_SHORT = [1.0 + i / 64 for i in range(48)]
HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "mistralai/Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0",
        "use_cache": True,
        "vocab_size": 32000,
    },
    "mistralai/Mistral-7B-v0.3": {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.42.0.dev0",
        "use_cache": True,
        "vocab_size": 32768,
    },
    "Qwen/Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 896,
        "initializer_range": 0.02,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "max_window_layers": 24,
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_hidden_layers": 24,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_cache": True,
        "use_mrope": False,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "Qwen/Qwen3-0.6B": {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 1024,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "max_position_embeddings": 40960,
        "max_window_layers": 28,
        "model_type": "qwen3",
        "num_attention_heads": 16,
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "microsoft/Phi-3-mini-4k-instruct": {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": 3072,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 4096,
        "model_type": "phi3",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": 2047,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.2",
        "use_cache": True,
        "vocab_size": 32064,
    },
    "microsoft/Phi-3-mini-128k-instruct": {
        "architectures": ["Phi3ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": 3072,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 131072,
        "model_type": "phi3",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"type": "longrope", "long_factor": _LONG, "short_factor": _SHORT},
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.2",
        "use_cache": True,
        "vocab_size": 32064,
    },
    "microsoft/Phi-4-mini-instruct": {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 199999,
        "embd_pdrop": 0.0,
        "eos_token_id": 199999,
        "full_attn_mod": 1,
        "hidden_act": "silu",
        "hidden_size": 3072,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "interpolate_factor": 1,
        "lm_head_bias": False,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "phi3",
        "num_attention_heads": 24,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 199999,
        "partial_rotary_factor": 0.75,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": _LONG, "short_factor": _SHORT, "type": "longrope"},
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0",
        "use_cache": True,
        "vocab_size": 200064,
    },
    "ibm-granite/granite-3.0-2b-base": {
        "architectures": ["GraniteForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.1,
        "attention_multiplier": 0.015625,
        "bos_token_id": 0,
        "embedding_multiplier": 12.0,
        "eos_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "logits_scaling": 8.0,
        "max_position_embeddings": 4096,
        "mlp_bias": False,
        "model_type": "granite",
        "num_attention_heads": 32,
        "num_hidden_layers": 40,
        "num_key_value_heads": 8,
        "pad_token_id": 0,
        "residual_multiplier": 0.22,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.0.dev0",
        "use_cache": True,
        "vocab_size": 49155,
    },
    "allenai/OLMo-1B-hf": {
        "architectures": ["OlmoForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "clip_qkv": None,
        "eos_token_id": 50279,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 2048,
        "model_type": "olmo",
        "num_attention_heads": 16,
        "num_hidden_layers": 16,
        "num_key_value_heads": 16,
        "pad_token_id": 1,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "vocab_size": 50304,
    },
    "allenai/OLMo-2-0425-1B": {
        "architectures": ["Olmo2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "eos_token_id": 100257,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 4096,
        "model_type": "olmo2",
        "num_attention_heads": 16,
        "num_hidden_layers": 16,
        "num_key_value_heads": 16,
        "pad_token_id": 100277,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 500000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.52.0.dev0",
        "use_cache": True,
        "vocab_size": 100352,
    },
    "bigcode/starcoder2-3b": {
        "architectures": ["Starcoder2ForCausalLM"],
        "attention_dropout": 0.1,
        "residual_dropout": 0.1,
        "embedding_dropout": 0.1,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 3072,
        "initializer_range": 0.018042,
        "intermediate_size": 12288,
        "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 16384,
        "mlp_type": "default",
        "model_type": "starcoder2",
        "norm_epsilon": 1e-05,
        "norm_type": "layer_norm",
        "num_attention_heads": 24,
        "num_hidden_layers": 30,
        "num_key_value_heads": 2,
        "rope_theta": 999999.4420358813,
        "sliding_window": 4096,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.37.0.dev0",
        "use_bias": True,
        "use_cache": True,
        "vocab_size": 49152,
    },
}

# spec, act_fn, d_head, rotary_dim, rotary_base, window of the first layer
EXPECTED: dict[str, tuple[str, str, int, int, float, int | None]] = {
    "mistralai/Mistral-7B-v0.1": ("mistral", "silu", 128, 128, 1e4, 4096),
    "mistralai/Mistral-7B-v0.3": ("mistral", "silu", 128, 128, 1e6, None),
    # sliding_window 32768 is set but use_sliding_window is false: no layer slides.
    "Qwen/Qwen2.5-0.5B": ("qwen2", "silu", 64, 64, 1e6, None),
    "Qwen/Qwen3-0.6B": ("qwen3", "silu", 128, 128, 1e6, None),
    "microsoft/Phi-3-mini-4k-instruct": ("phi3", "silu", 96, 96, 1e4, 2047),
    "microsoft/Phi-3-mini-128k-instruct": ("phi3", "silu", 96, 96, 1e4, 262144),
    "microsoft/Phi-4-mini-instruct": ("phi3", "silu", 128, 96, 1e4, 262144),
    "ibm-granite/granite-3.0-2b-base": ("granite", "silu", 64, 64, 1e4, None),
    "allenai/OLMo-1B-hf": ("olmo", "silu", 128, 128, 1e4, None),
    "allenai/OLMo-2-0425-1B": ("olmo2", "silu", 128, 128, 5e5, None),
    "bigcode/starcoder2-3b": ("starcoder2", "gelu_pytorch_tanh", 128, 128, 999999.4420358813, 4096),
}


def _resolve(config: dict[str, Any]) -> Any:
    hf_config = hf_config_object(dict(config))
    return resolve_config(spec_for_hf_config(hf_config), hf_config)


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_hub_config_resolves(repo: str) -> None:
    cfg = _resolve(HUB_CONFIGS[repo])  # the guard accepts every field of the real config
    name, act, d_head, rotary_dim, base, window = EXPECTED[repo]
    assert (cfg.spec_name, cfg.act_fn, cfg.d_head, cfg.rotary_dim, cfg.rotary_base) == (
        name,
        act,
        d_head,
        rotary_dim,
        base,
    )
    assert cfg.traits["attention"].window(0) == window


def test_hub_granite_multipliers() -> None:
    cfg = _resolve(HUB_CONFIGS["ibm-granite/granite-3.0-2b-base"])
    assert cfg.traits["embedding"].scale == 12.0
    assert cfg.traits["attention"].scale == 0.015625
    assert cfg.traits["block"].residual_multiplier == 0.22
    assert cfg.traits["unembed"].logit_scale == 1 / 8


def test_hub_phi3_longrope_is_read() -> None:
    cfg = _resolve(HUB_CONFIGS["microsoft/Phi-3-mini-128k-instruct"])
    params = cfg.traits["positional"].rope_parameters
    assert params["rope_type"] == "longrope"  # HF renames the legacy "su"/"yarn" types
    assert params["original_max_position_embeddings"] == 4096


def test_hub_granite_int_logits_scaling_stays_a_float_division() -> None:
    config = {**HUB_CONFIGS["ibm-granite/granite-3.0-2b-base"], "logits_scaling": 16}
    assert _resolve(config).traits["unembed"].logit_scale == 1 / 16


@pytest.mark.parametrize(
    "repo", ["Qwen/Qwen2.5-0.5B", "bigcode/starcoder2-3b", "microsoft/Phi-3-mini-4k-instruct"]
)
def test_hub_config_field_hf_never_reads_is_accepted_and_recorded(repo: str) -> None:
    # Refusal of fields HF reads is tested in tests/unit/test_guard.py; an unread key is recorded.
    cfg = _resolve({**HUB_CONFIGS[repo], "some_new_switch": True})
    assert "some_new_switch" in cfg.extra["config_guard"]["not_read_by_hf"]


def test_hub_config_field_hf_reads_and_the_spec_does_not_is_refused() -> None:
    # Llama's attention honours attention_chunk_size (masking_utils); the llama spec does not.
    real = Path(__file__).parents[1] / "data/hub_configs/meta-llama__Llama-3.2-1B-Instruct.json"
    config = {**json.loads(real.read_text()), "attention_chunk_size": 8}
    with pytest.raises(UnsupportedConfigError, match="attention_chunk_size"):
        _resolve(config)

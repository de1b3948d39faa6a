"""Family A vs HuggingFace: gpt_neo, gptj, codegen, opt, bloom, gpt_bigcode, falcon.

Every spec and test variant (the variant specs selected by ``hf.match`` included) goes through the
parity tool: tiny seeded checkpoint → save_pretrained → tlcore's loader → logits, every layer's
residual stream and the processed model's log-probs. The sensitivity tests then break one feature
of a loaded model at a time and check that parity fails, so each test config really exercises what
its spec claims (local layers, interleaved partial rotary, ALiBi placement and Falcon's bf16 slopes,
the embedding LayerNorm...). Structure tests pin the fused-QKV splits to HF's rows, and real hub
config.json files check the config guard and the spec each one resolves to.
"""

from __future__ import annotations

from dataclasses import replace
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
    no_windows,
    rotate_half,
    windows_everywhere,
    zero_q_bias,
)
from tlcore.testing.tiny import spec_cases

FAMILY = [
    "gpt_neo",
    "gptj",
    "codegen",
    "opt",
    "opt_post_norm",
    "bloom",
    "gpt_bigcode",
    "falcon",
    "falcon_sequential",
    "falcon_alibi",
    "falcon_alibi_sequential",
]
ATOL = 1e-4


CASES = spec_cases(FAMILY)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert result.logits_max_diff < ATOL, result.message
    spec = get_registry().get_spec(name)
    assert len(result.layer_max_diffs) >= 2
    assert max(result.layer_max_diffs) < ATOL, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < ATOL, result.message
    assert spec.parity.attn_for(variant) == ("sdpa" if name.startswith("falcon_alibi") else "eager")


# -- sensitivity: break one feature of the tlcore model, parity must fail ------------------------


def _zero_unembed_bias(m: Any) -> None:
    with torch.no_grad():
        m.unembed.b_U.zero_()


def _positions_without_offset(m: Any) -> None:
    # HF's table row p + 2 is position p; reading rows from 0 would shift every position by two.
    W_pos = m.pos_embed.W_pos
    with torch.no_grad():
        W_pos.copy_(torch.cat([torch.zeros_like(W_pos[:2]), W_pos[:-2]]))


def _no_embed_norm(m: Any) -> None:
    m.embed.ln = None


def _alibi_post_scale(m: Any) -> None:
    m.pos_embed.pre_scale = False


def _alibi_pre_scale(m: Any) -> None:
    m.pos_embed.pre_scale = True


def _alibi_fp32_slopes(m: Any) -> None:
    m.pos_embed.in_bf16 = False


def _swap_norms(m: Any) -> None:
    with torch.no_grad():
        for block in m.blocks:
            w = block.ln1.w.clone()
            block.ln1.w.copy_(block.ln2.w)
            block.ln2.w.copy_(w)


def _one_shared_norm(m: Any) -> None:
    for block in m.blocks:
        attn, mlp = block.wiring.branches
        block.wiring = replace(block.wiring, branches=(attn, replace(mlp, norm="ln1")))


SENSITIVITY: list[tuple[str, str | None, Any]] = [
    ("gpt_neo", None, no_windows),
    ("gpt_neo", None, windows_everywhere),
    ("gpt_neo", None, head_dim_scale),
    ("gptj", None, rotate_half),
    ("gptj", None, full_rotary),
    ("gptj", None, _zero_unembed_bias),
    ("codegen", None, rotate_half),
    ("codegen", None, full_rotary),
    ("opt", None, _positions_without_offset),
    ("opt_post_norm", None, _swap_norms),
    ("bloom", None, _no_embed_norm),
    ("bloom", None, _alibi_pre_scale),
    ("gpt_bigcode", "unscaled", head_dim_scale),
    ("falcon", "new_arch", _one_shared_norm),
    ("falcon", "per_head", zero_q_bias),
    ("falcon_sequential", None, _swap_norms),
    ("falcon_alibi", None, _alibi_post_scale),
    ("falcon_alibi", None, _alibi_fp32_slopes),
    ("falcon_alibi_sequential", None, _alibi_fp32_slopes),
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


@pytest.mark.parametrize("name", ["opt", "falcon", "gpt_bigcode", "codegen"])
def test_in_memory_hf_model_loads_like_the_saved_folder(tiny_checkpoint: Any, name: str) -> None:
    # hf_model= reads HF's in-memory state dict, the folder what save_pretrained wrote (tied
    # weights once): the spec's weight map must serve both.
    variant = {"opt": "project_in_out", "falcon": "new_arch"}.get(name)
    folder, hf_model = tiny_checkpoint(name, variant)
    from_memory = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf_model, device="cpu"
    )
    from_disk = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    disk_params = dict(from_disk.named_parameters())
    for param_name, param in from_memory.named_parameters():
        assert torch.equal(param, disk_params[param_name]), param_name
    tokens = parity_tokens(from_disk.cfg.d_vocab)
    assert logits_diff(from_memory, hf_model, tokens) < ATOL


# -- structure: windows per layer, fused splits, variant selection --------------------------------


def test_gpt_neo_local_layers_follow_attention_types(parity_cases: Any) -> None:
    model, _, _ = parity_cases.load("gpt_neo")  # [[global, local], 1], [[local], 1]
    assert [block.attn.window for block in model.blocks] == [None, 5, 5]
    assert all(block.attn.scale == 1.0 for block in model.blocks)
    model, _, _ = parity_cases.load("gpt_neo", "all_global")
    assert [block.attn.window for block in model.blocks] == [None, None]


def test_codegen_qkv_blocks_are_q_v_k(parity_cases: Any) -> None:
    model, hf_model, _ = parity_cases.load("codegen")
    qkv = hf_model.transformer.h[1].attn.qkv_proj.weight  # [4 blocks * (q|v|k) * 2 heads * 8, 64]
    attn = model.blocks[1].attn
    local = 2 * 8  # two heads of 8 per model-parallel block
    for block in range(4):
        rows = qkv[block * 3 * local : (block + 1) * 3 * local]
        q, v, k = rows[:local], rows[local : 2 * local], rows[2 * local :]
        for j in range(2):
            head = 2 * block + j
            assert torch.equal(attn.W_Q[head], q[8 * j : 8 * (j + 1)].T)
            assert torch.equal(attn.W_K[head], k[8 * j : 8 * (j + 1)].T)
            assert torch.equal(attn.W_V[head], v[8 * j : 8 * (j + 1)].T)


def test_falcon_new_arch_qkv_groups(parity_cases: Any) -> None:
    model, hf_model, _ = parity_cases.load("falcon", "new_arch")
    qkv = hf_model.transformer.h[0].self_attention.query_key_value.weight
    attn = model.blocks[0].attn  # 4 query heads, 2 key/value groups of [q q | k | v] x 16 rows
    assert attn._W_K.shape == (2, 64, 16)
    group = qkv.view(2, 4, 16, 64)
    for kv in range(2):
        assert torch.equal(attn.W_Q[2 * kv], group[kv, 0].T)
        assert torch.equal(attn.W_Q[2 * kv + 1], group[kv, 1].T)
        assert torch.equal(attn._W_K[kv], group[kv, 2].T)
        assert torch.equal(attn._W_V[kv], group[kv, 3].T)
    assert model.blocks[0].ln2 is not None  # ln_mlp


@pytest.mark.parametrize(("name", "variant"), [("gpt_bigcode", None), ("falcon", None)])
def test_multi_query_has_one_key_value_head(
    parity_cases: Any, name: str, variant: str | None
) -> None:
    model, hf_model, _ = parity_cases.load(name, variant)
    attn = model.blocks[0].attn
    assert model.cfg.n_key_value_heads == 1
    assert attn._W_K.shape == (1, 64, 16)
    fused = next(
        p
        for n, p in hf_model.named_parameters()
        if n.endswith("0.attn.c_attn.weight")
        or n.endswith("0.self_attention.query_key_value.weight")
    )
    assert fused.shape == (64 + 2 * 16, 64)  # [Q | K | V]
    assert torch.equal(attn._W_K[0], fused[64:80].T)
    assert torch.equal(attn._W_V[0], fused[80:96].T)


def test_opt_projections_fold_into_embed_and_unembed(parity_cases: Any) -> None:
    model, hf_model, _ = parity_cases.load("opt", "project_in_out")
    decoder = hf_model.model.decoder
    embed = decoder.embed_tokens.weight.double() @ decoder.project_in.weight.double().T
    unembed = (hf_model.lm_head.weight.double() @ decoder.project_out.weight.double()).T
    assert model.embed.W_E.shape == (512, 64) and model.unembed.W_U.shape == (64, 512)
    assert torch.equal(model.embed.W_E, embed.float())
    assert torch.equal(model.unembed.W_U, unembed.float())


def test_opt_post_norm_has_no_final_norm(parity_cases: Any) -> None:
    model, _, _ = parity_cases.load("opt_post_norm")
    assert model.cfg.spec_name == "opt_post_norm"
    assert model.ln_final is None or not list(model.ln_final.parameters())


@pytest.mark.parametrize(("name", "in_fp32"), [("gptj", False), ("codegen", True)])
def test_interleaved_rotary_rounds_like_hf_in_bf16(
    parity_cases: Any, name: str, in_fp32: bool
) -> None:
    # GPT-J casts its sin/cos table to the activations' dtype; CodeGen keeps it in fp32 and rounds
    # only the rotated result. In bf16 only the matching order is bit-exact.
    import importlib

    model, hf_model, _ = parity_cases.load(name)
    hf_module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    cfg, rotary = model.cfg, model.pos_embed
    assert rotary.trait.in_fp32 is in_fp32
    generator = torch.Generator().manual_seed(0)
    q = (3 * torch.randn(2, 12, cfg.n_heads, cfg.d_head, generator=generator)).bfloat16()
    positions = torch.arange(12).expand(2, 12)
    sin, cos = hf_model.transformer.rotary_emb(q, positions)
    dim = cfg.rotary_dim
    rotated = hf_module.apply_rotary_pos_emb(q[..., :dim], sin, cos)
    theirs = torch.cat([rotated, q[..., dim:]], dim=-1).to(q.dtype)
    assert torch.equal(rotary.rotate(q, positions, 0), theirs)
    copy_trait(rotary, in_fp32=not in_fp32)
    assert not torch.equal(rotary.rotate(q, positions, 0), theirs)


VARIANT_SPECS = [
    ("opt", {"do_layer_norm_before": False}, "opt_post_norm"),
    ("falcon", {"parallel_attn": False}, "falcon_sequential"),
    ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}, "falcon"),
    ("falcon", {"alibi": True}, "falcon_alibi"),
    ("falcon", {"alibi": True, "parallel_attn": False}, "falcon_alibi_sequential"),
]


@pytest.mark.parametrize(("base", "fields", "expected"), VARIANT_SPECS)
def test_config_flags_pick_the_variant_spec(
    base: str, fields: dict[str, Any], expected: str
) -> None:
    spec = get_registry().get_spec(base)
    config = {"model_type": spec.hf.model_types[0], **spec.test_config, **fields}
    assert _resolve(config).spec_name == expected


def test_bloom_refuses_residual_from_the_normed_stream() -> None:
    config = {
        **HUB_CONFIGS["bigscience/bloom-560m"],
        "apply_residual_connection_post_layernorm": True,
    }
    with pytest.raises(
        UnsupportedConfigError, match="apply_residual_connection_post_layernorm=True"
    ):
        _resolve(config)


# -- real hub configs: the guard accepts them and the config reads them right --------------------

# config.json files of released checkpoints, abridged to the fields that matter to the guard.
_SUMMARY = {
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
}
HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "EleutherAI/gpt-neo-125M": {
        "activation_function": "gelu_new",
        "architectures": ["GPTNeoForCausalLM"],
        "attention_dropout": 0,
        "attention_layers": ["global", "local"] * 6,
        "attention_types": [[["global", "local"], 6]],
        "bos_token_id": 50256,
        "embed_dropout": 0,
        "eos_token_id": 50256,
        "gradient_checkpointing": False,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": None,
        "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 2048,
        "model_type": "gpt_neo",
        "num_heads": 12,
        "num_layers": 12,
        "resid_dropout": 0,
        **_SUMMARY,
        "transformers_version": "4.9.0.dev0",
        "use_cache": True,
        "vocab_size": 50257,
        "window_size": 256,
    },
    "EleutherAI/gpt-j-6b": {
        "activation_function": "gelu_new",
        "architectures": ["GPTJForCausalLM"],
        "attn_pdrop": 0.0,
        "bos_token_id": 50256,
        "embd_pdrop": 0.0,
        "eos_token_id": 50256,
        "gradient_checkpointing": False,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gptj",
        "n_embd": 4096,
        "n_head": 16,
        "n_inner": None,
        "n_layer": 28,
        "n_positions": 2048,
        "resid_pdrop": 0.0,
        "rotary": True,
        "rotary_dim": 64,
        "scale_attn_weights": True,
        **_SUMMARY,
        "task_specific_params": {
            "text-generation": {"do_sample": True, "max_length": 50, "temperature": 1.0}
        },
        "tie_word_embeddings": False,
        "tokenizer_class": "GPT2Tokenizer",
        "transformers_version": "4.18.0.dev0",
        "use_cache": True,
        "vocab_size": 50400,
    },
    "Salesforce/codegen-350M-mono": {
        "activation_function": "gelu_new",
        "architectures": ["CodeGenForCausalLM"],
        "attn_pdrop": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 50256,
        "gradient_checkpointing": False,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "codegen",
        "n_ctx": 2048,
        "n_embd": 1024,
        "n_head": 16,
        "n_inner": None,
        "n_layer": 20,
        "n_positions": 2048,
        "resid_pdrop": 0.0,
        "rotary_dim": 32,
        "scale_attn_weights": True,
        **_SUMMARY,
        "tie_word_embeddings": False,
        "tokenizer_class": "GPT2Tokenizer",
        "torch_dtype": "float16",
        "transformers_version": "4.21.0.dev0",
        "use_cache": True,
        "vocab_size": 51200,
    },
    "facebook/opt-125m": {
        "_name_or_path": "facebook/opt-125m",
        "_remove_final_layer_norm": False,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["OPTForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": True,
        "dropout": 0.1,
        "eos_token_id": 2,
        "ffn_dim": 3072,
        "hidden_size": 768,
        "init_std": 0.02,
        "layerdrop": 0.0,
        "max_position_embeddings": 2048,
        "model_type": "opt",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "prefix": "</s>",
        "torch_dtype": "float16",
        "transformers_version": "4.21.0.dev0",
        "use_cache": True,
        "vocab_size": 50272,
        "word_embed_proj_dim": 768,
    },
    "facebook/opt-350m": {
        "_name_or_path": "facebook/opt-350m",
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["OPTForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": False,
        "dropout": 0.1,
        "eos_token_id": 2,
        "ffn_dim": 4096,
        "hidden_size": 1024,
        "init_std": 0.02,
        "layerdrop": 0.0,
        "max_position_embeddings": 2048,
        "model_type": "opt",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "pad_token_id": 1,
        "prefix": "</s>",
        "torch_dtype": "float16",
        "transformers_version": "4.20.0.dev0",
        "use_cache": True,
        "vocab_size": 50272,
        "word_embed_proj_dim": 512,
    },
    "facebook/opt-13b": {
        "_name_or_path": "facebook/opt-13b",
        "_remove_final_layer_norm": False,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["OPTForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": True,
        "dropout": 0.1,
        "eos_token_id": 2,
        "ffn_dim": 20480,
        "hidden_size": 5120,
        "init_std": 0.02,
        "layerdrop": 0.0,
        "max_position_embeddings": 2048,
        "model_type": "opt",
        "num_attention_heads": 40,
        "num_hidden_layers": 40,
        "output_projection": True,
        "pad_token_id": 1,
        "prefix": "</s>",
        "use_cache": True,
        "vocab_size": 50272,
        "word_embed_proj_dim": 5120,
    },
    "bigscience/bloom-560m": {
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_dropout": 0.0,
        "hidden_size": 1024,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "masked_softmax_fusion": True,
        "model_type": "bloom",
        "n_head": 16,
        "n_inner": None,
        "n_layer": 24,
        "offset_alibi": 100,
        "pad_token_id": 3,
        "pretraining_tp": 1,
        "skip_bias_add": True,
        "skip_bias_add_qkv": False,
        "slow_but_exact": False,
        "transformers_version": "4.26.0",
        "unk_token_id": 0,
        "use_cache": True,
        "vocab_size": 250880,
    },
    "bigcode/gpt_bigcode-santacoder": {
        "activation_function": "gelu_fast",
        "architectures": ["GPTBigCodeForCausalLM"],
        "attention_softmax_in_fp32": True,
        "attn_pdrop": 0.1,
        "bos_token_id": 49152,
        "embd_pdrop": 0.1,
        "eos_token_id": 49152,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt_bigcode",
        "multi_query": True,
        "n_embd": 2048,
        "n_head": 16,
        "n_inner": 8192,
        "n_layer": 24,
        "n_positions": 2048,
        "resid_pdrop": 0.1,
        "scale_attention_softmax_in_fp32": True,
        "scale_attn_weights": True,
        **_SUMMARY,
        "torch_dtype": "float32",
        "transformers_version": "4.27.0.dev0",
        "use_cache": True,
        "vocab_size": 49280,
    },
    "bigcode/starcoder": {
        "activation_function": "gelu",
        "architectures": ["GPTBigCodeForCausalLM"],
        "attention_softmax_in_fp32": True,
        "attn_pdrop": 0.1,
        "bos_token_id": 0,
        "embd_pdrop": 0.1,
        "eos_token_id": 0,
        "inference_runner": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "max_batch_size": None,
        "max_sequence_length": None,
        "model_type": "gpt_bigcode",
        "multi_query": True,
        "n_embd": 6144,
        "n_head": 48,
        "n_inner": 24576,
        "n_layer": 40,
        "n_positions": 8192,
        "pad_key_length": True,
        "pre_allocate_kv_cache": False,
        "resid_pdrop": 0.1,
        "scale_attention_softmax_in_fp32": True,
        "scale_attn_weights": True,
        **_SUMMARY,
        "torch_dtype": "float32",
        "transformers_version": "4.28.1",
        "use_cache": True,
        "validate_runner_input": True,
        "vocab_size": 49152,
    },
    "tiiuae/falcon-7b": {
        "alibi": False,
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["FalconForCausalLM"],
        "attention_dropout": 0.0,
        "bias": False,
        "bos_token_id": 11,
        "eos_token_id": 11,
        "hidden_dropout": 0.0,
        "hidden_size": 4544,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "falcon",
        "multi_query": True,
        "new_decoder_architecture": False,
        "num_attention_heads": 71,
        "num_hidden_layers": 32,
        "parallel_attn": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.27.4",
        "use_cache": True,
        "vocab_size": 65024,
    },
    "tiiuae/falcon-40b-instruct": {
        "alibi": False,
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["FalconForCausalLM"],
        "attention_dropout": 0.0,
        "bias": False,
        "bos_token_id": 11,
        "eos_token_id": 11,
        "hidden_dropout": 0.0,
        "hidden_size": 8192,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "falcon",
        "multi_query": True,
        "new_decoder_architecture": True,
        "num_attention_heads": 128,
        "num_hidden_layers": 60,
        "num_kv_heads": 8,
        "parallel_attn": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.28.1",
        "use_cache": True,
        "vocab_size": 65024,
    },
    "tiiuae/falcon-rw-1b": {
        "alibi": True,
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["FalconForCausalLM"],
        "attention_dropout": 0.0,
        "bias": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_dropout": 0.0,
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "falcon",
        "multi_query": False,
        "new_decoder_architecture": False,
        "num_attention_heads": 32,
        "num_hidden_layers": 24,
        "parallel_attn": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.27.4",
        "use_cache": True,
        "vocab_size": 50304,
    },
}

# repo -> (spec, n_key_value_heads, d_head, act_fn, positional kind, block kind, parallel norms)
EXPECTED: dict[str, tuple[str, int, int, str, str, str, int | None]] = {
    "EleutherAI/gpt-neo-125M": (
        "gpt_neo",
        12,
        64,
        "gelu_new",
        "learned_absolute",
        "pre_norm",
        None,
    ),
    "EleutherAI/gpt-j-6b": ("gptj", 16, 256, "gelu_new", "rotary", "parallel", 1),
    "Salesforce/codegen-350M-mono": ("codegen", 16, 64, "gelu_new", "rotary", "parallel", 1),
    "facebook/opt-125m": ("opt", 12, 64, "relu", "learned_absolute", "pre_norm", None),
    "facebook/opt-350m": ("opt_post_norm", 16, 64, "relu", "learned_absolute", "post_norm", None),
    "facebook/opt-13b": ("opt", 40, 128, "relu", "learned_absolute", "pre_norm", None),
    "bigscience/bloom-560m": ("bloom", 16, 64, "gelu_fast", "alibi", "pre_norm", None),
    "bigcode/gpt_bigcode-santacoder": (
        "gpt_bigcode",
        1,
        128,
        "gelu_fast",
        "learned_absolute",
        "pre_norm",
        None,
    ),
    "bigcode/starcoder": ("gpt_bigcode", 1, 128, "gelu", "learned_absolute", "pre_norm", None),
    "tiiuae/falcon-7b": ("falcon", 1, 64, "gelu", "rotary", "parallel", 1),
    "tiiuae/falcon-40b-instruct": ("falcon", 8, 64, "gelu", "rotary", "parallel", 2),
    "tiiuae/falcon-rw-1b": ("falcon_alibi_sequential", 32, 64, "gelu", "alibi", "pre_norm", None),
}


def _resolve(config: dict[str, Any]) -> Any:
    hf_config = hf_config_object(dict(config))
    return resolve_config(spec_for_hf_config(hf_config), hf_config)


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_hub_config_resolves(repo: str) -> None:
    cfg = _resolve(HUB_CONFIGS[repo])  # the guard accepts every field of the real config
    name, n_kv, d_head, act, positional, block, norms = EXPECTED[repo]
    assert (cfg.spec_name, cfg.n_key_value_heads, cfg.d_head, cfg.act_fn) == (
        name,
        n_kv,
        d_head,
        act,
    )
    assert cfg.traits["positional"].kind == positional
    assert cfg.traits["block"].kind == block
    assert getattr(cfg.traits["block"], "norms", None) == norms


def test_hub_gpt_neo_windows_and_gptj_rotary() -> None:
    neo = _resolve(HUB_CONFIGS["EleutherAI/gpt-neo-125M"])
    assert [neo.traits["attention"].window(i) for i in range(4)] == [None, 256, None, 256]
    gptj = _resolve(HUB_CONFIGS["EleutherAI/gpt-j-6b"])
    assert (gptj.rotary_dim, gptj.traits["positional"].style) == (64, "interleaved")
    assert gptj.traits["unembed"].bias


def test_hub_falcon_rw_alibi_is_pre_scale_in_bf16() -> None:
    trait = _resolve(HUB_CONFIGS["tiiuae/falcon-rw-1b"]).traits["positional"]
    assert (trait.placement, trait.bias_dtype) == ("pre_scale", "bfloat16")
    bloom = _resolve(HUB_CONFIGS["bigscience/bloom-560m"]).traits["positional"]
    assert (bloom.placement, bloom.bias_dtype) == ("post_scale", "float32")


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_hub_config_field_hf_never_reads_is_accepted_and_recorded(repo: str) -> None:
    # The guard refuses what HF's modelling code reads and the spec does not (tests/unit/
    # test_guard.py); a key no HF code reads cannot change HF's model, so it is only recorded.
    cfg = _resolve({**HUB_CONFIGS[repo], "some_new_switch": True})
    assert "some_new_switch" in cfg.extra["config_guard"]["not_read_by_hf"]

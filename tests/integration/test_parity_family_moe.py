"""MoE family vs HuggingFace: qwen2_moe, qwen3_moe, gpt_oss (and mixtral for layouts and hooks).

Parity runs every declared test variant through the real loading path. The layout tests check
that the in-memory fused experts (``hf_model=``) and the folder ``save_pretrained`` writes
(per-expert for Mixtral and Qwen, fused for GPT-OSS) load to the same model. The hook tests check
TransformerLens's MoE hook shapes and that tlcore routes each token to the experts HF's router
picks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tlcore.components.moe import MoE
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens
from tlcore.registry import get_registry
from tlcore.testing.tiny import spec_cases

SPECS = ["qwen2_moe", "qwen3_moe", "gpt_oss"]
CASES = spec_cases(SPECS)


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_spec_matches_hf(parity_cases, name: str, variant: str | None) -> None:
    result = parity_cases.run(name, variant).result
    assert result.ok, result.message
    assert result.logits_max_diff < 1e-4
    n_layers = get_registry().get_spec(name).test_config["num_hidden_layers"]
    assert len(result.layer_max_diffs) == n_layers
    assert max(result.layer_max_diffs) < 1e-4
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < 1e-4


def _checkpoint_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            keys |= set(handle.keys())
    return keys


# (spec, a key save_pretrained writes for the experts, the in-memory state-dict key it comes from)
LAYOUTS = [
    (
        "mixtral",
        "model.layers.0.block_sparse_moe.experts.0.w1.weight",
        "model.layers.0.mlp.experts.gate_up_proj",
    ),
    (
        "qwen2_moe",
        "model.layers.0.mlp.experts.0.gate_proj.weight",
        "model.layers.0.mlp.experts.gate_up_proj",
    ),
    (
        "qwen3_moe",
        "model.layers.0.mlp.experts.0.gate_proj.weight",
        "model.layers.0.mlp.experts.gate_up_proj",
    ),
    # GPT-OSS has no conversion mapping: fused (and x@W) on disk as in memory.
    (
        "gpt_oss",
        "model.layers.0.mlp.experts.gate_up_proj",
        "model.layers.0.mlp.experts.gate_up_proj",
    ),
]


@pytest.mark.parametrize(("name", "disk_key", "memory_key"), LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_in_memory_and_saved_layouts_agree(
    tiny_checkpoint, name: str, disk_key: str, memory_key: str
) -> None:
    folder, hf_model = tiny_checkpoint(name)
    # Both expert layouts really are exercised: the folder and the live model hold different keys.
    assert disk_key in _checkpoint_keys(folder)
    assert memory_key in hf_model.state_dict()
    from_memory = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf_model, device="cpu"
    )
    from_disk = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    memory_params = dict(from_memory.named_parameters())
    for param_name, param in from_disk.named_parameters():
        assert torch.equal(param, memory_params[param_name]), param_name
    tokens = parity_tokens(from_disk.cfg.d_vocab)
    with torch.no_grad():
        ours = from_memory(tokens)
        assert torch.equal(ours, from_disk(tokens))
        assert (ours - hf_model(tokens).logits).abs().max() < 1e-4


def _hf_routers(hf_model: nn.Module, tokens: torch.Tensor) -> dict[int, tuple[torch.Tensor, ...]]:
    """Run HF and capture each sparse layer's router output ``(logits, scores, indices)``."""
    captured: dict[int, tuple[torch.Tensor, ...]] = {}
    handles = []
    for i, layer in enumerate(hf_model.model.layers):
        for module in layer.mlp.children():
            if type(module).__name__.endswith("Router"):

                def hook(module: nn.Module, args: object, output: tuple, i: int = i) -> None:
                    captured[i] = output

                handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            hf_model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return captured


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("mixtral", None),
        ("qwen2_moe", None),
        ("qwen2_moe", "sparse_step"),
        ("qwen3_moe", None),
        ("gpt_oss", None),
    ],
)
def test_moe_hooks_shapes_and_routing(tiny_checkpoint, name: str, variant: str | None) -> None:
    folder, hf_model = tiny_checkpoint(name, variant)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    n_tokens = tokens.numel()
    routers = _hf_routers(hf_model, tokens)
    sparse = [i for i, block in enumerate(model.blocks) if isinstance(block.mlp, MoE)]
    # tlcore's dense/sparse layer split is HF's (HF has a router exactly on its sparse layers).
    assert sparse == sorted(routers)
    assert sparse, "the test config must have sparse layers"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_experts, top_k = model.cfg.num_experts, model.cfg.experts_per_token
    for i in range(model.cfg.n_layers):
        if i not in sparse:
            assert f"blocks.{i}.mlp.hook_expert_weights" not in cache
            assert cache[f"blocks.{i}.mlp.hook_post"].shape == (*tokens.shape, model.cfg.d_mlp)
            continue
        mlp = model.blocks[i].mlp
        weights = cache[f"blocks.{i}.mlp.hook_expert_weights"]
        indices = cache[f"blocks.{i}.mlp.hook_expert_indices"]
        assert weights.shape == (n_tokens, n_experts)
        assert indices.shape == (n_tokens, top_k)
        hf_logits, hf_scores, hf_indices = routers[i]
        # Same experts per token as HF (order within the k may differ only on exact ties).
        assert torch.equal(indices.sort(-1).values, hf_indices.sort(-1).values), f"layer {i}"
        if mlp.trait.routing == "softmax_topk":
            assert torch.allclose(weights, hf_logits.float().softmax(-1), atol=1e-5)
        else:
            assert torch.allclose(weights.gather(1, hf_indices), hf_scores, atol=1e-5)
            assert int((weights > 0).sum()) == n_tokens * top_k
        assert torch.allclose(weights.sum(-1), torch.ones(n_tokens), atol=1e-5)
        routed = 0
        for e in range(n_experts):
            name_post = f"blocks.{i}.mlp.experts.{e}.hook_post"
            count = int((indices == e).sum())
            if count == 0:
                assert name_post not in cache
                continue
            d_expert = mlp.experts[e].W_in.shape[1]
            assert cache[name_post].shape == (count, d_expert)
            routed += count
        assert routed == n_tokens * top_k


def test_gpt_oss_saved_config_is_what_the_spec_reads(tiny_checkpoint) -> None:
    # The tiny config must actually exercise windows, yarn and the per-layer window pattern.
    folder, _ = tiny_checkpoint("gpt_oss")
    config = json.loads((Path(folder) / "config.json").read_text())
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert config["rope_parameters"]["rope_type"] == "yarn"
    windows = [block.attn.window for block in model.blocks]
    assert windows == [5 if t == "sliding_attention" else None for t in config["layer_types"]]
    assert None in windows and 5 in windows
    assert all(block.attn.trait.sinks for block in model.blocks)


# Abridged config.json files of real checkpoints (Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B, gpt-oss-20b):
# they must pass the config guard and resolve to the behaviour HF gives them.
HUB_CONFIGS = {
    "qwen2_moe": dict(
        decoder_sparse_step=1,
        hidden_size=2048,
        intermediate_size=5632,
        max_position_embeddings=8192,
        max_window_layers=21,
        moe_intermediate_size=1408,
        norm_topk_prob=False,
        num_attention_heads=16,
        num_experts=60,
        num_experts_per_tok=4,
        num_hidden_layers=24,
        num_key_value_heads=16,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        shared_expert_intermediate_size=5632,
        sliding_window=32768,
        use_sliding_window=False,
        vocab_size=151936,
    ),
    "qwen3_moe": dict(
        attention_bias=False,
        decoder_sparse_step=1,
        head_dim=128,
        hidden_size=2048,
        intermediate_size=6144,
        max_position_embeddings=40960,
        max_window_layers=48,
        mlp_only_layers=[],
        moe_intermediate_size=768,
        norm_topk_prob=True,
        num_attention_heads=32,
        num_experts=128,
        num_experts_per_tok=8,
        num_hidden_layers=48,
        num_key_value_heads=4,
        rms_norm_eps=1e-6,
        rope_scaling=None,
        rope_theta=1000000.0,
        sliding_window=None,
        use_sliding_window=False,
        vocab_size=151936,
    ),
    "gpt_oss": dict(
        attention_bias=True,
        experts_per_token=4,
        head_dim=64,
        hidden_size=2880,
        initial_context_length=4096,
        intermediate_size=2880,
        layer_types=["sliding_attention", "full_attention"] * 12,
        max_position_embeddings=131072,
        num_attention_heads=64,
        num_experts_per_tok=4,
        num_hidden_layers=24,
        num_key_value_heads=8,
        num_local_experts=32,
        rms_norm_eps=1e-5,
        rope_scaling={
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": False,
        },
        rope_theta=150000,
        sliding_window=128,
        swiglu_limit=7.0,
        vocab_size=201088,
    ),
}
# spec -> (d_head, n_experts, top_k, renormalize, shared expert size, window per layer 0/1)
HUB_EXPECTED = {
    "qwen2_moe": (128, 60, 4, False, 5632, (None, None)),
    "qwen3_moe": (128, 128, 8, True, None, (None, None)),
    "gpt_oss": (64, 32, 4, False, None, (128, None)),
}


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_hub_configs_resolve(name: str) -> None:
    from transformers import AutoConfig

    from tlcore.config_resolution import resolve_config

    hf_config = AutoConfig.for_model(name, **HUB_CONFIGS[name])
    cfg = resolve_config(get_registry().get_spec(name), hf_config)
    moe, attn = cfg.traits["mlp"], cfg.traits["attention"]
    d_head, n_experts, top_k, renorm, shared, windows = HUB_EXPECTED[name]
    assert (cfg.d_head, cfg.num_experts, cfg.experts_per_token) == (d_head, n_experts, top_k)
    assert (moe.renormalize, moe.shared_expert_size) == (renorm, shared)
    assert (attn.window(0), attn.window(1)) == windows
    assert not any(moe.is_dense(i) for i in range(cfg.n_layers))

"""Every activation at TransformerLens's hook name and shape (reference §2), per architecture."""

from __future__ import annotations

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens

B, P = 2, 12

GPT2_LAYER_HOOKS = [
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
]


def load(tiny_checkpoint, name: str) -> HookedTransformer:
    folder, _ = tiny_checkpoint(name)
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


def test_gpt2_cache_keys_are_transformerlens_names_in_order(tiny_checkpoint) -> None:
    model = load(tiny_checkpoint, "gpt2")
    _, cache = model.run_with_cache(parity_tokens(model.cfg.d_vocab))
    expected = ["hook_embed", "hook_pos_embed"]
    for layer in range(model.cfg.n_layers):
        expected += [f"blocks.{layer}.{name}" for name in GPT2_LAYER_HOOKS]
    expected += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    assert list(cache.keys()) == expected


def test_shapes_llama_gqa_rotary(tiny_checkpoint) -> None:
    model = load(tiny_checkpoint, "llama")
    cfg = model.cfg
    H, K, d = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head
    assert K < H
    _, cache = model.run_with_cache(parity_tokens(cfg.d_vocab))
    expected = {
        "hook_embed": (B, P, cfg.d_model),
        "blocks.0.ln1.hook_scale": (B, P, 1),
        "blocks.0.attn.hook_q": (B, P, H, d),
        "blocks.0.attn.hook_k": (B, P, K, d),
        "blocks.0.attn.hook_v": (B, P, K, d),
        "blocks.0.attn.hook_rot_q": (B, P, H, d),
        "blocks.0.attn.hook_rot_k": (B, P, K, d),
        "blocks.0.attn.hook_attn_scores": (B, H, P, P),
        "blocks.0.attn.hook_pattern": (B, H, P, P),
        "blocks.0.attn.hook_z": (B, P, H, d),
        "blocks.1.mlp.hook_pre": (B, P, cfg.d_mlp),
        "blocks.1.mlp.hook_pre_linear": (B, P, cfg.d_mlp),
        "blocks.1.mlp.hook_post": (B, P, cfg.d_mlp),
        "blocks.1.hook_resid_post": (B, P, cfg.d_model),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert "hook_pos_embed" not in cache  # rotary: no positional embedding hook
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(B, H, P))
    assert (pattern.triu(1) == 0).all()  # causal


def test_rotary_hooks_rotate_and_preserve_norms(tiny_checkpoint) -> None:
    model = load(tiny_checkpoint, "gpt_neox")
    _, cache = model.run_with_cache(parity_tokens(model.cfg.d_vocab))
    q, rot_q = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_rot_q"]
    rotary_dim = model.cfg.rotary_dim
    assert rotary_dim < model.cfg.d_head  # partial rotary: the rest passes through
    assert torch.equal(q[..., rotary_dim:], rot_q[..., rotary_dim:])
    assert torch.allclose(q[:, 0], rot_q[:, 0], atol=1e-6)  # position 0: identity rotation
    assert torch.allclose(
        q[..., :rotary_dim].norm(dim=-1), rot_q[..., :rotary_dim].norm(dim=-1), atol=1e-4
    )
    assert not torch.allclose(q[:, 3:, :, :rotary_dim], rot_q[:, 3:, :, :rotary_dim])


def test_parallel_block_has_no_resid_mid(tiny_checkpoint) -> None:
    model = load(tiny_checkpoint, "gpt_neox")
    assert "blocks.0.hook_resid_mid" not in model.hook_dict
    assert "blocks.0.ln2.hook_scale" in model.hook_dict


def test_moe_hooks(tiny_checkpoint) -> None:
    model = load(tiny_checkpoint, "mixtral")
    trait = model.cfg.trait("mlp")
    _, cache = model.run_with_cache(parity_tokens(model.cfg.d_vocab))
    weights = cache["blocks.0.mlp.hook_expert_weights"]
    indices = cache["blocks.0.mlp.hook_expert_indices"]
    assert weights.shape == (B * P, trait.n_experts)
    assert indices.shape == (B * P, trait.top_k)
    assert torch.allclose(weights.sum(-1), torch.ones(B * P))
    routed = [e for e in range(trait.n_experts) if f"blocks.0.mlp.experts.{e}.hook_post" in cache]
    assert routed
    total = sum(cache[f"blocks.0.mlp.experts.{e}.hook_post"].shape[0] for e in routed)
    assert total == B * P * trait.top_k  # every token reaches exactly top_k experts
    for e in routed:
        counted = int((indices == e).sum())
        assert cache[f"blocks.0.mlp.experts.{e}.hook_post"].shape == (counted, model.cfg.d_mlp)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama", "mixtral"])
def test_every_hook_point_fires(tiny_checkpoint, name: str) -> None:
    model = load(tiny_checkpoint, name)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    model.cfg.use_hook_tokens = True
    _, cache = model.run_with_cache(parity_tokens(model.cfg.d_vocab))
    never_fired = set(model.hook_dict) - set(cache.keys())
    # hook_attn_in is the alternative to split q/k/v inputs; MoE experts fire only when routed to;
    # hook_pos_embed exists only with learned positions.
    allowed = {
        n
        for n in never_fired
        if n.endswith("hook_attn_in") or ".experts." in n or n == "hook_pos_embed"
    }
    assert never_fired == allowed

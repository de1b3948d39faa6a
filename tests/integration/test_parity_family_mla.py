"""Multi-head latent attention and DeepSeek MoE vs HuggingFace: deepseek_v2, deepseek_v3.

Parity runs every declared test variant (q-LoRA or plain q_proj, yarn with mscale_all_dim, rope
interleave or not, group-limited and noaux_tc routing, biases) through the real loading path. The
other tests check what parity alone would not: the softmax scale against HF's own attribute,
routing with a non-zero ``e_score_correction_bias`` (HF's seeded fill leaves that buffer at zero),
the latent hooks against HF's norm outputs, the hook shapes, the processing plan's verdicts, both
expert layouts, and KV-cached greedy generation against HF's ``generate``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tlcore.components.mla import MultiHeadLatentAttention
from tlcore.components.moe_grouped import GroupedMoE
from tlcore.errors import CheckpointMismatchError
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens
from tlcore.processing_plan import processing_plan
from tlcore.registry import get_registry
from tlcore.testing.tiny import build_tiny_hf_model, spec_cases

SPECS = ["deepseek_v2", "deepseek_v3"]
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


@pytest.mark.parametrize(("name", "variant"), [("deepseek_v2", "yarn"), ("deepseek_v3", None)])
def test_softmax_scale_is_hfs(parity_cases, name: str, variant: str | None) -> None:
    model, hf_model, _ = parity_cases.load(name, variant)
    for block, layer in zip(model.blocks, hf_model.model.layers):
        assert block.attn.scale == pytest.approx(layer.self_attn.scaling, rel=1e-12)
    qk_head_dim = 12 + 8
    if variant == "yarn":  # mscale_all_dim 0.707 with factor 4 enlarges the scale
        assert model.blocks[0].attn.scale > 1.1 * qk_head_dim**-0.5
    else:
        assert model.blocks[0].attn.scale == pytest.approx(qk_head_dim**-0.5)


def _hf_capture(
    hf_model: nn.Module, tokens: torch.Tensor, names: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Run HF and capture the outputs (routers: indices) of the named submodules."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in hf_model.named_modules():
        if name.endswith(names):

            def hook(module: nn.Module, args: object, output: object, name: str = name) -> None:
                captured[name] = output[2] if isinstance(output, tuple) else output

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            hf_model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _biased_v3_checkpoint(folder) -> nn.Module:
    """A tiny deepseek_v3 checkpoint whose e_score_correction_bias is random (HF leaves it 0)."""
    hf_model = build_tiny_hf_model(get_registry().get_spec("deepseek_v3"))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in hf_model.model.layers[1:]:
            bias = layer.mlp.gate.e_score_correction_bias
            bias.copy_(torch.randn(bias.shape, generator=generator))
    hf_model.save_pretrained(folder)
    return hf_model


def test_correction_bias_changes_routing_as_in_hf(tmp_path) -> None:
    hf_model = _biased_v3_checkpoint(tmp_path)
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    routers = _hf_capture(hf_model, tokens, (".mlp.gate",))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        assert (logits - hf_model(tokens).logits).abs().max() < 1e-4
    changed = False
    for i in (1, 2):
        indices = cache[f"blocks.{i}.mlp.hook_expert_indices"]
        hf_indices = routers[f"model.layers.{i}.mlp.gate"]
        assert torch.equal(indices.sort(-1).values, hf_indices.sort(-1).values), f"layer {i}"
        # The bias really moved the choice away from the plain top-k of the scores.
        scores = cache[f"blocks.{i}.mlp.hook_expert_weights"]
        plain = scores.topk(model.cfg.experts_per_token, dim=-1).indices.sort(-1).values
        changed |= not torch.equal(plain, indices.sort(-1).values)
    assert changed


@pytest.mark.parametrize(("name", "variant"), [("deepseek_v2", None), ("deepseek_v3", "no_q_lora")])
def test_hooks_shapes_and_latents_match_hf(parity_cases, name: str, variant: str | None) -> None:
    model, hf_model, tokens = parity_cases.load(name, variant)
    config = hf_model.config
    captured = _hf_capture(hf_model, tokens, ("q_a_layernorm", "kv_a_layernorm"))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    batch, pos = tokens.shape
    n, qk, v = config.num_attention_heads, config.qk_head_dim, config.v_head_dim
    assert qk != v
    for i, block in enumerate(model.blocks):
        assert isinstance(block.attn, MultiHeadLatentAttention)
        for hook in ("q", "k", "rot_q", "rot_k"):
            assert cache[f"blocks.{i}.attn.hook_{hook}"].shape == (batch, pos, n, qk)
        for hook in ("v", "z"):
            assert cache[f"blocks.{i}.attn.hook_{hook}"].shape == (batch, pos, n, v)
        assert cache[f"blocks.{i}.attn.hook_pattern"].shape == (batch, n, pos, pos)
        kv_latent = cache[f"blocks.{i}.attn.hook_kv_latent"]
        hf_kv = captured[f"model.layers.{i}.self_attn.kv_a_layernorm"]
        assert kv_latent.shape == (batch, pos, config.kv_lora_rank)
        assert torch.allclose(kv_latent, hf_kv.reshape(kv_latent.shape).to(kv_latent), atol=1e-5)
        q_name = f"blocks.{i}.attn.hook_q_latent"
        if config.q_lora_rank is None:
            assert q_name not in cache
        else:
            hf_q = captured[f"model.layers.{i}.self_attn.q_a_layernorm"]
            assert torch.allclose(cache[q_name], hf_q.to(cache[q_name]), atol=1e-5)
        # One rotary key shared by every head; the nope features pass rotation unchanged.
        nope = config.qk_nope_head_dim
        rot_k, k = cache[f"blocks.{i}.attn.hook_rot_k"], cache[f"blocks.{i}.attn.hook_k"]
        assert torch.equal(rot_k[..., nope:], rot_k[:, :, :1, nope:].expand(-1, -1, n, -1))
        assert torch.equal(rot_k[..., :nope], k[..., :nope])
        assert not torch.allclose(rot_k[:, 1:, :, nope:], k[:, 1:, :, nope:])
    dense = [i for i, b in enumerate(model.blocks) if not isinstance(b.mlp, GroupedMoE)]
    assert dense == list(range(config.first_k_dense_replace))


def test_processing_plan_folds_norms_and_refuses_value_biases(parity_cases) -> None:
    folder, hf_model = parity_cases.checkpoint("deepseek_v3")
    model = HookedTransformer.from_pretrained(str(folder), device="cpu")
    plan = model.cfg.extra["weight_processing"]
    assert plan["fold_ln"]["applied"]
    assert not plan["fold_value_biases"]["applied"]
    assert "latent attention" in plan["fold_value_biases"]["reason"]
    raw = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    full = processing_plan(raw.cfg)
    assert not full["refactor_factored_attn_matrices"][0]
    assert (
        "latent" in full["refactor_factored_attn_matrices"][1]
        or "rotary" in full["refactor_factored_attn_matrices"][1]
    )
    assert not full["center_writing_weights"][0]  # RMSNorm is not a centring norm
    # fold_ln really moved ln1 into the three residual readers and left the latent norms alone.
    ln1 = raw.blocks[1].ln1.w.detach()
    for param in ("W_Q_a", "W_KV_a", "W_K_rope"):
        expected = getattr(raw.blocks[1].attn, param) * ln1[:, None]
        assert torch.allclose(getattr(model.blocks[1].attn, param), expected, atol=1e-6)
    assert torch.equal(model.blocks[1].attn.kv_a_norm.w, raw.blocks[1].attn.kv_a_norm.w)
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf_model(tokens).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-4


def test_in_memory_and_saved_layouts_agree(parity_cases) -> None:
    folder, hf_model = parity_cases.checkpoint("deepseek_v3")
    assert "model.layers.1.mlp.experts.gate_up_proj" in hf_model.state_dict()
    from_memory = HookedTransformer.from_pretrained_no_processing(
        "deepseek_v3", hf_model=hf_model, device="cpu"
    )
    from_disk = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    memory_params = dict(from_memory.named_parameters())
    for param_name, param in from_disk.named_parameters():
        assert torch.equal(param, memory_params[param_name]), param_name


@pytest.mark.parametrize(("name", "variant"), [("deepseek_v2", None), ("deepseek_v3", "no_q_lora")])
def test_kv_cached_greedy_matches_hf_generate(parity_cases, name: str, variant: str | None) -> None:
    model, hf_model, _ = parity_cases.load(name, variant)
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 5), generator=torch.Generator().manual_seed(1))
    ours = model.generate(tokens, 10, do_sample=False, stop_at_eos=False, verbose=False)
    uncached = model.generate(
        tokens, 10, do_sample=False, stop_at_eos=False, verbose=False, use_past_kv_cache=False
    )
    theirs = hf_model.generate(
        tokens,
        max_new_tokens=10,
        min_new_tokens=10,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, uncached)
    assert len(set(ours[0, 5:].tolist())) > 1  # not a degenerate repeat of one token


def test_multi_token_prediction_layer_is_skipped_like_hf(parity_cases, tmp_path) -> None:
    # DeepSeek-V3/R1 checkpoints carry their MTP module as layer 61; HF drops it on load.
    folder, hf_model = parity_cases.checkpoint("deepseek_v3")
    tensors: dict[str, torch.Tensor] = {}
    for file in folder.glob("*.safetensors"):
        tensors.update(load_file(str(file)))
    d_model = hf_model.config.hidden_size
    mtp = {
        "model.layers.61.eh_proj.weight": torch.randn(d_model, 2 * d_model),
        "model.layers.61.enorm.weight": torch.ones(d_model),
        "model.layers.61.shared_head.head.weight": torch.randn(512, d_model),
        "model.layers.61.self_attn.kv_a_layernorm.weight": torch.ones(16),
    }
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file({**tensors, **mtp}, str(tmp_path / "model.safetensors"))
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        assert (model(tokens) - hf_model(tokens).logits).abs().max() < 1e-4
    # Only that layer: any other unread key is still reported.
    save_file(
        {**tensors, "model.layers.6.eh_proj.weight": torch.zeros(1)},
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(CheckpointMismatchError, match=r"model\.layers\.6\.eh_proj"):
        HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")


def test_router_stays_in_fp32_in_a_bf16_model(tmp_path) -> None:
    hf_model = _biased_v3_checkpoint(tmp_path)
    model = HookedTransformer.from_pretrained_no_processing(
        str(tmp_path), device="cpu", dtype=torch.bfloat16
    )
    gate = hf_model.model.layers[1].mlp.gate
    moe = model.blocks[1].mlp
    assert isinstance(moe, GroupedMoE)
    # As HF's _keep_in_fp32_modules_strict: the routing choices depend on these exact values.
    assert torch.equal(moe.e_score_correction_bias, gate.e_score_correction_bias)
    assert torch.equal(moe.W_gate.weight, gate.weight)
    assert moe.experts[0].W_in.dtype == torch.bfloat16
    assert model.blocks[1].attn.W_KV_a.dtype == torch.bfloat16
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        assert model(tokens).dtype == torch.bfloat16

"""Weight processing (tlcore.processing): exactness on every layout, guards, and what cfg records.

Every model here is tiny and has ALL parameters drawn from a seeded generator, with norm weights far
from 1 and non-zero biases, so that each fold and centring step is material: the sensitivity tests
check that getting a step wrong would be caught by the same comparison.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import pytest
import torch

from tlcore import processing, processing_steps
from tlcore.components.alibi import AlibiTrait
from tlcore.components.attention import AttentionTrait
from tlcore.components.block import (
    ParallelTrait,
    PostNormTrait,
    PostOnlyTrait,
    SandwichTrait,
)
from tlcore.components.embed import TokenEmbeddingTrait
from tlcore.components.mlp import GatedMLPTrait
from tlcore.components.moe import MoETrait
from tlcore.components.norms import LayerNormTrait, RMSNormTrait
from tlcore.components.positions import ShortformerTrait
from tlcore.components.rotary import RotaryTrait
from tlcore.components.unembed import UnembedTrait
from tlcore.config import HookedTransformerConfig
from tlcore.errors import UnsupportedConfigError
from tlcore.model import HookedTransformer
from tlcore.processing import processing_plan
from tlcore.registry import get_registry
from tlcore.testing.models import base_traits, spec_model, tokens_for, trait_model

ATOL = 1e-5  # fp32 log-softmax
ATOL64 = 1e-10  # the same maths in float64: any real error shows far above this
# Gated DeltaNet divides each head's output by its RMS (a gated RMSNorm): on the random tiny model
# some heads output ~1e-3, so fp32 rounding moved by folding (the 1 + w norms multiply in fp32, as
# HF does) grows ~1000x there. A folding error shows at 1e-2 and more. fp32 only: in float64 every
# spec computes in float64 (norms included), so folding is exact to ATOL64 there.
NOISE_GROWS = {"qwen3_next": 1e-4, "qwen3_5": 1e-4, "qwen3_5_moe": 1e-4}


# ------------------------------------------------------------------------------------- helpers
def log_probs(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).double().log_softmax(-1)


def processed_diff(model: HookedTransformer, **flags: Any) -> tuple[HookedTransformer, float]:
    """Process a copy of ``model``; return it and the max |Δ log-softmax| against the original."""
    tokens = tokens_for(model)
    processed = copy.deepcopy(model)
    processing.process_weights_(processed, **flags)
    diff = (log_probs(model, tokens) - log_probs(processed, tokens)).abs().max().item()
    return processed, diff


def block_norms(model: HookedTransformer, names: tuple[str, ...] = ("ln1", "ln2")) -> list[Any]:
    norms = [getattr(b, n, None) for b in model.blocks for n in names]
    return [n for n in norms if n is not None] + [model.ln_final]


SPECS = [
    name
    for name in ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "mixtral")
    if name in get_registry().spec_names()
]
ALL_SPECS = sorted(get_registry().spec_names())

# Layouts and traits the built-in specs do not (yet) cover, built from traits directly.
LAYOUTS: dict[str, dict[str, Any]] = {
    # GPT-J: parallel attention + MLP sharing ln1, interleaved partial rotary.
    "parallel_one_norm": base_traits(
        block=ParallelTrait(norms=1), positional=RotaryTrait(dim=4, style="interleaved")
    ),
    # BLOOM: ALiBi, LayerNorm on the embeddings.
    "alibi_embed_ln": base_traits(
        positional=AlibiTrait(), embedding=TokenEmbeddingTrait(norm=LayerNormTrait())
    ),
    # LayerNorm with bias in front of a gated MLP without a gate bias: the fold must create b_gate.
    "ln_gated": base_traits(mlp=GatedMLPTrait(act="silu")),
    # LayerNorm without parameters (OLMo-1): nothing to fold, reading weights still centred.
    "ln_no_params": base_traits(norm=LayerNormTrait(weight=False, bias=False)),
    # Gemma-2: sandwich norms with 1+w, GQA, embedding scale, score and final soft-caps.
    "sandwich_gemma2": base_traits(
        embedding=TokenEmbeddingTrait(scale=math.sqrt(32)),
        positional=RotaryTrait(dim=8),
        norm=RMSNormTrait(offset=True, weight_in_fp32=True),
        block=SandwichTrait(),
        attention=AttentionTrait(softcap=20.0),
        mlp=GatedMLPTrait(act="gelu_pytorch_tanh"),
        unembed=UnembedTrait(softcap=15.0),
    ),
    # Qwen3: RMS, GQA, per-head qk-norm.
    "qk_norm_gqa": base_traits(
        positional=RotaryTrait(dim=8),
        norm=RMSNormTrait(),
        attention=AttentionTrait(qk_norm=RMSNormTrait()),
        mlp=GatedMLPTrait(act="silu"),
    ),
    # MoE behind a LayerNorm with bias: router, experts, shared expert and its gate all read ln2.
    "moe_shared_ln": base_traits(
        mlp=MoETrait(
            n_experts=4,
            top_k=2,
            d_expert=24,
            act="silu",
            shared_expert_size=40,
            shared_expert_gate=True,
            dense_layers=[False, True],
        )
    ),
    # GPT-OSS-like: sinks and biased experts (RMS), where fold_value_biases must not apply.
    "sinks_moe": base_traits(
        positional=RotaryTrait(dim=8),
        norm=RMSNormTrait(),
        attention=AttentionTrait(bias=True, sinks=True),
        mlp=MoETrait(
            n_experts=4,
            top_k=2,
            routing="topk_softmax",
            router_bias=True,
            expert_bias=True,
            expert_kind="clamped_swiglu",
        ),
    ),
    # Post-norm layouts: no fold, no writing-weight centring.
    "post_norm": base_traits(block=PostNormTrait()),
    "post_only_olmo2": base_traits(
        positional=RotaryTrait(dim=8),
        norm=RMSNormTrait(),
        block=PostOnlyTrait(),
        mlp=GatedMLPTrait(act="silu"),
    ),
    "shortformer": base_traits(positional=ShortformerTrait()),
}
GQA_LAYOUTS = {"sandwich_gemma2", "qk_norm_gqa", "sinks_moe"}


def layout_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> HookedTransformer:
    fields = {"n_key_value_heads": 2} if name in GQA_LAYOUTS else {}
    return trait_model(dict(LAYOUTS[name]), dtype=dtype, seed=seed, **fields)


# ------------------------------------------------------------------------- exactness: the main test
@pytest.mark.parametrize("name", ALL_SPECS)
def test_every_spec_log_probs_unchanged_fp32(name: str) -> None:
    model = spec_model(name)
    processed, diff = processed_diff(model)
    assert diff < NOISE_GROWS.get(name, ATOL), f"{name}: max |Δ log-softmax| = {diff:.3g}"
    post_norm = model.cfg.trait("block").kind in ("post_norm", "post_only")
    assert processed.cfg.fold_ln is not post_norm


@pytest.mark.parametrize("name", ALL_SPECS)
def test_every_spec_log_probs_unchanged_fp64(name: str) -> None:
    model = spec_model(name, dtype=torch.float64)
    _, diff = processed_diff(model)
    assert diff < ATOL64, f"{name}: max |Δ log-softmax| = {diff:.3g}"


def test_required_specs_are_covered() -> None:
    assert {"gpt2", "gpt_neox", "llama", "mixtral"} <= set(SPECS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_log_probs_unchanged(name: str) -> None:
    _, diff = processed_diff(layout_model(name))
    assert diff < ATOL, f"{name}: max |Δ log-softmax| = {diff:.3g}"
    model64 = layout_model(name, dtype=torch.float64)
    _, diff64 = processed_diff(model64)
    assert diff64 < ATOL64, f"{name} (fp64): max |Δ log-softmax| = {diff64:.3g}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeds_gpt2_llama(seed: int) -> None:
    for name in ("gpt2", "llama"):
        _, diff = processed_diff(spec_model(name, seed=seed))
        assert diff < ATOL, f"{name} seed {seed}: {diff:.3g}"


def test_refactor_factored_attn_matrices_exact() -> None:
    for model in (
        spec_model("gpt2", dtype=torch.float64),
        layout_model("alibi_embed_ln", dtype=torch.float64),
    ):
        processed, diff = processed_diff(model, refactor_factored_attn_matrices=True)
        assert diff < ATOL64
        assert processed.cfg.refactor_factored_attn_matrices
    _, diff32 = processed_diff(spec_model("gpt2"), refactor_factored_attn_matrices=True)
    assert diff32 < ATOL


def test_exact_under_hooks_flags_and_cache_paths() -> None:
    """The explicit-score path and split-qkv inputs read the folded norms the same way."""
    model = spec_model("gpt2")
    processed = copy.deepcopy(model)
    processing.process_weights_(processed)
    tokens = tokens_for(model)
    for m in (model, processed):
        m.set_use_split_qkv_input(True)
        m.set_use_attn_result(True)
    with torch.no_grad():
        a, cache_a = model.run_with_cache(tokens)
        b, cache_b = processed.run_with_cache(tokens)
    assert (a.log_softmax(-1) - b.log_softmax(-1)).abs().max() < ATOL
    # Attention patterns do not depend on the processing.
    pattern = "blocks.1.attn.hook_pattern"
    assert torch.allclose(cache_a[pattern], cache_b[pattern], atol=1e-5)


# --------------------------------------------------------------------- the tests can fail: controls
def test_dropping_norm_weights_without_folding_is_detected() -> None:
    model = spec_model("gpt2")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for norm in block_norms(broken):
            norm.w.fill_(1.0)
            norm.b.zero_()
    tokens = tokens_for(model)
    assert (log_probs(model, tokens) - log_probs(broken, tokens)).abs().max() > 1e-2


def test_centring_writing_weights_under_rms_is_detected() -> None:
    """Why the guard exists: centring writes is not exact when RMSNorm reads the residual."""
    model = spec_model("llama")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        processing_steps.center_writing_weights_(broken)
    tokens = tokens_for(model)
    assert (log_probs(model, tokens) - log_probs(broken, tokens)).abs().max() > 1e-3


def test_folding_a_sandwich_post_norm_would_be_detected() -> None:
    """Why post-norms stay: folding ln1_post's weight into W_O changes the output."""
    model = layout_model("sandwich_gemma2")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for block in broken.blocks:
            w = 1.0 + block.ln1_post.w
            block.attn.W_O.mul_(w)
            block.ln1_post.w.zero_()
    tokens = tokens_for(model)
    assert (log_probs(model, tokens) - log_probs(broken, tokens)).abs().max() > 1e-3


def test_processing_actually_changes_weights_and_logits() -> None:
    model = spec_model("gpt2")
    processed = copy.deepcopy(model)
    processing.process_weights_(processed)
    assert not torch.allclose(model.blocks[0].attn.W_Q, processed.blocks[0].attn.W_Q)
    tokens = tokens_for(model)
    with torch.no_grad():
        raw, new = model(tokens), processed(tokens)
    shift = raw - new
    # Logits move by a per-position constant, not zero.
    assert shift.abs().max() > 1e-2
    assert (shift - shift.mean(-1, keepdim=True)).abs().max() < 1e-4


# ----------------------------------------------------------------------------- what cfg records
def test_flags_and_reasons_recorded_gpt2() -> None:
    processed, _ = processed_diff(spec_model("gpt2"))
    cfg = processed.cfg
    assert (
        cfg.fold_ln,
        cfg.center_writing_weights,
        cfg.center_unembed,
        cfg.fold_value_biases,
        cfg.refactor_factored_attn_matrices,
    ) == (True, True, True, True, False)
    assert cfg.normalization_type == "LNPre"
    record = cfg.extra["weight_processing"]
    assert set(record) == set(processing.FLAGS) - {"refactor_factored_attn_matrices"}
    assert all(entry["applied"] and entry["reason"] for entry in record.values())


def test_flags_recorded_llama_rms() -> None:
    processed, _ = processed_diff(spec_model("llama"))
    cfg = processed.cfg
    assert cfg.fold_ln and cfg.center_unembed and cfg.fold_value_biases
    assert cfg.center_writing_weights is False
    assert "rmsnorm" in cfg.extra["weight_processing"]["center_writing_weights"]["reason"]
    assert cfg.normalization_type == "RMSPre"


def test_flags_not_requested_are_not_touched() -> None:
    model = spec_model("gpt2")
    processing.process_weights_(
        model,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=True,
        fold_value_biases=False,
    )
    assert model.cfg.center_unembed and not model.cfg.fold_ln
    assert model.cfg.normalization_type == "LN"
    assert "fold_ln" not in model.cfg.extra["weight_processing"]
    assert isinstance(model.blocks[0].ln1.w, torch.nn.Parameter)


def test_processing_plan_shape() -> None:
    plan = processing_plan(spec_model("gpt2").cfg)
    assert list(plan) == list(processing.FLAGS)
    for applies, reason in plan.values():
        assert isinstance(applies, bool) and isinstance(reason, str) and reason
    assert plan["refactor_factored_attn_matrices"][0]  # learned positions: allowed
    assert not processing_plan(spec_model("llama").cfg)["refactor_factored_attn_matrices"][0]


# ------------------------------------------------------------------------ structural postconditions
@pytest.mark.parametrize("name", ALL_SPECS)
def test_norms_lose_their_parameters(name: str) -> None:
    model = spec_model(name)
    if not processing_plan(model.cfg)["fold_ln"][0]:
        # Post-norm layouts keep their norms (test_post_norm_layouts_refuse_fold_and_centring).
        assert model.cfg.trait("block").kind in ("post_norm", "post_only")
        return
    processed, _ = processed_diff(model)
    for norm in block_norms(processed):
        assert not list(norm.parameters())  # the parameter-free Pre form, whatever the kind
    names = [n for n, _ in processed.named_parameters()]
    assert not [n for n in names if ".ln1." in n or ".ln2." in n or n.startswith("ln_final")]


def test_rebuilding_from_processed_cfg_loads_the_processed_state_dict() -> None:
    """cfg describes the folded norms (LNPre), so HookedTransformer(cfg) matches the state dict."""
    for processed, _ in (processed_diff(spec_model("gpt2")), processed_diff(spec_model("llama"))):
        rebuilt = HookedTransformer(processed.cfg)
        rebuilt.load_state_dict(processed.state_dict(), strict=True)
        tokens = tokens_for(processed)
        assert torch.allclose(log_probs(rebuilt, tokens), log_probs(processed, tokens), atol=1e-6)


def test_writing_weights_zero_mean_after_centring() -> None:
    processed, _ = processed_diff(spec_model("gpt2"))
    tensors = {"W_E": processed.embed.W_E, "W_pos": processed.pos_embed.W_pos}
    for i, block in enumerate(processed.blocks):
        tensors.update(
            {
                f"{i}.W_O": block.attn.W_O,
                f"{i}.b_O": block.attn.b_O,
                f"{i}.W_out": block.mlp.W_out,
                f"{i}.b_out": block.mlp.b_out,
            }
        )
    for name, tensor in tensors.items():
        assert tensor.mean(-1).abs().max() < 1e-6, name


def test_moe_experts_centred_and_router_folded() -> None:
    model = layout_model("moe_shared_ln")
    processed, diff = processed_diff(model)
    assert diff < ATOL
    assert processed.cfg.fold_ln and processed.cfg.center_writing_weights
    moe = processed.blocks[0].mlp
    for expert in [*moe.experts, moe.shared_expert]:
        assert expert.W_out.mean(-1).abs().max() < 1e-6
        assert expert.b_out.mean().abs() < 1e-6
        # Reading weights centred over d_model (LayerNorm).
        assert expert.W_in.mean(0).abs().max() < 1e-6
        assert expert.W_gate.mean(0).abs().max() < 1e-6
    # The LayerNorm bias needed somewhere to go: router and shared-expert gate gained biases.
    assert isinstance(moe.W_gate.bias, torch.nn.Parameter)
    assert isinstance(moe.shared_expert_gate.bias, torch.nn.Parameter)
    assert moe.W_gate.weight.mean(-1).abs().max() < 1e-6
    # The dense layer (a gated MLP) is folded and centred too.
    assert processed.blocks[1].mlp.W_out.mean(-1).abs().max() < 1e-6


def test_ln_gated_creates_gate_bias() -> None:
    model = layout_model("ln_gated")
    assert model.blocks[0].mlp.b_gate is None
    processed, diff = processed_diff(model)
    assert diff < ATOL
    assert isinstance(processed.blocks[0].mlp.b_gate, torch.nn.Parameter)
    assert "blocks.0.mlp.b_gate" in dict(processed.named_parameters())


def test_center_unembed_zero_mean_over_vocab() -> None:
    model = spec_model("gpt2")
    processing.center_unembed(model)
    assert model.unembed.W_U.mean(-1).abs().max() < 1e-6
    assert model.unembed.b_U.mean().abs() < 1e-6
    assert model.cfg.center_unembed


def test_fold_value_biases_gqa_maths_on_hand_built_tensors() -> None:
    model = spec_model("llama")  # 4 query heads, 2 key/value heads
    attn = model.blocks[0].attn
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    assert group == 2
    expected = attn.b_O.detach().clone()
    for h in range(model.cfg.n_heads):
        expected += attn._b_V[h // group].detach() @ attn.W_O[h].detach()
    processing.fold_value_biases(model)
    assert torch.allclose(attn.b_O, expected, atol=1e-6)
    assert torch.count_nonzero(attn._b_V) == 0
    assert attn._b_V.shape == (2, model.cfg.d_head)


def test_fold_layer_norm_maths_on_hand_built_tensors() -> None:
    model = spec_model("gpt2")
    ln, attn, unembed = model.blocks[0].ln1, model.blocks[0].attn, model.unembed
    w, b = ln.w.detach().clone(), ln.b.detach().clone()
    W_Q, b_Q = attn.W_Q.detach().clone(), attn.b_Q.detach().clone()
    W_U, b_U, w_f, b_f = (
        unembed.W_U.detach().clone(),
        unembed.b_U.detach().clone(),
        model.ln_final.w.detach().clone(),
        model.ln_final.b.detach().clone(),
    )
    processing.fold_layer_norm(model)
    folded = W_Q * w[None, :, None]
    assert torch.allclose(attn.W_Q, folded - folded.mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(attn.b_Q, b_Q + torch.einsum("m,hmd->hd", b, W_Q), atol=1e-5)
    folded_u = W_U * w_f[:, None]
    assert torch.allclose(unembed.W_U, folded_u - folded_u.mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(unembed.b_U, b_U + b_f @ W_U, atol=1e-5)


def test_gemma_offset_norm_folds_one_plus_w() -> None:
    model = layout_model("sandwich_gemma2")
    ln2 = model.blocks[0].ln2
    mlp = model.blocks[0].mlp
    w_eff = 1.0 + ln2.w.detach().clone()
    W_in = mlp.W_in.detach().clone()
    processing.fold_layer_norm(model)
    # RMS: no centring of the reading weights.
    assert torch.allclose(mlp.W_in, W_in * w_eff[:, None], atol=1e-6)
    assert ln2.w is None


def test_refactor_maths() -> None:
    model = spec_model("gpt2", dtype=torch.float64)
    attn = model.blocks[0].attn

    def qk_eff() -> torch.Tensor:
        q = torch.cat([attn.W_Q, attn.b_Q[:, None]], 1)
        k = torch.cat([attn.W_K, attn.b_K[:, None]], 1)
        return q @ k.transpose(-1, -2)

    qk, ov = qk_eff().detach(), (attn.W_V @ attn.W_O).detach()
    processing.refactor_factored_attn_matrices(model)
    assert torch.allclose(qk_eff(), qk, atol=1e-10)
    assert torch.allclose(attn.W_V @ attn.W_O, ov, atol=1e-10)
    eye = torch.eye(model.cfg.d_head, dtype=torch.float64).expand(model.cfg.n_heads, -1, -1)
    # W_O has orthonormal rows per head, so z and the head's output have the same norm.
    assert torch.allclose(attn.W_O @ attn.W_O.transpose(-1, -2), eye, atol=1e-10)
    assert torch.count_nonzero(attn.b_V) == 0


def test_dtype_and_layout_preserved_bf16() -> None:
    model = spec_model("gpt2", dtype=torch.bfloat16)
    processing.process_weights_(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    # The projection weights are back in F.linear's layout (transposed-contiguous).
    assert model.blocks[0].mlp.W_in.T.is_contiguous()
    assert model.blocks[0].attn.W_Q.permute(0, 2, 1).is_contiguous()


def test_process_twice_is_harmless() -> None:
    model = spec_model("gpt2")
    tokens = tokens_for(model)
    reference = log_probs(model, tokens)
    processing.process_weights_(model)
    processing.process_weights_(model)
    assert (log_probs(model, tokens) - reference).abs().max() < ATOL


def test_model_method_delegates() -> None:
    model = spec_model("gpt2")
    tokens = tokens_for(model)
    reference = log_probs(model, tokens)
    model.process_weights_()
    assert model.cfg.fold_ln and model.cfg.center_unembed
    assert (log_probs(model, tokens) - reference).abs().max() < ATOL


# ---------------------------------------------------------------------------------------- guards
@pytest.mark.parametrize("name", ["post_norm", "post_only_olmo2"])
def test_post_norm_layouts_refuse_fold_and_centring(name: str, caplog: Any) -> None:
    model = layout_model(name)
    with caplog.at_level(logging.WARNING, logger="tlcore.processing"):
        processed, diff = processed_diff(model)
    assert diff < ATOL
    cfg = processed.cfg
    assert cfg.fold_ln is False and cfg.center_writing_weights is False
    reason = cfg.extra["weight_processing"]["fold_ln"]["reason"]
    assert "TransformerLens refuses fold_ln for post-norm models" in reason
    assert cfg.extra["weight_processing"]["fold_ln"]["applied"] is False
    assert "fold_ln skipped" in caplog.text
    # Norm weights are untouched.
    norm_names = ("ln1", "ln2") if name == "post_norm" else ("ln1_post", "ln2_post")
    for block in processed.blocks:
        for n in norm_names:
            assert isinstance(getattr(block, n).w, torch.nn.Parameter)
    assert cfg.normalization_type in ("LN", "RMS")
    # What does apply still applies.
    assert cfg.center_unembed and cfg.fold_value_biases


def test_sandwich_folds_pre_norms_keeps_post_norms() -> None:
    processed, _ = processed_diff(layout_model("sandwich_gemma2"))
    cfg = processed.cfg
    assert cfg.fold_ln and cfg.normalization_type == "RMSPre"
    assert cfg.center_writing_weights is False
    assert "sandwich" in cfg.extra["weight_processing"]["center_writing_weights"]["reason"]
    for block in processed.blocks:
        assert block.ln1.w is None and block.ln2.w is None
        assert isinstance(block.ln1_post.w, torch.nn.Parameter)
        assert isinstance(block.ln2_post.w, torch.nn.Parameter)
    # The post-norms are built from the same trait, so it must keep its weight.
    assert cfg.trait("norm").weight and not cfg.trait("final_norm").weight


def test_softcap_disables_center_unembed() -> None:
    model = layout_model("sandwich_gemma2")
    applies, reason = processing_plan(model.cfg)["center_unembed"]
    assert not applies and "soft-cap" in reason
    W_U = model.unembed.W_U.detach().clone()
    processing.center_unembed(model)
    assert model.cfg.center_unembed is False
    assert torch.equal(model.unembed.W_U, W_U)


def test_shortformer_guards_match_transformerlens() -> None:
    processed, _ = processed_diff(layout_model("shortformer"))
    cfg = processed.cfg
    assert (cfg.fold_ln, cfg.center_writing_weights, cfg.center_unembed) == (False, False, False)
    assert cfg.fold_value_biases


def test_sinks_disable_value_bias_folding() -> None:
    processed, _ = processed_diff(layout_model("sinks_moe"))
    assert processed.cfg.fold_value_biases is False
    assert "sink" in processed.cfg.extra["weight_processing"]["fold_value_biases"]["reason"]
    assert processed.cfg.fold_ln
    assert torch.count_nonzero(processed.blocks[0].attn._b_V) > 0


def test_qk_norm_untouched() -> None:
    model = layout_model("qk_norm_gqa")
    q_w = model.blocks[0].attn.q_norm.w.detach().clone()
    processed, _ = processed_diff(model)
    assert torch.equal(processed.blocks[0].attn.q_norm.w, q_w)


def test_embedding_norm_untouched() -> None:
    processed, _ = processed_diff(layout_model("alibi_embed_ln"))
    assert isinstance(processed.embed.ln.w, torch.nn.Parameter)
    assert isinstance(processed.embed.ln.b, torch.nn.Parameter)
    assert processed.cfg.fold_ln and processed.cfg.center_writing_weights


def test_refactor_with_rotary_raises_and_changes_nothing() -> None:
    model = spec_model("gpt_neox")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedConfigError, match="rotary"):
        processing.process_weights_(model, refactor_factored_attn_matrices=True)
    with pytest.raises(UnsupportedConfigError, match="rotary"):
        processing.refactor_factored_attn_matrices(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.cfg.fold_ln is False


def test_refactor_refuses_gqa() -> None:
    model = layout_model("alibi_embed_ln")
    assert processing_plan(model.cfg)["refactor_factored_attn_matrices"][0]
    gqa = trait_model(base_traits(positional=AlibiTrait()), n_key_value_heads=2)
    applies, reason = processing_plan(gqa.cfg)["refactor_factored_attn_matrices"]
    assert not applies and "grouped" in reason


def test_fold_biases_false_with_nonzero_bias_refused_untouched() -> None:
    model = spec_model("gpt2")
    W_Q = model.blocks[0].attn.W_Q.detach().clone()
    with pytest.raises(UnsupportedConfigError, match="bias"):
        processing.fold_layer_norm(model, fold_biases=False)
    assert torch.equal(model.blocks[0].attn.W_Q, W_Q)
    assert isinstance(model.blocks[0].ln1.w, torch.nn.Parameter)


def test_center_weights_false_keeps_reading_means() -> None:
    model = spec_model("gpt2")
    tokens = tokens_for(model)
    reference = log_probs(model, tokens)
    processing.fold_layer_norm(model, center_weights=False)
    assert model.blocks[0].attn.W_Q.mean(1).abs().max() > 1e-3
    assert (log_probs(model, tokens) - reference).abs().max() < ATOL


def test_plan_for_hand_written_config_follows_its_fields() -> None:
    """A TransformerLens-style config gets traits from its flat fields, and a plan from those."""
    fields = {
        "d_model": 8,
        "n_layers": 1,
        "n_ctx": 4,
        "d_head": 4,
        "n_heads": 2,
        "d_vocab": 10,
        "act_fn": "relu",
    }
    layer_norm = processing_plan(HookedTransformerConfig(**fields, normalization_type="LN"))
    assert layer_norm["fold_ln"][0] and layer_norm["center_writing_weights"][0]
    rms = processing_plan(HookedTransformerConfig(**fields, normalization_type="RMS"))
    assert rms["fold_ln"][0] and not rms["center_writing_weights"][0]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_from_pretrained_processed_matches_no_processing(name: str) -> None:
    """Through the real loader: from_pretrained (processed) vs from_pretrained_no_processing.

    In float64: tiny.py's checkpoints have N(0, 1) embeddings and unembedding, so log-probs reach
    -60 and fp32 noise alone is ~3e-5 there (as between tlcore and HF unprocessed).
    """
    from tlcore.testing.tiny import build_tiny_hf_model

    hf_model = build_tiny_hf_model(get_registry().get_spec(name))
    kwargs: dict[str, Any] = {"hf_model": hf_model, "device": "cpu", "dtype": torch.float64}
    raw = HookedTransformer.from_pretrained_no_processing(name, **kwargs)
    processed = HookedTransformer.from_pretrained(name, **kwargs)
    assert processed.cfg.fold_ln and not raw.cfg.fold_ln
    assert processed.cfg.extra["weight_processing"]["fold_ln"]["applied"]
    tokens = tokens_for(raw)
    diff = (log_probs(raw, tokens) - log_probs(processed, tokens)).abs().max()
    assert diff < 1e-9, f"max |Δ log-softmax| = {diff:.3g}"


def test_components_without_linear_io_are_not_processed() -> None:
    """A plugin component that does not declare linear_io is never folded into (nor centred)."""
    from typing import Literal

    from tlcore.spec.traits import Trait

    class OpaqueMLPTrait(Trait):
        slot = "mlp"
        kind: Literal["opaque"] = "opaque"

    cfg = spec_model("gpt2").cfg
    cfg.traits["mlp"] = OpaqueMLPTrait()
    plan = processing_plan(cfg)
    for flag in ("fold_ln", "center_writing_weights"):
        applies, reason = plan[flag]
        assert not applies and "linear_io" in reason and "'opaque'" in reason

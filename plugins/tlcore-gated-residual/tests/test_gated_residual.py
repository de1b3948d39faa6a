"""A plugin's block layout and norm kind get tlcore's analysis, processing and parity for free.

Nothing in tlcore knows ``block/gated_residual`` or ``norm/scalenorm``: every check below goes
through what the two kinds declare (the layout's ``BlockWiring``, the norm's ``Norm`` facts).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.parity import compare_model, parity_tokens
from tlcore.parity.cli import main as parity_main
from tlcore.registry import get_registry

ATOL = 1e-4


def _load(tiny_hf_checkpoint: Any, variant: str | None, processed: bool = False) -> tuple:
    ckpt = tiny_hf_checkpoint("gated_residual", variant)
    load = (
        HookedTransformer.from_pretrained
        if processed
        else (HookedTransformer.from_pretrained_no_processing)
    )
    model = load(str(ckpt.path), device="cpu")
    return model, ckpt.hf_model, parity_tokens(model.cfg.d_vocab)


def test_plugin_registers_its_kinds_and_spec(gated_residual) -> None:
    assert gated_residual.state == "ok"
    assert gated_residual.registered["traits"] == ["block/gated_residual", "norm/scalenorm"]
    assert gated_residual.registered["specs"] == ["gated_residual"]
    assert get_registry().traits[("block", "gated_residual")].source == gated_residual.source


def test_logit_parity_with_hf(assert_parity, variant: str | None) -> None:
    result = assert_parity("gated_residual", variant)
    assert result.logits_max_diff < ATOL
    assert max(result.layer_max_diffs) < ATOL
    assert result.processed_logprobs_max_diff < ATOL


def test_the_gates_and_norms_are_exercised(tiny_hf_checkpoint, variant: str | None) -> None:
    """Parity would be vacuous if the gates were 1 or ScaleNorm's weight were 1."""
    model, hf, tokens = _load(tiny_hf_checkpoint, variant)
    block = model.blocks[0]
    with torch.no_grad():
        assert (block.attn_gate - 1).abs().min() > 0.01 and (block.mlp_gate - 1).abs().min() > 0.01
        assert (block.ln1.g - 1).abs().item() > 0.01
    assert hasattr(block, "ln1_post") == (variant == "post_norms")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.blocks[1].mlp_gate.fill_(1.0)
    assert not compare_model(broken, hf, tokens, atol=ATOL).ok


def test_decompose_resid_sums_to_the_final_residual(tiny_hf_checkpoint, variant) -> None:
    model, _, tokens = _load(tiny_hf_checkpoint, variant)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    final = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(stack.sum(0), final, atol=1e-5, rtol=0)
    # The gated output, not the raw hook, is what the stream received.
    gated = cache["blocks.0.hook_attn_out"] * model.blocks[0].attn_gate
    torch.testing.assert_close(stack[2], gated, atol=0, rtol=0)
    mid = cache.decompose_resid(layer=1, mlp_input=True).sum(0)
    torch.testing.assert_close(mid, cache["blocks.1.hook_resid_mid"], atol=1e-5, rtol=0)


def test_full_decomposition_heads_and_neurons_add_up(tiny_hf_checkpoint, variant) -> None:
    model, _, tokens = _load(tiny_hf_checkpoint, variant)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    n = model.cfg
    assert len(labels) == n.n_layers * (n.n_heads + n.d_mlp) + 3
    torch.testing.assert_close(stack.sum(0), cache["blocks.1.hook_resid_post"], atol=2e-5, rtol=0)
    heads = cache.stack_head_results(layer=1, incl_remainder=True)
    torch.testing.assert_close(heads.sum(0), cache["blocks.1.hook_resid_pre"], atol=1e-5, rtol=0)


def test_apply_ln_to_stack_uses_scalenorm_scale(tiny_hf_checkpoint, variant) -> None:
    model, _, tokens = _load(tiny_hf_checkpoint, variant)
    _, cache = model.run_with_cache(tokens)
    normed = cache.apply_ln_to_stack(cache.decompose_resid(layer=1), layer=1).sum(0)
    torch.testing.assert_close(normed, cache["blocks.1.ln1.hook_normalized"], atol=1e-6, rtol=0)


def test_logit_attrs_add_up_on_the_processed_model(tiny_hf_checkpoint, variant) -> None:
    model, _, tokens = _load(tiny_hf_checkpoint, variant, processed=True)
    assert model.cfg.fold_ln and model.blocks[0].ln1.g is None
    logits, cache = model.run_with_cache(tokens)
    correct, wrong = tokens[:, -1], (tokens[:, -1] + 1) % model.cfg.d_vocab
    stack = cache.decompose_resid(pos_slice=-1)
    attrs = cache.logit_attrs(stack, tokens=correct, incorrect_tokens=wrong, pos_slice=-1)
    rows = torch.arange(tokens.shape[0])
    diff = logits[rows, -1, correct] - logits[rows, -1, wrong]
    bias = model.b_U[correct] - model.b_U[wrong]
    assert attrs.shape == (len(stack), tokens.shape[0])
    torch.testing.assert_close(attrs.sum(0), diff - bias, atol=1e-4, rtol=0)


def test_fold_ln_keeps_the_log_probs(tiny_hf_checkpoint, variant) -> None:
    raw, _, tokens = _load(tiny_hf_checkpoint, variant)
    processed, _, _ = _load(tiny_hf_checkpoint, variant, processed=True)
    cfg = processed.cfg
    assert cfg.fold_ln and cfg.center_unembed and cfg.fold_value_biases
    plan = cfg.extra["weight_processing"]
    assert "ln1, ln2, ln_final" in plan["fold_ln"]["reason"]
    # A per-channel gate does not keep a centred write centred, and ScaleNorm does not centre.
    assert not cfg.center_writing_weights and "gate" in plan["center_writing_weights"]["reason"]
    assert processed.blocks[0].ln1.g is None and processed.ln_final.g is None
    if variant == "post_norms":  # post-norms are not readers of the stream: they keep g
        assert processed.blocks[0].ln1_post.g is not None
        assert cfg.trait("norm").weight and not cfg.trait("final_norm").weight
    with torch.no_grad():
        ours = processed(tokens).log_softmax(-1)
        theirs = raw(tokens).log_softmax(-1)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    if variant is None:  # the config describes the folded norms (post-norms share the trait)
        rebuilt = HookedTransformer(copy.deepcopy(cfg))
        names = {n for n, _ in processed.named_parameters()}
        assert {n for n, _ in rebuilt.named_parameters()} == names


def _mutate(hf: Any, layer: int, edit: str) -> Any:
    hf = copy.deepcopy(hf)
    hf_layer = hf.model.layers[layer]
    with torch.no_grad():
        if edit == "input_norm":
            hf_layer.input_norm.weight.mul_(1.5)
        elif edit == "attn_gate":
            hf_layer.attn_gate.mul_(-1.0)
        elif edit == "value":
            hf_layer.self_attn.v_proj.bias.add_(0.5)
        elif edit == "mlp_up":
            hf_layer.mlp.up_proj.weight.mul_(1.1)
        elif edit == "final_norm":
            hf.model.norm.weight.mul_(1.5)
    return hf


MUTATIONS = [
    # (layer, what is changed in the HF reference, where tlcore's parity locates it)
    (0, "input_norm", "blocks.0.ln1"),  # ScaleNorm's output (computed from hook_normalized)
    (1, "value", "blocks.1.attn.hook_v"),
    (0, "attn_gate", "blocks.0.ln2"),  # the gate acts between hook_attn_out and the MLP's input
    (1, "mlp_up", "blocks.1.mlp.hook_post"),
    (0, "final_norm", "ln_final"),
]


@pytest.mark.parametrize(("layer", "edit", "place"), MUTATIONS)
def test_parity_names_the_first_diverging_hook(tiny_hf_checkpoint, layer, edit, place) -> None:
    model, hf, tokens = _load(tiny_hf_checkpoint, None)
    assert compare_model(model, hf, tokens, atol=ATOL).ok
    result = compare_model(model, _mutate(hf, layer, edit), tokens, atol=ATOL)
    assert not result.ok
    assert result.first_hook == place, result.message


def test_tlcore_parity_command_checks_the_plugin_spec(capsys) -> None:
    assert parity_main(["--spec", "gated_residual"]) == 0
    out = capsys.readouterr().out
    assert "gated_residual/post_norms" in out and "FAILED" not in out


def test_tlcore_parity_command_names_the_first_divergence_of_a_mutated_reference(
    monkeypatch, capsys
) -> None:
    """The reference's ScaleNorm with another eps: ``tlcore parity`` points at layer 0's ln1."""
    from tlcore_gated_residual import hf_reference

    forward = hf_reference.ScaleNorm.forward
    monkeypatch.setattr(
        hf_reference.ScaleNorm, "forward", lambda self, x: forward(self, x) * (1 + 1e-2)
    )
    args = ["--spec", "gated_residual", "--no-variants", "--no-processed"]
    assert parity_main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED gated_residual: gated_residual: first divergence at blocks.0.ln1 " in out

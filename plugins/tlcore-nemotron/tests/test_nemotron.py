"""Nemotron through tlcore: registrations, logit parity with HF, and what each addition is for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tlcore_nemotron.ops import layernorm1p

from tlcore import HookedTransformer, hookimpl
from tlcore.errors import SpecError
from tlcore.parity import compare_model, parity_tokens
from tlcore.registry import get_registry

SPEC_FILE = Path(__file__).parents[1] / "src" / "tlcore_nemotron" / "specs" / "nemotron.yaml"
VARIANTS = [None, *yaml.safe_load(SPEC_FILE.read_text())["test_variants"]]


def test_plugin_registers_its_trait_op_and_spec(nemotron) -> None:
    assert nemotron.state == "ok"
    assert nemotron.registered["traits"] == ["mlp/squared_relu"]
    assert nemotron.registered["weight_ops"] == ["layernorm1p"]
    assert nemotron.registered["specs"] == ["nemotron"]
    registry = get_registry()
    assert registry.specs["nemotron"].source == nemotron.source
    assert registry.weight_ops["layernorm1p"].source == nemotron.source
    assert registry.traits[("mlp", "squared_relu")].source == nemotron.source


@pytest.mark.parametrize("variant", VARIANTS)
def test_logit_parity_with_hf(assert_parity, variant: str | None) -> None:
    result = assert_parity("nemotron", variant)
    assert result.logits_max_diff < 1e-4
    assert result.processed_logprobs_max_diff is not None


def _bf16_checkpoint(tiny_hf_checkpoint, tmp_path: Path) -> Path:
    """Nemotron checkpoints are stored in bfloat16: save the tiny model that way."""
    ckpt = tiny_hf_checkpoint("nemotron")
    folder = tmp_path / "bf16"
    ckpt.hf_model.to(torch.bfloat16).save_pretrained(folder)
    return folder


def _compare_fp32(folder: Path):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    model = HookedTransformer.from_pretrained_no_processing(str(folder), dtype=torch.float32)
    return compare_model(model, hf, parity_tokens(model.cfg.d_vocab), spec_name="nemotron")


def test_bf16_checkpoint_loaded_in_fp32_matches_hf(tiny_hf_checkpoint, tmp_path: Path) -> None:
    result = _compare_fp32(_bf16_checkpoint(tiny_hf_checkpoint, tmp_path))
    assert result.ok, result.message


class _CoreAddInsteadOfLayernorm1p:
    """The same spec with the core ``add`` op where the plugin uses ``layernorm1p``."""

    @hookimpl
    def register_specs(self, register) -> None:
        text = SPEC_FILE.read_text().replace("ops: [layernorm1p]", "ops: [{add: {value: 1.0}}]")
        assert text.count("{add: {value: 1.0}}") == 3
        register.spec(yaml.safe_load(text), override=True)


def test_core_add_op_is_not_enough_for_bf16_checkpoints(
    tiny_hf_checkpoint, tlcore_plugin, tmp_path: Path
) -> None:
    """Why the plugin has its own op: ``add`` runs in bf16 and rounds 1 + w to 8 bits."""
    folder = _bf16_checkpoint(tiny_hf_checkpoint, tmp_path)
    tlcore_plugin(_CoreAddInsteadOfLayernorm1p(), "core-add")
    assert "add" in str(get_registry().get_spec("nemotron").weights[1].ops)
    result = _compare_fp32(folder)
    assert not result.ok
    assert result.first_divergence.startswith("blocks.0")


def test_layernorm1p_adds_one_in_float32() -> None:
    w = torch.tensor([0.0123, -0.5, 1.7], dtype=torch.bfloat16)
    (out,) = layernorm1p([w], None)
    assert out.dtype == torch.float32
    assert torch.equal(out, w.float() + 1.0)
    assert not torch.equal(out, (w + 1.0).float())  # what a bf16 sum would give


class _BrokenSpec:
    """Nemotron with the LayerNorm1P weights taken as they are (missing the 1 +)."""

    @hookimpl
    def register_specs(self, register) -> None:
        text = SPEC_FILE.read_text().replace("ops: [layernorm1p]", "ops: []")
        register.spec(yaml.safe_load(text), override=True)


def test_assert_parity_names_the_first_divergence(assert_parity, tlcore_plugin) -> None:
    tlcore_plugin(_BrokenSpec(), "broken-nemotron")
    with pytest.raises(AssertionError, match=r"first divergence at blocks\.0"):
        assert_parity("nemotron", processed=False)


def test_squared_relu_hooks(tiny_hf_checkpoint) -> None:
    ckpt = tiny_hf_checkpoint("nemotron")
    model = HookedTransformer.from_pretrained_no_processing(str(ckpt.path))
    assert model.cfg.act_fn == "relu2"
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
    pre, post = cache["blocks.1.mlp.hook_pre"], cache["blocks.1.mlp.hook_post"]
    assert pre.shape == (1, 4, model.cfg.d_mlp)
    assert torch.equal(post, torch.relu(pre) ** 2)
    assert (pre < 0).any()  # the relu part is exercised


def test_weight_processing_applies(tiny_hf_checkpoint) -> None:
    """The trait declares linear_io and the norms are ordinary LayerNorms, so nothing is skipped."""
    model = HookedTransformer.from_pretrained(str(tiny_hf_checkpoint("nemotron").path))
    assert model.cfg.fold_ln and model.cfg.center_writing_weights and model.cfg.center_unembed
    assert model.cfg.normalization_type == "LNPre"
    assert model.blocks[0].ln1.w is None  # folded into W_Q/W_K/W_V


def test_other_activation_is_refused(tiny_hf_checkpoint) -> None:
    """A checkpoint asking for an activation the trait does not compute must not load."""
    ckpt = tiny_hf_checkpoint("nemotron", hidden_act="silu")
    with pytest.raises(SpecError, match="relu2"):
        HookedTransformer.from_pretrained_no_processing(str(ckpt.path))

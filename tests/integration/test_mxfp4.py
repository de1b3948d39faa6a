"""gpt-oss as published: MXFP4 expert weights, dequantised on load exactly as transformers does.

The test quantises a tiny gpt-oss checkpoint itself, in the published layout (``*_blocks`` uint8
``[expert, rows, cols/32, 16]``, ``*_scales`` uint8 ``[expert, rows, cols/32]``, a
``quantization_config`` with ``quant_method: mxfp4``), then checks tlcore's decoding against
transformers' own (``integrations.mxfp4.convert_moe_packed_tensors``) and the loaded model's logits
against HF's model holding the same dequantised weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tlcore import HookedTransformer
from tlcore.loading.mxfp4 import FP4_VALUES, SCALE_BIAS, dequantize_mxfp4, mxfp4
from tlcore.registry import get_registry
from tlcore.testing.tiny import build_tiny_hf_model

EXPERT_MATRICES = ("gate_up_proj", "down_proj")


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MX quantisation of ``w [..., rows, cols]`` along ``cols``: E8M0 scale per 32 values.

    The shared exponent is ``floor(log2(amax)) - 2`` (E2M1's largest exponent), and each element
    is rounded to the nearest FP4 value (saturating at ±6).
    """
    *lead, rows, cols = w.shape
    groups = w.reshape(*lead, rows, cols // 32, 32)
    amax = groups.abs().amax(-1).clamp(min=2.0**-100)
    exponent = torch.floor(torch.log2(amax)) - 2
    scaled = groups / torch.ldexp(torch.ones_like(amax), exponent.int())[..., None]
    grid = torch.tensor(FP4_VALUES[:8])
    magnitude = (scaled.abs()[..., None] - grid).abs().argmin(-1)
    codes = (magnitude | ((scaled < 0).to(torch.long) << 3)).to(torch.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()
    scales = (exponent + SCALE_BIAS).to(torch.uint8)
    return blocks, scales


@pytest.fixture(scope="module")
def quantised_checkpoint(tmp_path_factory) -> tuple[Path, object]:
    """A tiny gpt-oss folder in the published MXFP4 layout, and HF's model with its weights."""
    spec = get_registry().get_spec("gpt_oss")
    hf_model = build_tiny_hf_model(spec)
    folder = tmp_path_factory.mktemp("gpt_oss_mxfp4")
    hf_model.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    for layer, block in enumerate(hf_model.model.layers):
        for name in EXPERT_MATRICES:
            key = f"model.layers.{layer}.mlp.experts.{name}"
            # In memory [expert, in, out] (x @ W); published as [expert, out, in] quantised on in.
            blocks, scales = quantize_mxfp4(tensors.pop(key).transpose(1, 2))
            tensors[f"{key}_blocks"], tensors[f"{key}_scales"] = blocks, scales
            with torch.no_grad():  # HF's reference holds the very values the file stores
                getattr(block.mlp.experts, name).copy_(dequantize_mxfp4(blocks, scales).mT)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": []}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, hf_model


def test_decoding_equals_transformers_bit_for_bit():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 8, 2, 16), dtype=torch.uint8, generator=generator)
    scales = torch.randint(110, 140, (3, 8, 2), dtype=torch.uint8, generator=generator)
    reference = convert_moe_packed_tensors(blocks.clone(), scales.clone(), dtype=torch.float32)
    (ours,) = mxfp4([blocks, scales], cfg=None)
    assert ours.shape == reference.shape == (3, 64, 8)
    assert torch.equal(ours, reference)


def test_quantiser_round_trip_is_close():
    w = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(1))
    restored = dequantize_mxfp4(*quantize_mxfp4(w))
    # FP4 keeps ~1.5 significant bits: the error per value is at most half a grid step.
    assert (restored - w).abs().max() <= 0.25 * w.abs().amax()
    assert not torch.equal(restored, w)


def test_published_layout_loads_with_hf_logits(quantised_checkpoint):
    folder, hf_model = quantised_checkpoint
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert model.cfg.extra["config_guard"]
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12), generator=generator)
    with torch.no_grad():
        ours = model(tokens)
        reference = hf_model(tokens).logits
    assert (ours - reference).abs().max() < 1e-4
    # Every expert weight is exactly the decoded file content.
    hf_experts = hf_model.model.layers[0].mlp.experts
    assert torch.equal(
        model.blocks[0].mlp.experts[1].W_out, hf_experts.down_proj[1].to(model.cfg.dtype)
    )


def test_other_quantisation_methods_are_refused(quantised_checkpoint, tmp_path):
    from tlcore.errors import UnsupportedConfigError

    folder, _ = quantised_checkpoint
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    for item in folder.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match="gptq"):
        HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")

"""Block-wise FP8 checkpoints (``quant_method: fp8``), dequantised while streaming.

The tests quantise a tiny Qwen3 checkpoint themselves in the published format
(:mod:`tlcore.testing.fp8`: ``float8_e4m3fn`` weights plus float32 ``weight_scale_inv`` per block, a
``quantization_config`` as DeepSeek-V3's and Qwen3-FP8's), load it through tlcore's real loader and
compare with an independent block-by-block dequantisation and with HF:

* block sizes that divide every weight: HF's own ``from_pretrained`` on CPU (which dequantises
  FP8 checkpoints, ``dequantize=True``) is the reference, weights and logits;
* block sizes that do not (DeepSeek-V3's ``kv_a_proj_with_mqa`` is 576 rows for 128-row blocks):
  transformers 5.25's dequantising loader derives the block from the scale grid and either raises
  or, when the division happens to be exact, scales the wrong rows; so the reference there is HF's
  model holding the independently dequantised weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tlcore import HookedTransformer
from tlcore.config_resolution import resolve_config
from tlcore.errors import CheckpointFormatError, UnsupportedConfigError
from tlcore.loading.fp8 import FP8Format, FP8Source, dequantize_fp8, fp8_format
from tlcore.loading.resolve import hf_config_object
from tlcore.loading.sources import SafetensorsDirSource
from tlcore.parity.compare import compare_model, parity_tokens
from tlcore.registry import get_registry
from tlcore.testing.fp8 import (
    dequantized_reference_folder,
    load_hf_reference,
    quantize_checkpoint,
    quantize_fp8,
    reference_dequantize,
)
from tlcore.testing.shrink import build_shrunken_hf_model
from tlcore.testing.tiny import build_tiny_hf_model

DIVIDING = (16, 16)  # the tiny Qwen3's widths are 48, 64, 96, 128
PARTIAL = (32, 40)  # partial blocks on both sides of most weights
SKIPPED = "model.layers.1.mlp"  # left unquantised through modules_to_not_convert


def _checkpoint(
    folder: Path, block: tuple[int, int] | None, skip: tuple[str, ...] = (), static: bool = False
):
    spec = get_registry().get_spec("qwen3")
    hf_model = build_tiny_hf_model(spec)
    hf_model.save_pretrained(folder)
    reference = quantize_checkpoint(folder, block, skip, static)
    with torch.no_grad():  # HF's reference model holds the values the file stores
        state = hf_model.state_dict()
        for key, value in reference.items():
            state[key].copy_(value)
    return folder, hf_model, reference


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("fp8_partial"), PARTIAL, (SKIPPED,))


@pytest.fixture(scope="module")
def dividing(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("fp8_dividing"), DIVIDING)


@pytest.fixture(scope="module")
def per_tensor(tmp_path_factory):
    """Mistral's FP8 layout: one scale per weight, static activation scales."""
    return _checkpoint(tmp_path_factory.mktemp("fp8_per_tensor"), None, static=True)


def test_dequantisation_equals_transformers_bit_for_bit():
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize, _dequantize_fp8_weight

    generator = torch.Generator().manual_seed(0)
    w = (torch.randn(3, 64, 96, generator=generator) * 100).to(torch.float8_e4m3fn)
    scale = torch.rand(3, 4, 3, generator=generator)
    ours = dequantize_fp8(w, scale, (16, 32))
    theirs = Fp8Dequantize(None)._dequantize_one(w, scale, output_dtype=torch.float32)
    assert torch.equal(ours, theirs)
    # Partial blocks: transformers' own ceil-grid path (the one its FP8 backward uses).
    w = w[:, :50, :70]  # a 4 x 3 grid of 16 x 32 blocks, the last row and column partial
    ours = dequantize_fp8(w, scale, (16, 32))
    assert torch.equal(ours, _dequantize_fp8_weight(w, scale, [16, 32], torch.float32))
    assert torch.equal(ours[1], reference_dequantize(w[1], scale[1], (16, 32)))


def test_meta_dequantisation_keeps_the_shape():
    w = torch.empty(576, 112, dtype=torch.float8_e4m3fn, device="meta")
    out = dequantize_fp8(w, torch.empty(5, 1, device="meta"), (128, 128))
    assert out.is_meta and out.shape == (576, 112) and out.dtype == torch.float32


def test_source_dequantises_every_weight_and_hides_the_scales(partial):
    folder, _, reference = partial
    source = FP8Source(SafetensorsDirSource(folder), FP8Format(PARTIAL, (SKIPPED,)))
    assert not any(k.endswith("_scale_inv") for k in source.keys())
    assert len(reference) == 2 * 4 + 3  # attention in both layers, the MLP of layer 0 only
    for key, expected in reference.items():
        assert torch.equal(source.get(key), expected), key
    raw = load_file(folder / "model.safetensors")
    for name in ("gate_proj", "up_proj", "down_proj"):  # modules_to_not_convert: as stored
        key = f"{SKIPPED}.{name}.weight"
        assert raw[key].dtype == torch.float32 and torch.equal(source.get(key), raw[key])


def test_partial_blocks_load_with_hfs_logits(partial):
    folder, hf_model, _ = partial
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, 1e-4, "qwen3", "fp8 partial blocks")
    assert result.ok, result.message


def test_logits_equal_hfs_own_fp8_loading(dividing):
    from transformers import AutoModelForCausalLM

    folder, _, reference = dividing
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    hf_state = hf_model.state_dict()
    for key, expected in reference.items():  # HF's dequantisation, the test's and ours agree
        assert torch.equal(hf_state[key], expected), key
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, 1e-4, "qwen3", "fp8 HF loading")
    assert result.ok, result.message


def test_per_tensor_static_checkpoint_equals_hfs_own_loading(per_tensor):
    from transformers import AutoModelForCausalLM

    folder, _, reference = per_tensor
    raw = load_file(folder / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj"
    assert raw[f"{key}.weight_scale_inv"].shape == () and f"{key}.activation_scale" in raw
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    hf_state = hf_model.state_dict()
    for name, expected in reference.items():
        assert torch.equal(hf_state[name], expected), name
    source = FP8Source(SafetensorsDirSource(folder), fp8_format(_config(folder)))
    assert not any("activation_scale" in k or "scale_inv" in k for k in source.keys())
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, 1e-4, "qwen3", "fp8 per-tensor static")
    assert result.ok, result.message


def test_a_wrappers_fp8_config_covers_its_text_tower(tmp_path):
    """Mistral 3 (Magistral's real config) with Devstral-Small-2's real FP8 quantization_config.

    The quantisation sits on the wrapper, beside ``text_config``; per-tensor scales, static
    activation scales, the vision tower and projector unquantised.
    """
    corpus = Path(__file__).parents[1] / "data/hub_configs"
    raw = json.loads((corpus / "mistralai__Magistral-Small-2509.json").read_text())
    devstral = json.loads(
        (corpus / "mistralai__Devstral-Small-2-24B-Instruct-2512.json").read_text()
    )
    raw["quantization_config"] = devstral["quantization_config"]
    hf_model = build_shrunken_hf_model(raw)
    hf_model.save_pretrained(tmp_path)
    reference = quantize_checkpoint(tmp_path)
    assert reference and not any("vision" in k or "projector" in k for k in reference)
    hf_reference = load_hf_reference(
        dequantized_reference_folder(tmp_path, reference, tmp_path / "dequantized")
    )
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_reference, tokens, 1e-4, "mistral", "fp8 wrapper")
    assert result.ok, result.message


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["quantization_config"]


def test_requested_dtype_rounds_the_float32_product_once(dividing):
    folder, _, reference = dividing
    model = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", dtype=torch.bfloat16
    )
    expected = reference["model.layers.0.mlp.down_proj.weight"].to(torch.bfloat16)
    assert model.blocks[0].mlp.W_out.dtype == torch.bfloat16
    assert torch.equal(model.blocks[0].mlp.W_out.detach(), expected.T)


def _edited(folder: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "edited"
    out.mkdir()
    tensors = load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    edit(tensors, config)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_missing_scale_names_the_tensor(dividing, tmp_path):
    key = "model.layers.0.self_attn.k_proj.weight"
    folder = _edited(dividing[0], tmp_path, lambda t, c: t.pop(key + "_scale_inv"))
    with pytest.raises(CheckpointFormatError, match=f"'{key}' is stored as torch.float8_e4m3fn"):
        HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


def test_wrong_block_size_names_the_tensor(dividing, tmp_path):
    def edit(tensors, config):
        config["quantization_config"]["weight_block_size"] = [32, 32]

    folder = _edited(dividing[0], tmp_path, edit)
    with pytest.raises(
        CheckpointFormatError, match=r"FP8 tensor 'model\.layers\.\d+\..*scale grid"
    ):
        HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


def test_scale_on_an_unconverted_module_is_refused(dividing, tmp_path):
    def edit(tensors, config):
        config["quantization_config"]["modules_to_not_convert"] = ["model.layers.0.self_attn"]

    folder = _edited(dividing[0], tmp_path, edit)
    with pytest.raises(CheckpointFormatError, match="modules_to_not_convert lists its module"):
        HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


def test_orphan_scale_is_refused():
    class Source:
        def keys(self):
            return {"a.weight_scale_inv"}

    with pytest.raises(CheckpointFormatError, match="'a.weight_scale_inv' has no weight"):
        FP8Source(Source(), FP8Format((128, 128)))


FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"activation_scheme": "per_channel"}, "activation_scheme='per_channel'"),
        ({"weight_block_size": [0, 128]}, r"weight_block_size=\[0, 128\]"),
        ({"weight_block_size": [128]}, r"weight_block_size=\[128\]"),
        ({"fmt": "e5m2"}, "fmt='e5m2'"),
        ({"scale_fmt": "ue8m0"}, "scale_fmt='ue8m0'"),
        ({"modules_to_convert": ["embed"]}, "modules_to_convert"),
        ({"some_new_field": 1}, "some_new_field=1"),
    ],
)
def test_guard_refuses_fp8_settings_it_does_not_dequantise(change, field):
    raw = {**get_registry().get_spec("qwen3").test_config, "model_type": "qwen3"}
    raw["quantization_config"] = {**FP8, **change}
    config = hf_config_object(raw)
    with pytest.raises(UnsupportedConfigError, match=f"quantization_config.{field}"):
        resolve_config(get_registry().get_spec("qwen3"), config)


def test_guard_accepts_the_published_settings():
    qwen = json.loads(
        (Path(__file__).parents[1] / "data/hub_configs/Qwen__Qwen3-30B-A3B-FP8.json").read_text()
    )["quantization_config"]
    fmt = fp8_format(qwen)
    assert fmt.block == (128, 128)
    assert not fmt.converts("lm_head") and fmt.converts("model.layers.0.self_attn.q_proj")
    q, s = quantize_fp8(torch.ones(3, 3), (2, 2))
    assert s.shape == (2, 2) and torch.equal(reference_dequantize(q, s, (2, 2)), torch.ones(3, 3))

"""Every real ``config.json`` in ``tests/data/hub_configs`` goes all the way (issue 10).

For each real checkpoint's config (verbatim copies; ``index.yaml`` records where each came from):

1. **Guard verdict.** The guard accepts it and picks the expected spec, or refuses it for the
   reason ``index.yaml`` documents (``refuse: <text the error must contain>``).
2. **Dimensions and a dry load on the meta device.** tlcore's config has HF's own dimensions, and
   the weight map, run over the state-dict keys and shapes of HF's own ``from_config`` model built
   on ``meta``, consumes every HF tensor and fills every tlcore parameter with the right shape. No
   weight is allocated, so a 405B config is proven without downloading it.
3. **Shrunken parity.** A tiny copy of the config (same fields, small widths:
   :mod:`tlcore.testing.shrink`) goes through ``save_pretrained`` and tlcore's real loader, and
   its logits and every layer's residual stream match HF's within the spec's tolerance.

An FP8 release (``quant_method: fp8``) is dry-loaded against HF's model as its FP8 quantizer
prepares it (FP8 weights and ``*_scale_inv`` tensors, all of which must be consumed), and its
shrunken copy is stored as FP8 (:mod:`tlcore.testing.fp8`) and compared with HF's model holding
the dequantised weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tlcore import HookedTransformer
from tlcore.config_resolution import resolve_config
from tlcore.errors import TlcoreError
from tlcore.loading.loader import load_checkpoint
from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
from tlcore.loading.sources import StateDictSource
from tlcore.parity.compare import compare_model, parity_tokens
from tlcore.plan import resolve_plan
from tlcore.testing.fp8 import (
    dequantized_reference_folder,
    load_hf_reference,
    quantize_checkpoint,
    quantize_hf_skeleton,
)
from tlcore.testing.shrink import build_shrunken_hf_model, shrink_config_dict
from tlcore.testing.tiny import hf_model_from_config

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hub_configs"
INDEX: list[dict[str, Any]] = yaml.safe_load((CORPUS / "index.yaml").read_text())
ACCEPTED = [e for e in INDEX if e.get("spec") and "refuse" not in e]
REFUSED = [e for e in INDEX if "refuse" in e]


def _id(entry: dict[str, Any]) -> str:
    return entry["file"].removesuffix(".json")


def _raw(entry: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / entry["file"]).read_text())
    return data


def test_index_and_folder_agree():
    files = {p.name for p in CORPUS.glob("*.json")}
    listed = [e["file"] for e in INDEX]
    # Helpers append their entries as blocks at the end (sorted within the block) so that parallel
    # branches merge without conflicts; uniqueness is what the corpus needs.
    assert len(set(listed)) == len(listed)
    assert set(listed) == files
    for entry in INDEX:
        assert entry["source"], entry["file"]
        assert entry.get("spec") or "refuse" in entry, f"{entry['file']}: no spec and no refusal"


@pytest.mark.parametrize("entry", ACCEPTED, ids=_id)
def test_guard_accepts_and_picks_the_spec(entry: dict[str, Any]):
    config = hf_config_object(_raw(entry))
    spec = spec_for_hf_config(config)
    assert spec.name == entry["spec"]
    cfg = resolve_config(spec, config)
    assert "refused" not in cfg.extra["config_guard"]


@pytest.mark.parametrize("entry", REFUSED, ids=_id)
def test_refused_for_the_documented_reason(entry: dict[str, Any]):
    with pytest.raises(TlcoreError, match=entry["refuse"]):
        config = hf_config_object(_raw(entry))
        resolve_config(spec_for_hf_config(config), config)


def _fp8(entry: dict[str, Any]) -> bool:
    quantization = _raw(entry).get("quantization_config") or {}
    return bool(quantization.get("quant_method") == "fp8")


def _dims_from_hf(config: Any) -> dict[str, int]:
    """The dimensions HF's own config object reports (attribute_map resolves GPT-2-style names).

    For a multimodal wrapper, the language model's: HF's own ``get_text_config()``.
    """
    config = config.get_text_config()
    dims = {
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "d_vocab": config.vocab_size,
    }
    heads = getattr(config, "num_attention_heads", None)
    if heads is None:  # no attention (Mamba, Mamba-2): no heads to compare
        return dims
    kv = getattr(config, "num_key_value_heads", None) or heads
    if getattr(config, "model_type", "") == "falcon":  # before 5.25 it has no num_key_value_heads
        new_arch = config.new_decoder_architecture
        kv = config.num_kv_heads if new_arch else (1 if config.multi_query else heads)
    return {**dims, "n_heads": heads, "n_key_value_heads": kv}


@pytest.mark.parametrize("entry", ACCEPTED, ids=_id)
def test_meta_dry_load_against_hfs_meta_model(entry: dict[str, Any]):
    config = hf_config_object(_raw(entry))
    spec = spec_for_hf_config(config)
    plan = resolve_plan(spec, config, device="meta")
    cfg = plan.cfg
    for field, value in _dims_from_hf(config).items():
        assert getattr(cfg, field) == value, field
    with torch.device("meta"):
        hf_model = hf_model_from_config(config, dtype=torch.float32)
        if _fp8(
            entry
        ):  # the FP8 weights and scale tensors HF's quantizer loads the checkpoint into
            quantize_hf_skeleton(hf_model, _raw(entry)["quantization_config"])
        model = HookedTransformer(plan, move_to_device=False, init_weights=False)
    hf_shapes = {k: tuple(v.shape) for k, v in hf_model.state_dict().items()}
    # Raises CheckpointMismatchError naming every unconsumed, missing or mis-shaped tensor.
    assert plan.weights is not None
    load_checkpoint(
        model,
        plan.weights,
        StateDictSource(hf_model),
        device="meta",
        dtype=torch.float32,
        where=entry["file"],
    )
    assert all(p.is_meta for p in model.parameters())
    assert (cfg.d_vocab, cfg.d_model) in hf_shapes.values(), "no HF tensor is the embedding"


@pytest.mark.parametrize("entry", ACCEPTED, ids=_id)
def test_shrunken_config_matches_hf(entry: dict[str, Any], tmp_path: Path):
    raw = _raw(entry)
    spec = spec_for_hf_config(hf_config_object(shrink_config_dict(raw)))
    assert spec.name == entry["spec"], "shrinking changed which spec the config selects"
    hf_model = build_shrunken_hf_model(raw, spec.parity.attn_for(None))
    hf_model.save_pretrained(tmp_path)
    if _fp8(entry):  # stored as the release is: FP8 weights, compared with their dequantised values
        reference = dequantized_reference_folder(
            tmp_path, quantize_checkpoint(tmp_path), tmp_path / "dequantized"
        )
        hf_model = load_hf_reference(reference, spec.parity.attn_for(None))
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, spec.parity.atol, spec.name, entry["file"])
    assert result.ok, result.message

"""Real encoder / encoder-decoder ``config.json`` files go all the way (issue 15, item 6).

As the decoder corpus (``test_hub_configs.py``), for each file in ``hub_configs/encoders``:
the guard accepts it and picks the expected encoder spec; tlcore's config has HF's dimensions and
the weight map, run dry on the meta device over HF's own ``AutoModelForMaskedLM`` /
``AutoModelForSeq2SeqLM`` built from the config, consumes every HF tensor and fills every tlcore
parameter; a shrunken copy of the config matches HF's logits through ``save_pretrained`` and
tlcore's real loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tlcore.config_resolution import resolve_config
from tlcore.encoder_specs import encoder_spec_for_hf_config
from tlcore.hooked_encoder import HEADS, HookedEncoder
from tlcore.hooked_encoder_decoder import HookedEncoderDecoder
from tlcore.loading.loader import load_checkpoint
from tlcore.loading.resolve import hf_config_object
from tlcore.loading.sources import StateDictSource
from tlcore.plan import resolve_plan
from tlcore.testing.shrink import shrink_config_dict

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hub_configs" / "encoders"
INDEX: list[dict[str, Any]] = yaml.safe_load((CORPUS / "index.yaml").read_text())


def _id(entry: dict[str, Any]) -> str:
    return entry["file"].removesuffix(".json")


def _raw(entry: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / entry["file"]).read_text())
    return data


def _hf_class(config: Any) -> Any:
    from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForMaskedLM


def _model_class(config: Any) -> Any:
    return HookedEncoderDecoder if config.is_encoder_decoder else HookedEncoder


def test_index_and_folder_agree():
    listed = [e["file"] for e in INDEX]
    assert sorted(listed) == listed and set(listed) == {p.name for p in CORPUS.glob("*.json")}
    assert all(e["source"] and e["spec"] for e in INDEX)
    for spec in {e["spec"] for e in INDEX}:  # at least two real checkpoints per spec
        assert sum(e["spec"] == spec for e in INDEX) >= 2, spec


@pytest.mark.parametrize("entry", INDEX, ids=_id)
def test_guard_accepts_and_picks_the_spec(entry: dict[str, Any]):
    config = hf_config_object(_raw(entry))
    spec = encoder_spec_for_hf_config(config, "test")
    assert spec.name == entry["spec"]
    assert "refused" not in resolve_config(spec, config).extra["config_guard"]


@pytest.mark.parametrize("entry", INDEX, ids=_id)
def test_meta_dry_load_against_hfs_meta_model(entry: dict[str, Any]):
    config = hf_config_object(_raw(entry))
    plan = resolve_plan(encoder_spec_for_hf_config(config, "test"), config, device="meta")
    hf_dims = {
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "d_vocab": config.vocab_size,
    }
    assert {k: getattr(plan.cfg, k) for k in hf_dims} == hf_dims
    with torch.device("meta"):
        hf_model = _hf_class(config).from_config(config, dtype=torch.float32)
        model = _model_class(config)(
            plan, move_to_device=False, init_weights=False, heads=("mlm_head",)
        )
    assert plan.weights is not None
    load_checkpoint(  # raises naming every unconsumed, missing or mis-shaped tensor
        model, plan.weights, StateDictSource(hf_model), device="meta", dtype=torch.float32,
        where=entry["file"],
    )  # fmt: skip
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("entry", INDEX, ids=_id)
def test_shrunken_config_matches_hf(entry: dict[str, Any], tmp_path: Path):
    tiny = shrink_config_dict(_raw(entry))
    if "num_decoder_layers" in tiny:  # shrink the decoder stack with the encoder's
        tiny["num_decoder_layers"] = tiny["num_layers"]
    config = hf_config_object(tiny)
    torch.manual_seed(0)
    hf = _hf_class(config).from_config(config, dtype=torch.float32).eval()
    hf.save_pretrained(tmp_path)
    model = _model_class(config).from_pretrained(str(tmp_path), device="cpu")
    assert model.cfg.spec_name == entry["spec"]
    tokens = torch.randint(3, config.vocab_size, (2, 12))
    with torch.no_grad():
        if config.is_encoder_decoder:
            decoder = torch.randint(3, config.vocab_size, (2, 5))
            expected = hf(input_ids=tokens, decoder_input_ids=decoder).logits
            ours = model(tokens, decoder_input=decoder)
        else:
            assert HEADS[0] in [n for n, _ in model.named_children()]
            expected, ours = hf(input_ids=tokens).logits, model(tokens)
    assert (ours - expected).abs().max() < 1e-4

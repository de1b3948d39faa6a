"""Llama 4 configs written by transformers 4.51 with ``attn_temperature_tuning: 4``.

4.51's ``Llama4TextConfig`` defaulted the field to the int 4 and its attention read it as a flag;
transformers 5.25's strict dataclass refuses an int. tlcore builds the config with the value's
truth (:func:`tlcore.loading.legacy_fields.standardize_legacy_fields`): 4 loads as a model with
temperature tuning on its NoPE layers, equal to HF's model built with ``True``; 0 as one without.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.config_resolution import resolve_config
from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
from tlcore.parity.compare import compare_model, parity_tokens

SCOUT = Path(__file__).resolve().parents[1] / "data" / "hub_configs"
SCOUT = SCOUT / "meta-llama__Llama-4-Scout-17B-16E-Instruct.json"


def test_scout_config_with_the_legacy_int_resolves_with_temperature_tuning() -> None:
    raw = json.loads(SCOUT.read_text())
    raw["text_config"]["attn_temperature_tuning"] = 4
    config = hf_config_object(raw)
    assert config.get_text_config().attn_temperature_tuning is True
    spec = spec_for_hf_config(config)
    cfg = resolve_config(spec, config)
    layers = cfg.traits["attention"].temperature_layers
    # Scout: every fourth layer is NoPE (no_rope_layers[i] == 0), 12 of 48.
    assert layers == [i % 4 == 3 for i in range(48)]


@pytest.mark.parametrize(("value", "tuned"), [(4, True), (0, False)])
def test_checkpoint_folder_with_a_numeric_flag_loads_as_its_truth(
    tiny_checkpoint: Any, tmp_path: Path, value: int, tuned: bool
) -> None:
    variant = None if tuned else "no_temperature"
    folder, hf_model = tiny_checkpoint("llama4_text", variant)
    assert hf_model.config.attn_temperature_tuning is tuned
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["attn_temperature_tuning"] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    nope = [i == 3 for i in range(4)]  # the spec's test_config: layer 3 is NoPE
    assert model.blocks[0].attn.trait.temperature_layers == (nope if tuned else None)
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        result = compare_model(model, hf_model, tokens, 1e-4, "llama4_text", str(value))
    assert result.ok, result.message

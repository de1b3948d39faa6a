"""tlcore.loading_from_pretrained: TransformerLens's names; configs read from config.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from tlcore import loading_from_pretrained as lfp
from tlcore.config_fields import TRANSFORMER_LENS_CONFIG_FIELDS, to_torch_dtype

DATA = Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2"
API = json.loads((DATA / "api.json").read_text())["loading_from_pretrained"]
TL_PRETRAINED = json.loads((DATA / "configs.json").read_text())["pretrained"]


def test_model_tables_are_transformer_lens_s() -> None:
    assert lfp.OFFICIAL_MODEL_NAMES == API["OFFICIAL_MODEL_NAMES"]
    assert lfp.MODEL_ALIASES == API["MODEL_ALIASES"]
    assert list(lfp.NEED_REMOTE_CODE_MODELS) == API["NEED_REMOTE_CODE_MODELS"]
    assert len(lfp.OFFICIAL_MODEL_NAMES) == 237
    assert lfp.get_official_model_name("gpt2-small") == "gpt2"
    assert lfp.get_official_model_name("PYTHIA-70M") == "EleutherAI/pythia-70m"
    assert lfp.DEFAULT_MODEL_ALIASES[0] == "gpt2-small"
    with pytest.raises(ValueError, match="not found"):
        lfp.get_official_model_name("my-own-model")
    labels, kind = lfp.get_checkpoint_labels("pythia-70m")
    assert kind == "step" and labels[:3] == [0, 1, 2] and labels[-1] == 143000


def config_folder(tmp_path: Path, cls: str, architecture: str) -> str:
    getattr(transformers, cls)(architectures=[architecture]).save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("official", "cls", "architecture", "differs"),
    [
        ("gpt2", "GPT2Config", "GPT2LMHeadModel", set()),
        # TransformerLens caps Mistral's n_ctx at 2048 to save memory; tlcore keeps HF's.
        ("mistralai/Mistral-7B-v0.1", "MistralConfig", "MistralForCausalLM", {"n_ctx"}),
    ],
)
def test_pretrained_config_matches_transformer_lens_converter(
    tmp_path: Path, official: str, cls: str, architecture: str, differs: set[str]
) -> None:
    """Same HF config.json, TransformerLens's hand-written converter vs tlcore's spec."""
    folder = config_folder(tmp_path, cls, architecture)
    ours = lfp.get_pretrained_model_config(folder, device="cpu").to_dict()
    theirs = TL_PRETRAINED[official]
    skip = {"model_name", "tokenizer_name"} | differs  # a folder path, not the hub id
    for key in set(TRANSFORMER_LENS_CONFIG_FIELDS) - skip:
        mine, expected = ours[key], theirs[key]
        if key == "dtype":
            mine, expected = to_torch_dtype(mine), to_torch_dtype(expected)
        assert mine == expected, key
    assert ours["tokenizer_name"] == folder and ours["init_weights"] is False


def test_pretrained_config_options(tmp_path: Path) -> None:
    folder = config_folder(tmp_path, "GPT2Config", "GPT2LMHeadModel")
    cfg = lfp.get_pretrained_model_config(
        folder, fold_ln=True, first_n_layers=3, n_ctx=64, default_prepend_bos=False,
        hf_cfg={"vocab_size": 1000},
    )  # fmt: skip
    assert cfg.normalization_type == "LNPre" and cfg.n_layers == 3 and cfg.n_ctx == 64
    assert cfg.default_prepend_bos is False and cfg.d_vocab == 1000
    assert lfp.get_num_params_of_pretrained(folder) == 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    basic = lfp.get_basic_config(folder)
    assert (basic.d_model, basic.n_heads, basic.d_mlp) == (768, 12, 3072)
    assert lfp.convert_hf_model_config(folder)["act_fn"] == "gelu_new"


def test_state_dict_under_transformer_lens_names(tiny_checkpoint) -> None:
    from tlcore import HookedTransformer

    folder, _ = tiny_checkpoint("gpt2")
    cfg = lfp.get_pretrained_model_config(str(folder), device="cpu")
    state = lfp.get_pretrained_state_dict(str(folder), cfg)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert set(state) == set(model.state_dict())
    assert all((state[k] == v).all() for k, v in model.state_dict().items())
    partial = {k: v for k, v in state.items() if k != "blocks.0.attn.W_Q"}
    assert set(lfp.fill_missing_keys(model, partial)) == set(state)

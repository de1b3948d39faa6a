"""Bad input gets a clear error that names the problem and changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tlcore.errors import (
    CheckpointMismatchError,
    HookNameError,
    UnknownArchitectureError,
    UnsupportedConfigError,
)
from tlcore.model import HookedTransformer


def copy_checkpoint(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    return target


def test_unknown_architecture_lists_supported_and_how_to_add(
    tiny_checkpoint, tmp_path: Path
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    # XGLM: a causal LM transformers knows and no tlcore spec covers.
    config["model_type"] = "xglm"
    config["architectures"] = ["XGLMForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownArchitectureError) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt))
    message = str(info.value)
    assert "model_type 'xglm'" in message and "gpt2" in message and "spec" in message


def test_missing_unexpected_and_misshaped_keys_reported_together(
    tiny_checkpoint, tmp_path: Path
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["transformer.h.1.ln_2.weight"]
    tensors["transformer.h.0.extra.weight"] = torch.zeros(3)
    tensors["transformer.h.0.mlp.c_fc.bias"] = torch.zeros(7)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt))
    message = str(info.value)
    assert "blocks.1.ln2.w" in message
    assert "transformer.h.0.extra.weight" in message
    assert "blocks.0.mlp.b_in" in message and "(7,)" in message
    assert "gpt2" in message


def test_guard_refuses_unhandled_config_fields(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("llama")
    ckpt = copy_checkpoint(folder, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["pretraining_tp"] = 1
    config["attention_chunk_size"] = 5  # not a Llama field: a silently different model
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match="attention_chunk_size"):
        HookedTransformer.from_pretrained_no_processing(str(ckpt))


def test_offline_hub_id_fails_in_a_few_lines_naming_the_ways_to_load_offline(
    monkeypatch,
) -> None:
    import traceback

    from tlcore.errors import CheckpointNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        HookedTransformer.from_pretrained("some-org/definitely-not-cached-model")
    assert isinstance(info.value, OSError)  # what TransformerLens code catches
    message = str(info.value)
    assert "'some-org/definitely-not-cached-model'" in message
    for way in ("checkpoint folder", ".gguf file", "'smollm2-135m-instruct'"):
        assert way in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    printed = "".join(traceback.format_exception(info.value))
    assert len(printed.splitlines()) < 25, printed


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointMismatchError, match="no weights"):
        HookedTransformer.from_pretrained_no_processing(str(tmp_path))


def test_bad_hook_name_suggests_close_matches(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(str(folder))
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(HookNameError, match="blocks.0.hook_resid_pre"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pr", lambda x, hook: x)])
    with pytest.raises(HookNameError, match="blocks.0.attn.hook_pattern"):
        model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_patern"])
    assert all(not hp.has_hooks for hp in model.hook_dict.values())


def test_strings_without_tokenizer_raise(tiny_checkpoint) -> None:
    from tlcore.errors import TokenizerRequiredError

    folder, _ = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(str(folder))
    with pytest.raises(TokenizerRequiredError, match="tokenizer"):
        model("hello")

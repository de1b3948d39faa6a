"""tlcore.utils has every public name of TransformerLens 2.18's utils, with the same signatures.

``tests/data/transformer_lens_2/api.json`` lists the names TransformerLens's ``utils.py`` defines or
re-exports and each callable's parameters (name, kind, default), read from TransformerLens itself.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tlcore import utils

API = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2" / "api.json").read_text()
)["transformer_lens.utils"]

# Defaults tlcore changes on purpose (each documented in the function's docstring).
CHANGED_DEFAULTS = {
    ("download_file_from_hf", "cache_dir"): "None",  # the hub cache, found when called
}


def test_every_public_name_exists() -> None:
    assert len(API["names"]) == 50
    assert [n for n in API["names"] if not hasattr(utils, n)] == []


# SliceInput is a typing alias (TransformerLens's "signature" is typing's own).
@pytest.mark.parametrize(
    "name", [n for n, sig in sorted(API["signatures"].items()) if sig and n != "SliceInput"]
)
def test_signatures_match(name: str) -> None:
    """Same parameters, kinds and defaults; tlcore may only append keyword-only ones."""
    ours = [
        [p.name, p.kind.name, None if p.default is p.empty else repr(p.default)]
        for p in inspect.signature(getattr(utils, name)).parameters.values()
    ]
    theirs = [
        [pname, kind, CHANGED_DEFAULTS.get((name, pname), default)]
        for pname, kind, default in API["signatures"][name]
    ]
    assert ours[: len(theirs)] == theirs
    assert all(kind == "KEYWORD_ONLY" and d is not None for _, kind, d in ours[len(theirs) :])


def test_activation_functions_are_transformer_lens_s() -> None:
    x = torch.linspace(-4, 4, 101)
    expected_gelu_new = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert torch.equal(utils.gelu_new(x), expected_gelu_new)
    assert torch.equal(utils.solu(x), x * torch.softmax(x, -1))
    positive = 0.8 * x * x + 0.5 * x
    negative = (torch.expm1(torch.clamp(x, max=-1e-6)) - x) * 0.8 + 0.5 * x
    assert torch.allclose(utils.xielu(x), torch.where(x > 0, positive, negative))
    assert torch.allclose(utils.XIELU()(x), utils.xielu(x), atol=1e-6)
    assert sorted(utils.ACTIVATION_FN_DICT) == sorted(
        ["solu", "solu_ln", "gelu_new", "gelu_fast", "silu", "relu", "gelu", "gelu_pytorch_tanh",
         "xielu"]
    )  # fmt: skip


def test_small_helpers() -> None:
    assert utils.is_square(torch.zeros(2, 2)) and not utils.is_square(torch.zeros(2, 3))
    assert utils.is_lower_triangular(torch.tril(torch.ones(4, 4)))
    assert not utils.is_lower_triangular(torch.ones(4, 4))
    rep = utils.repeat_along_head_dimension(torch.arange(6.0).view(1, 2, 3), 4)
    assert rep.shape == (1, 2, 4, 3) and torch.equal(rep[:, :, 2], rep[:, :, 0])
    rep[0, 0, 0, 0] = 99.0  # cloned: heads do not share memory
    assert rep[0, 0, 1, 0] == 0.0
    ns = SimpleNamespace(a=SimpleNamespace(b=1))
    utils.set_nested_attr(ns, "a.b", 2)
    assert utils.get_nested_attr(ns, "a.b") == 2
    assert utils.override_or_use_default_value(3) == 3 and utils.USE_DEFAULT_VALUE is None
    assert utils.is_library_available("torch") and not utils.is_library_available("nope_xyz")
    assert utils.calc_fan_in_and_fan_out(torch.empty(4, 16, 8)) == (16, 32)
    assert isinstance(utils.CACHE_DIR, str)


def test_locally_overriden_defaults_restore_on_exit() -> None:
    tok = SimpleNamespace(padding_side="right")
    model = SimpleNamespace(cfg=SimpleNamespace(default_prepend_bos=True), tokenizer=tok)
    with utils.LocallyOverridenDefaults(model, prepend_bos=False, padding_side="left"):
        assert model.cfg.default_prepend_bos is False and tok.padding_side == "left"
    assert model.cfg.default_prepend_bos is True and tok.padding_side == "right"
    with pytest.raises(ValueError, match="truncate"):
        utils.LocallyOverridenDefaults(model, truncate=True)


def test_check_structure_prints_mismatches(capsys: pytest.CaptureFixture[str]) -> None:
    utils.check_structure(torch.eye(3), torch.eye(3) * 2)
    utils.check_structure(torch.eye(3), -torch.eye(3))
    assert capsys.readouterr().out.splitlines() == ["PASSED", "row mismatch: [0, 1]"]


def test_get_dataset_reads_local_data(tmp_path: Path) -> None:
    import datasets

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert list(utils.get_dataset(str(jsonl))["text"]) == ["a", "b"]
    datasets.Dataset.from_dict({"text": ["x", "y", "z"]}).save_to_disk(str(tmp_path / "saved"))
    assert len(utils.get_dataset(str(tmp_path / "saved"))) == 3
    with pytest.raises(ValueError, match="pile"):
        utils.get_dataset("no-such-dataset")


def test_get_tokenizer_with_bos_reloads_to_add_bos(tmp_path: Path) -> None:
    from tlcore_offline_models import gpt2_tokenizer

    gpt2_tokenizer().save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    with_bos = utils.get_tokenizer_with_bos(tok)
    assert with_bos("hi")["input_ids"][0] == tok.bos_token_id
    assert utils.get_tokenizer_with_bos(with_bos) is with_bos

"""The fast paths of a processed load compute what the slow ones did.

- float32 weight processing reduces in float32 (cascaded sums) and works on a whole in-place
  parameter at once: its weights match the same processing in float64 to a few float32 roundings,
  both out of place and in a ``from_pretrained`` (in place);
- half-precision processing still computes each step in float64 and rounds once;
- spec YAML read through libyaml's events gives the documents, and the refusals, of the pure
  Python reader;
- the guard's scan of transformers' source, cached on disk, answers what a fresh scan answers and
  rescans a file whose size or modification time changed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tlcore import hf_config_reads, processing
from tlcore.builtin.plugin import specs_dir
from tlcore.errors import SpecError
from tlcore.model import HookedTransformer
from tlcore.spec import bounds
from tlcore.testing.models import spec_model

ROUNDINGS = 4 * 2.0**-24  # a few float32 roundings, relative to a tensor's largest value


def _close_to_reference(ours: torch.Tensor, reference: torch.Tensor) -> bool:
    scale = float(reference.detach().abs().max()) or 1.0
    return bool(((ours.detach().double() - reference.detach()).abs() <= ROUNDINGS * scale).all())


def _perturbed(name: str, dtype: torch.dtype) -> HookedTransformer:
    """A spec model whose norms have weights far from 1 and nonzero biases (every step matters)."""
    model = spec_model(name, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith((".w", ".b")):
                param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64))
    return model.to(dtype)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_float32_processing_matches_float64(name: str) -> None:
    model32 = _perturbed(name, torch.float32)
    model64 = copy.deepcopy(model32).to(torch.float64)  # the same float32 values, widened
    processing.process_weights_(model32)
    processing.process_weights_(model64)
    ours, reference = dict(model32.named_parameters()), dict(model64.named_parameters())
    assert ours.keys() == reference.keys()
    far = [k for k in ours if not _close_to_reference(ours[k], reference[k])]
    assert not far, far


def test_in_place_float32_load_matches_float64_processing(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ours = HookedTransformer.from_pretrained(str(folder), device="cpu")  # in place, float32
    reference = HookedTransformer.from_pretrained(str(folder), device="cpu", dtype=torch.float64)
    mine, theirs = dict(ours.named_parameters()), dict(reference.named_parameters())
    far = [k for k in mine if not _close_to_reference(mine[k], theirs[k])]
    assert not far, far


@pytest.mark.parametrize(
    "step", ["fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases"]
)
def test_half_precision_step_rounds_once(step: str) -> None:
    """A step on bfloat16 weights computes in float64 and rounds once: float64's result, rounded.

    (Across steps each step rounds its own output, as each stores bfloat16 parameters.)
    """
    model16 = _perturbed("gpt2", torch.bfloat16)
    model64 = copy.deepcopy(model16).to(torch.float64)
    assert getattr(processing, step)(model16) and getattr(processing, step)(model64)
    reference = dict(model64.named_parameters())
    differ = [
        k
        for k, p in model16.named_parameters()
        if not torch.equal(p, reference[k].to(torch.bfloat16))
    ]
    assert not differ, differ


# ------------------------------------------------------------------------------------- spec YAML
def _python_load(text: str) -> object:
    loader = bounds._Loader(text)
    try:
        return loader.construct_document(loader.get_single_node())
    finally:
        loader.dispose()


def test_libyaml_reader_is_used_and_reads_every_builtin_spec_identically() -> None:
    assert bounds._FastLoader is not None  # PyYAML's wheels ship libyaml
    files = sorted(specs_dir().rglob("*.yaml"))
    assert len(files) > 40
    for file in files:
        text = file.read_text(encoding="utf-8")
        assert bounds.load_yaml(text, str(file)) == _python_load(text), file


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: 1\na: 2", "duplicate key 'a'"),
        ("a: " + "[" * 80 + "]" * 80, "nested deeper than 64"),
        ("a: &x [1]\n" + "".join(f"k{i}: *x\n" for i in range(300)), "more than 256 YAML aliases"),
        ("a: \x07", "control characters"),
    ],
)
def test_libyaml_reader_keeps_the_bounds(text: str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        bounds.load_yaml(text, "x.yaml")


# ------------------------------------------------------------------------- guard's source scan
def _fresh_scan(monkeypatch: pytest.MonkeyPatch, cache: Path) -> frozenset[str] | None:
    from transformers import GPT2Config

    monkeypatch.setenv("TLCORE_CACHE_DIR", str(cache))
    for cached in (hf_config_reads._read_fields_cached, hf_config_reads._scan):
        cached.cache_clear()
    return hf_config_reads.hf_read_fields(GPT2Config)


def test_config_reads_cache_answers_like_a_scan(tmp_path: Path, monkeypatch) -> None:
    first = _fresh_scan(monkeypatch, tmp_path)  # scans and writes the cache
    stored = json.loads((tmp_path / "hf_config_reads.json").read_text())
    module = "transformers.models.gpt2.modeling_gpt2"
    assert "n_embd" in stored[module]["reads"] and "n_ctx" not in stored[module]["reads"]
    assert _fresh_scan(monkeypatch, tmp_path) == first  # answered from the cache


def test_config_reads_cache_is_used_only_for_the_same_file(tmp_path: Path, monkeypatch) -> None:
    _fresh_scan(monkeypatch, tmp_path)
    path = tmp_path / "hf_config_reads.json"
    stored = json.loads(path.read_text())
    module = "transformers.models.gpt2.modeling_gpt2"
    stored[module]["reads"].append("planted_field")
    path.write_text(json.dumps(stored))
    assert "planted_field" in (_fresh_scan(monkeypatch, tmp_path) or ())  # same stamp: used
    stored[module]["stamp"][2] -= 1  # the file "changed": its modification time differs
    path.write_text(json.dumps(stored))
    assert "planted_field" not in (_fresh_scan(monkeypatch, tmp_path) or ())  # rescanned
    for cached in (hf_config_reads._read_fields_cached, hf_config_reads._scan):
        cached.cache_clear()

"""Spec files: YAML reading, extends merging, two-pass trait validation, expressions, and every
malformed-spec error naming the file, the field and the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tlcore.errors import InvalidConfigError, SpecError
from tlcore.registry import Registry, Source, get_registry
from tlcore.spec.expressions import evaluate
from tlcore.spec.loader import read_spec_file

BUILTIN = Source("tests")

MINIMAL = """
name: tiny
hf: {model_types: [tinything]}
config: {d_model: 8}
traits:
  embedding: {kind: token}
  positional: {kind: learned_absolute}
  norm: {kind: layernorm}
  block: {kind: pre_norm}
  attention: {kind: attention}
  mlp: {kind: plain, act: relu}
  unembed: {kind: linear}
"""


def registry_with_builtin_traits() -> Registry:
    """A fresh registry holding the built-in traits and ops but no specs."""
    reg = Registry()
    builtin = get_registry()
    reg.traits = dict(builtin.traits)
    reg.weight_ops = dict(builtin.weight_ops)
    return reg


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_spec_validates(tmp_path: Path) -> None:
    reg = registry_with_builtin_traits()
    reg.add_spec(write(tmp_path, "tiny.yaml", MINIMAL), BUILTIN)
    spec = reg.get_spec("tiny")
    assert spec.traits["mlp"]["act"] == "relu"
    assert spec.source_file.endswith("tiny.yaml")


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            ("attention: {kind: attention}", "attention: {kind: flash}"),
            r"unknown attention kind 'flash'",
        ),
        (
            ("attention: {kind: attention}", "attention: {kind: attention, sofcap: 3}"),
            r"unknown parameter\(s\) \['sofcap'\]",
        ),
        (("mlp: {kind: plain, act: relu}", "mlp: {act: relu}"), r"traits\.mlp.*'kind'"),
        (
            ("  unembed: {kind: linear}\n", "  unembed: {kind: linear}\n  decoder: {kind: x}\n"),
            r"traits\.decoder.*unknown slot",
        ),
        (("  unembed: {kind: linear}\n", ""), r"traits\.unembed.*required slot is missing"),
        (("config: {d_model: 8}", "config: {d_model: {hf: [1]}}"), r"config\.d_model.*'hf' takes"),
        (
            ("config: {d_model: 8}", "config: {d_model: {mul: [1, 2, 3]}}"),
            r"config\.d_model.*two operands",
        ),
        (
            ("hf: {model_types: [tinything]}", "hf: {model_types: tinything, colour: red}"),
            r"field 'hf\.colour'",
        ),
    ],
)
def test_malformed_specs_name_file_field_and_reason(tmp_path: Path, mutation, expected) -> None:
    old, new = mutation
    assert old in MINIMAL
    reg = registry_with_builtin_traits()
    # Outside plugin loading, add_spec validates at once and leaves the registry unchanged.
    with pytest.raises(SpecError, match=expected) as info:
        reg.add_spec(write(tmp_path, "bad.yaml", MINIMAL.replace(old, new)), BUILTIN)
    assert "bad.yaml" in str(info.value)
    assert "tiny" not in reg.specs
    with reg.deferred_validation():  # plugin loading: validated later, all together
        reg.add_spec(write(tmp_path, "bad.yaml", MINIMAL.replace(old, new)), BUILTIN)
    with pytest.raises(SpecError, match=expected):
        reg.get_spec("tiny")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "name: x\ntraits: {a: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        read_spec_file(path)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "evil.yaml", "name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        read_spec_file(path)


def test_extends_merges_traits_weights_and_config(tmp_path: Path) -> None:
    reg = registry_with_builtin_traits()
    reg.add_spec(
        write(
            tmp_path,
            "tiny.yaml",
            MINIMAL + "weights:\n  - {to: embed.W_E, from: a}\n  - {to: unembed.W_U, from: b}\n",
        ),
        BUILTIN,
    )
    reg.add_spec(
        write(
            tmp_path,
            "child.yaml",
            """
        name: child
        extends: tiny
        hf: {model_types: [childthing]}
        config: {d_mlp: 32}
        traits:
          attention: {sliding_window: 4}
          mlp: {kind: gated, act: silu}
        drop_weights: [unembed.W_U]
        weights:
          - {to: embed.W_E, from: c}
        """,
        ),
        BUILTIN,
    )
    child = reg.get_spec("child")
    assert child.traits["attention"] == {"kind": "attention", "sliding_window": 4}
    assert child.traits["mlp"] == {"kind": "gated", "act": "silu"}  # another kind replaces
    assert child.config == {"d_model": 8, "d_mlp": 32}
    assert [(r.to, r.from_) for r in child.weights] == [(["embed.W_E"], ["c"])]
    assert child.hf.model_types == ["childthing"]


def test_extends_errors(tmp_path: Path) -> None:
    reg = registry_with_builtin_traits()
    with pytest.raises(SpecError, match="no architecture named 'b'"):
        reg.add_spec(
            write(tmp_path, "a.yaml", MINIMAL.replace("name: tiny", "name: a\nextends: b")),
            BUILTIN,
        )
    with reg.deferred_validation():  # as plugin loading does: validated all together later
        reg.add_spec(
            write(tmp_path, "a.yaml", MINIMAL.replace("name: tiny", "name: a\nextends: b")),
            BUILTIN,
        )
        reg.add_spec(
            write(tmp_path, "b.yaml", MINIMAL.replace("name: tiny", "name: b\nextends: a")),
            BUILTIN,
        )
        reg.add_spec(
            write(tmp_path, "c.yaml", MINIMAL.replace("name: tiny", "name: c\nextends: tinny")),
            BUILTIN,
        )
    with pytest.raises(SpecError, match="cycle"):
        reg.get_spec("a")
    with pytest.raises(SpecError, match="no architecture named 'tinny'"):
        reg.get_spec("c")


def test_expressions() -> None:
    hf = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "head_dim": None,
        "layer_types": ["s", "f", "s"],
        "rope_parameters": {"rope_theta": 1e4},
    }
    assert (
        evaluate(
            {
                "hf": "head_dim",
                "default": {"div": [{"hf": "hidden_size"}, {"hf": "num_attention_heads"}]},
            },
            hf,
        )
        == 16
    )
    assert evaluate({"map_eq": [{"hf": "layer_types"}, "s"]}, hf) == [True, False, True]
    assert evaluate({"get": [{"hf": "rope_parameters"}, "partial_rotary_factor", 1.0]}, hf) == 1.0
    assert evaluate({"int": {"mul": [16, 0.3]}}, hf) == 4
    assert (
        evaluate({"if": {"eq": [{"hf": "hidden_size"}, 64]}, "then": "yes", "else": "no"}, hf)
        == "yes"
    )
    assert evaluate({"cfg": "d_model"}, hf, {"d_model": 3}) == 3
    with pytest.raises(SpecError, match="no field 'n_embd'"):
        evaluate({"hf": "n_embd"}, hf)
    with pytest.raises(InvalidConfigError, match="not divisible"):
        evaluate({"div": [10, 3]}, hf)


def test_builtin_specs_all_validate() -> None:
    registry = get_registry()
    names = registry.spec_names()
    assert {"gpt2", "gpt_neox", "llama", "mixtral"} <= set(names)
    for name in names:
        assert registry.get_spec(name).name == name


def test_guard_unsupported_values_are_refused_by_name() -> None:
    from tlcore.config_resolution import resolve_config
    from tlcore.errors import UnsupportedConfigError
    from tlcore.loading.resolve import hf_config_object

    spec = get_registry().get_spec("gemma")
    assert spec.guard.unsupported == {"use_bidirectional_attention": [True]}
    fields = {"model_type": "gemma", **spec.test_config}
    resolve_config(spec, hf_config_object({**fields, "use_bidirectional_attention": False}))
    with pytest.raises(UnsupportedConfigError, match=r"use_bidirectional_attention=True.*gemma"):
        resolve_config(spec, hf_config_object({**fields, "use_bidirectional_attention": True}))


def test_content_hash_ignores_schema_defaults_a_spec_does_not_use():
    """A schema field added later with a default must not make every snapshot look stale."""
    from pydantic import create_model

    from tlcore.spec.schema import ArchitectureSpec

    spec = get_registry().get_spec("gpt2")
    doc = spec.model_dump(by_alias=True, exclude_defaults=True)
    grown = create_model("GrownSpec", __base__=ArchitectureSpec, added_later=(int, 7))
    assert grown.model_validate(doc).content_hash() == spec.content_hash()
    # ... while a value the spec does set still counts.
    changed = grown.model_validate({**doc, "added_later": 8})
    assert changed.content_hash() != spec.content_hash()

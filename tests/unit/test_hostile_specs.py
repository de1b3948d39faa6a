"""Hostile spec files and configs: a typed error naming the file and field, fast, changing nothing.

Each test is one bad outcome from issue 13 (alias bombs, runaway expressions, duplicate keys, a
misspelt config key, ``eps: "small"``, zero heads, a million layers, an invalid spec added to the
registry) or one of the limits behind them.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import tlcore
from tlcore.config import HookedTransformerConfig
from tlcore.config_checks import check_hf_config_values
from tlcore.errors import InvalidConfigError, PluginError, SpecError, TlcoreError
from tlcore.registry import Source, get_registry
from tlcore.spec.bounds import MAX_ALIASES, MAX_DEPTH, load_yaml
from tlcore.spec.expressions import evaluate
from tlcore.spec.loader import read_spec_file

GPT2_LIKE = {
    "d_model": 16,
    "n_layers": 2,
    "n_ctx": 8,
    "d_head": 4,
    "n_heads": 4,
    "d_vocab": 50,
    "act_fn": "gelu",
}


GPT2_HF = {
    "model_type": "gpt2",
    "n_embd": 16,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 8,
    "vocab_size": 50,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def quick(fn, *args, limit: float = 5.0, **kwargs):
    """Run ``fn`` and return the TlcoreError it raises, asserting it raised one fast."""
    start = time.perf_counter()
    with pytest.raises(TlcoreError) as info:
        fn(*args, **kwargs)
    assert time.perf_counter() - start < limit, "took too long to refuse"
    return info.value


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for n in range(1, levels):
        refs = ", ".join([f"*a{n - 1}"] * width)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "\n".join(lines)


# -- YAML ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["config", "match"])
def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path, where: str) -> None:
    bomb = alias_bomb()
    if where == "config":
        body = f"name: bomb\nextends: gpt2\nanchors:\n{textwrap.indent(bomb, '  ')}\n"
        body += "config: {d_model: *a8}\n"
    else:
        body = f"name: bomb\nextends: gpt2\nx:\n{textwrap.indent(bomb, '  ')}\n"
        body += "hf: {model_types: [gpt2], match: {n_embd: *a8}}\n"
    path = write(tmp_path, "bomb.yaml", body)
    error = quick(read_spec_file, path)
    assert isinstance(error, SpecError) and "bomb.yaml" in str(error)
    assert "alias bomb" in str(error)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "loop.yaml", "name: loop\nconfig: &c {d_model: *c}\n")
    error = quick(read_spec_file, path)
    assert "loop.yaml" in str(error)


def test_too_many_aliases_and_too_deep_nesting(tmp_path: Path) -> None:
    refs = ", ".join(["*a"] * (MAX_ALIASES + 1))
    error = quick(load_yaml, f"x: &a 1\ny: [{refs}]\n", "many.yaml")
    assert "many.yaml" in str(error) and f"more than {MAX_ALIASES} YAML aliases" in str(error)
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    error = quick(load_yaml, f"x: {deep}\n", "deep.yaml")
    assert "deep.yaml" in str(error) and "nested deeper" in str(error)
    very_deep = "[" * 100_000  # PyYAML alone would raise RecursionError
    assert "deep2.yaml" in str(quick(load_yaml, very_deep, "deep2.yaml"))


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", "name: a\nconfig:\n  d_model: 8\n  d_model: 16\n")
    error = quick(read_spec_file, path)
    assert "dup.yaml" in str(error) and "duplicate key 'd_model'" in str(error)
    assert "line 3" in str(error)
    # A merge key may be overridden by the mapping's own key (YAML's merge semantics).
    assert load_yaml("b: &b {x: 1}\nc: {<<: *b, x: 2}\n", "m.yaml")["c"] == {"x": 2}


def test_python_tags_and_huge_ints_are_refused(tmp_path: Path) -> None:
    error = quick(load_yaml, "name: !!python/object/apply:os.system ['true']\n", "evil.yaml")
    assert "evil.yaml" in str(error)
    error = quick(load_yaml, "name: " + "9" * 5000 + "\n", "big.yaml")
    assert "big.yaml" in str(error)


def test_oversized_spec_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.yaml", "name: x\n#" + "a" * (2 << 20) + "\n")
    assert "huge.yaml" in str(quick(read_spec_file, path))


def test_cyclic_or_deep_mapping_spec_is_refused() -> None:
    doc: dict = {"name": "cyclic", "extends": "gpt2"}
    doc["config"] = doc
    registry = get_registry()
    error = quick(registry.add_spec, doc, Source("tests"))
    assert "cycle" in str(error)
    deep: dict = {"name": "deep", "extends": "gpt2", "x": {}}
    node = deep["x"]
    for _ in range(MAX_DEPTH + 2):
        node["y"] = {}
        node = node["y"]
    assert "deeper" in str(quick(registry.add_spec, deep, Source("tests")))
    assert "cyclic" not in registry.specs and "deep" not in registry.specs


# -- expressions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ({"pow": [10, 100000000]}, "exceeds 64 bits"),
        ({"pow": [10, 1e8]}, "not a finite number"),
        ({"mul": ["abc", 1000000000]}, "takes numbers"),
        ({"mul": [[1], 1000000000]}, "takes numbers"),
        ({"add": ["a", "b"]}, "takes numbers"),
        ({"mul": [1e200, 1e200]}, "not a finite number"),
        ({"pow": [-8, 0.5]}, "fractional power"),
        ({"index": [[1, 2], 5]}, "out of range"),
        ({"index": ["abc", 0]}, "takes [list, integer]"),
        ({"int": "abc"}, "'int' cannot be applied"),
        ({"float": [1]}, "takes a number"),
        ({"len": 5}, "takes a list"),
        ({"min": []}, "at least one operand"),
        ({"min": [1, "a"]}, "'min' cannot be applied"),
        ({"get": [1, 2, 3, 4]}, "'get' takes"),
        ({"cfg": 3}, "not resolved"),
        ({"hf": [1]}, "'hf' takes"),
    ],
)
def test_expressions_are_bounded_and_name_the_field(expression, reason) -> None:
    error = quick(evaluate, expression, {}, {}, "spec.yaml: config.d_model", limit=1.0)
    assert isinstance(error, SpecError)
    assert str(error).startswith("spec.yaml: config.d_model")
    assert reason in str(error)


def test_expression_step_budget() -> None:
    deep = 0
    expression: object = 1
    for _ in range(12):  # a doubling tree: 2**12 operators
        expression = {"add": [expression, expression]}
        deep += 1
    assert evaluate(expression, {}) == 2**deep
    wide = {"max": [{"add": [1, 1]}] * 20_000}
    error = quick(evaluate, wide, {}, {}, "w.yaml: config.n_ctx", limit=2.0)
    assert "expression steps" in str(error)


@pytest.mark.parametrize(
    ("expression", "hf"),
    [
        ({"div": [{"hf": "hidden_size"}, {"hf": "num_attention_heads"}]}, {"hidden_size": 64}),
        ({"div": [64, 3]}, {}),
        ({"pow": [0, -1]}, {}),
    ],
)
def test_zero_divisors_and_remainders_are_config_errors(expression, hf) -> None:
    hf = {"num_attention_heads": 0, **hf}
    error = quick(evaluate, expression, hf, {}, "llama.yaml: config.d_head", limit=1.0)
    assert isinstance(error, InvalidConfigError) and isinstance(error, ValueError)
    assert str(error).startswith("llama.yaml: config.d_head")


# -- config fields ------------------------------------------------------------------------------


def test_misspelt_config_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.yaml",
        "name: typo\nextends: gpt2\nhf: {model_types: [typo_t]}\n"
        "config: {default_prepend_bo: false}\n",
    )
    error = quick(tlcore.register_spec, path)
    assert isinstance(error, SpecError)
    assert "typo.yaml" in str(error) and "'default_prepend_bo'" in str(error)
    assert "did you mean 'default_prepend_bos'" in str(error)
    assert "typo" not in get_registry().specs


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("eps", "small", "must be float"),
        ("eps", 0.0, "above 0"),
        ("eps", -1e-5, "above 0"),
        ("eps", float("nan"), "above 0"),
        ("n_heads", 0, "positive integer"),
        ("n_heads", -4, "positive integer"),
        ("n_heads", 2.5, "must be int"),
        ("n_heads", True, "must be int"),
        ("d_model", "16", "must be int"),
        ("n_layers", 1_000_000, "larger than any real model"),
        ("d_vocab", 0, "positive integer"),
        ("n_ctx", 0, "positive integer"),
        ("n_key_value_heads", 0, "positive integer"),
        ("rotary_dim", 8, "at most d_head"),
        ("default_prepend_bos", "yes", "must be bool"),
        ("default_padding_side", "middle", "'left' or 'right'"),
        ("rotary_base", 0, "above 0"),
    ],
)
def test_config_values_are_checked_before_building(field, value, rule) -> None:
    if field == "n_key_value_heads":
        with pytest.raises(InvalidConfigError, match="n_heads = 4: must be a multiple of"):
            HookedTransformerConfig(**{**GPT2_LIKE, field: 3})
    start = time.perf_counter()
    with pytest.raises(InvalidConfigError) as info:
        HookedTransformerConfig(**{**GPT2_LIKE, field: value})
    assert time.perf_counter() - start < 1.0
    assert f"config field {field} = " in str(info.value) and rule in str(info.value)


def test_a_million_layers_from_a_spec_fails_fast(tmp_path: Path) -> None:
    from tlcore.config_resolution import resolve_config

    spec = get_registry().get_spec("gpt2")
    hf = {**GPT2_HF, "n_layer": 1_000_000}
    error = quick(resolve_config, spec, hf, check_guard=False, limit=2.0)
    assert isinstance(error, InvalidConfigError) and "n_layers = 1000000" in str(error)
    assert "gpt2.yaml" in str(error)


def test_zero_heads_from_a_spec_names_the_spec(tmp_path: Path) -> None:
    from tlcore.config_resolution import resolve_config

    path = write(
        tmp_path,
        "zero.yaml",
        "name: zero_heads\nextends: gpt2\nhf: {model_types: [zero_t]}\nconfig: {n_heads: 0}\n",
    )
    tlcore.register_spec(path)
    try:
        spec = get_registry().get_spec("zero_heads")
        hf = GPT2_HF
        error = quick(resolve_config, spec, hf, check_guard=False)
        assert isinstance(error, InvalidConfigError)
        assert "n_heads" in str(error) and "zero.yaml" in str(error)
    finally:
        _forget("zero_heads")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_attention_heads", 0),
        ("num_hidden_layers", 1_000_000),
        ("hidden_size", -1),
        ("vocab_size", "big"),
        ("rms_norm_eps", 0),
        ("head_dim", 1.5),
    ],
)
def test_hf_config_sizes_are_checked(field, value) -> None:
    with pytest.raises(InvalidConfigError, match=f"cfg.json: {field} = "):
        check_hf_config_values({field: value}, "cfg.json")


def test_trait_parameters_are_checked(tmp_path: Path) -> None:
    from tlcore.config_resolution import resolve_config

    path = write(
        tmp_path,
        "eps.yaml",
        "name: zero_eps\nextends: gpt2\nhf: {model_types: [zero_eps_t]}\n"
        "traits: {norm: {kind: layernorm, eps: 0.0}}\n",
    )
    tlcore.register_spec(path)
    try:
        spec = get_registry().get_spec("zero_eps")
        hf = GPT2_HF
        error = quick(resolve_config, spec, hf, check_guard=False)
        assert "traits.norm.eps = 0.0" in str(error) and "eps.yaml" in str(error)
    finally:
        _forget("zero_eps")


# -- the registry -------------------------------------------------------------------------------


def _forget(name: str) -> None:
    from tlcore.plugins import get_manager

    manager = get_manager()
    manager.registry.specs.pop(name, None)
    manager.registry._validated.clear()
    record = manager.records.get("tlcore.register_spec")
    if record is not None and name in record.registered.get("specs", []):
        record.registered["specs"].remove(name)
    manager._user_specs = [u for u in manager._user_specs if name not in str(u[0])]


def test_invalid_spec_added_directly_does_not_break_later_loads(
    tiny_checkpoint, tmp_path: Path
) -> None:
    registry = get_registry()
    before = dict(registry.specs)
    bad = {"name": "broken", "extends": "gpt2", "traits": {"mlp": {"kind": "x"}}}
    with pytest.raises(SpecError, match="unknown mlp kind 'x'"):
        registry.add_spec(bad, Source("tests"))
    assert registry.specs == before
    folder, _ = tiny_checkpoint("gpt2")
    model = tlcore.HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert model.cfg.spec_name == "gpt2"


def test_a_broken_entry_in_the_registry_is_skipped_when_resolving() -> None:
    registry = get_registry()
    with registry.deferred_validation():  # as if a plugin registered it mid-load
        registry.add_spec(
            {"name": "broken_other", "hf": {"model_types": ["other_t"]}, "traits": {}},
            Source("tests"),
        )
    try:
        assert registry.candidates_for({"model_type": "gpt2"})[0].name == "gpt2"
        with pytest.raises(SpecError, match="broken_other"):
            registry.candidates_for({"model_type": "other_t"})  # the only cover is broken
    finally:
        registry.specs.pop("broken_other")
        registry._validated.clear()


def test_register_spec_validates_first_and_registers(tmp_path: Path) -> None:
    good = write(tmp_path, "mine.yaml", "name: mine\nextends: gpt2\nhf: {model_types: [mine_t]}\n")
    bad = write(tmp_path, "bad.yaml", "name: bad\nextends: gpt2\ntraits: {mlp: {kind: nope}}\n")
    with pytest.raises(SpecError) as info:
        tlcore.register_spec(bad)
    assert "bad.yaml" in str(info.value) and "nope" in str(info.value)
    assert "bad" not in get_registry().specs
    try:
        assert tlcore.register_spec(good) == ["mine"]
        spec = get_registry().get_spec("mine")
        assert spec.source.startswith("plugin 'tlcore.register_spec'")
        from tlcore.commands.plugins import plugin_rows

        row = next(r for r in plugin_rows() if r["name"] == "tlcore.register_spec")
        assert row["registered"]["specs"] == ["mine"]
        with pytest.raises(PluginError, match="conflicts"):
            tlcore.register_spec(good)  # the name is taken now
    finally:
        _forget("mine")

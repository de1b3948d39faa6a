"""Fuzzing specs: YAML text, spec documents, expressions and config values.

Property: a spec file or document either registers, resolves and builds (on the meta device), or
fails with one of tlcore's typed errors, in bounded time and memory.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tlcore.config import HookedTransformerConfig
from tlcore.config_resolution import resolve_config
from tlcore.errors import SpecError
from tlcore.registry import Registry, Source, get_registry
from tlcore.spec.bounds import load_yaml
from tlcore.spec.expressions import OPERATORS, evaluate
from tlcore.testing.fuzz import examples, outcome

pytestmark = pytest.mark.timeout(300)

GPT2_HF = {
    "model_type": "gpt2",
    "n_embd": 16,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 8,
    "vocab_size": 50,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "n_inner": None,
    "layer_types": ["a", "b"],
    "rope_parameters": {"rope_theta": 10000.0},
}
SPEC_TEXT = (Path(__file__).resolve().parents[2] / "specs/architectures/gpt2.yaml").read_text()

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2, 64, 2**31, 2**63, 1e-12, 1e308, -0.0]),
)
scalars = st.one_of(numbers, st.text(max_size=12), st.booleans(), st.none())
field_refs = st.one_of(
    st.builds(lambda n: {"hf": n}, st.sampled_from([*GPT2_HF, "missing", 3])),
    st.builds(lambda n: {"cfg": n}, st.sampled_from(["d_model", "n_heads", "nope"])),
    st.builds(
        lambda n, d: {"hf": n, "default": d}, st.sampled_from(["missing", "n_embd"]), scalars
    ),
)
expressions = st.recursive(
    st.one_of(scalars, field_refs),
    lambda children: st.one_of(
        st.builds(
            lambda op, args: {op: args},
            st.sampled_from(sorted(OPERATORS - {"hf", "cfg", "if"})),
            st.lists(children, max_size=3),
        ),
        st.builds(
            lambda op, arg: {op: arg}, st.sampled_from(["not", "len", "int", "float"]), children
        ),
        st.builds(lambda c, t, e: {"if": c, "then": t, "else": e}, children, children, children),
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "hf", "mul", "x"]), children, max_size=2),
    ),
    max_leaves=16,
)


@settings(max_examples=examples(500))
@given(expression=expressions)
def test_fuzz_expressions(expression) -> None:
    result, error = outcome(evaluate, expression, GPT2_HF, {"d_model": 16}, "fuzz.yaml: x")
    if error is not None:
        assert str(error).startswith("fuzz.yaml: x"), str(error)
    elif isinstance(expression, dict) and set(expression) & ARITHMETIC:
        assert isinstance(result, int) or math.isfinite(result), result


ARITHMETIC = {"add", "sub", "mul", "div", "pow"}


SNIPPETS = [
    "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\n",
    "config: &c {d_model: *c}\n",
    "config: {d_model: 1, d_model: 2}\n",
    "name: !!python/object/apply:os.system ['true']\n",
    "x: " + "[" * 500 + "]" * 500 + "\n",
    "x: " + "9" * 6000 + "\n",
    "config: {d_model: {pow: [10, 100000000]}}\n",
    "config: {d_model: {mul: ['abc', 1000000000]}}\n",
    "hf: {match: {n_embd: {a: [1, 2, {b: *x}]}}}\n",
    "config: {default_prepend_bo: false}\n",
    "config: {eps: small}\n",
    "traits: {norm: {kind: layernorm, eps: 0}}\n",
    "traits: {attention: {kind: attention, scale: 0}}\n",
    "config: {n_heads: 0}\n",
    "config: {n_layers: 1000000}\n",
    "\t\x00\ufeff",
    "? [a, b]\n: 1\n",
    "<<: *nowhere\n",
    "config:\n  <<: {d_model: 8}\n  d_model: 16\n",
]


@st.composite
def spec_texts(draw) -> str:
    lines = SPEC_TEXT.splitlines()
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "dup", "snippet", "chars", "indent"]))
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if action == "drop" and lines:
            del lines[at]
        elif action == "dup" and lines:
            lines.insert(at, lines[at])
        elif action == "snippet":
            lines.insert(at, draw(st.sampled_from(SNIPPETS)))
        elif action == "chars" and lines:
            lines[at] = lines[at][: len(lines[at]) // 2] + draw(st.text(max_size=6))
        elif action == "indent" and lines:
            lines[at] = "  " + lines[at]
    text = "\n".join(lines)
    return text.replace("name: gpt2", "name: fuzzed", 1)


def scratch_registry() -> Registry:
    registry = Registry()
    builtin = get_registry()
    registry.traits = dict(builtin.traits)
    registry.weight_ops = dict(builtin.weight_ops)
    registry.specs["gpt2"] = builtin.specs["gpt2"]
    return registry


def register_resolve_build(registry: Registry, spec_input, name: str = "fuzzed"):
    names = registry.add_spec(spec_input, Source("fuzz"))
    spec = registry.get_spec(names[0])
    cfg = resolve_config(spec, GPT2_HF, check_guard=False)
    from tlcore.model import HookedTransformer

    with torch.device("meta"):
        HookedTransformer(cfg, init_weights=False)
    return cfg


@settings(max_examples=examples(200))
@given(text=spec_texts())
def test_fuzz_spec_files(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("spec") / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _, error = outcome(register_resolve_build, scratch_registry(), path)
    if isinstance(error, SpecError):
        assert "fuzzed.yaml" in str(error) or "<spec" in str(error), str(error)


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from paths(value, (*prefix, i))


BASE_DOC = yaml.safe_load(SPEC_TEXT) | {"name": "fuzzed"}
DOC_PATHS = [p for p in paths(BASE_DOC) if p and p[0] != "name"]


@st.composite
def spec_documents(draw) -> dict:
    doc = copy.deepcopy(BASE_DOC)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(DOC_PATHS))
        node = doc
        try:
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = draw(st.one_of(expressions, st.sampled_from([{}, [], "x"])))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed the path
    return doc


@settings(max_examples=examples(250))
@given(doc=spec_documents())
def test_fuzz_spec_documents(doc: dict) -> None:
    outcome(register_resolve_build, scratch_registry(), doc)


CONFIG_FIELDS = {
    "d_model": st.integers(-2, 64),
    "n_layers": st.one_of(st.integers(-1, 3), st.just(10**6)),
    "n_ctx": st.integers(-1, 16),
    "d_head": st.integers(-1, 8),
    "n_heads": st.integers(-1, 8),
    "d_vocab": st.integers(-1, 40),
    "d_mlp": st.one_of(st.none(), st.integers(-1, 64)),
    "n_key_value_heads": st.one_of(st.none(), st.integers(-1, 8)),
    "eps": st.one_of(numbers, st.text(max_size=4)),
    "act_fn": st.one_of(st.sampled_from(["gelu", "relu", "silu", "nope"]), st.integers()),
    "positional_embedding_type": st.sampled_from(["standard", "rotary", "shortformer", "x"]),
    "normalization_type": st.sampled_from(["LN", "RMS", "LNPre", None, "x"]),
    "rotary_dim": st.one_of(st.none(), st.integers(-1, 10)),
    "default_prepend_bos": st.one_of(st.booleans(), st.text(max_size=3)),
    "attn_scores_soft_cap": numbers,
    "num_experts": st.one_of(st.none(), st.integers(-1, 4)),
    "experts_per_token": st.one_of(st.none(), st.integers(-1, 4)),
}


@settings(max_examples=examples(250))
@given(fields=st.fixed_dictionaries({}, optional=CONFIG_FIELDS))
def test_fuzz_hand_written_configs(fields: dict) -> None:
    base = {"d_model": 16, "n_layers": 1, "n_ctx": 8, "d_head": 4, "n_heads": 4, "d_vocab": 20}
    base["act_fn"] = "gelu"

    def build():
        from tlcore.model import HookedTransformer

        with torch.device("meta"):
            return HookedTransformer(HookedTransformerConfig(**{**base, **fields}))

    outcome(build)


@settings(max_examples=examples(100))
@given(text=st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=200)))
def test_fuzz_raw_yaml(text: str) -> None:
    outcome(load_yaml, text, "raw.yaml")

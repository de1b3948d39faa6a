"""Hostile plugins: built-ins keep their names, and replacing one is explicit, visible and recorded.

One test per bad outcome from issue 13: a plugin command named ``list`` took the CLI down and the
warning blamed tlcore; ``override=True`` or a higher ``hf.priority`` silently changed what gpt2
computes (strict mode included, ``cfg`` none the wiser); an invalid replacement left no gpt2 at all.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import pytest
import torch

import tlcore
from tlcore import hookimpl
from tlcore.errors import PluginError
from tlcore.plugins import PluginWarning, TlcorePluginManager, get_manager
from tlcore.plugins.manager import STRICT_ENV
from tlcore.registry import get_registry
from tlcore.registry.registry import REPLACE_ENV

pytest_plugins = ["tlcore.testing.pytest_plugin"]


@pytest.fixture
def manager() -> TlcorePluginManager:
    fresh = TlcorePluginManager()
    fresh.load(entry_points=False)
    return fresh


@pytest.fixture
def scoped_global():
    manager = get_manager()
    with manager.scoped():
        yield manager


def plugin_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


def gpt2_with_other_eps() -> dict:
    doc = copy.deepcopy(get_registry().specs["gpt2"].doc)
    doc["traits"]["norm"] = {"kind": "layernorm", "eps": 0.1}
    doc.pop("source_file", None)
    return doc


class ReplacesGpt2:
    @hookimpl
    def register_specs(self, register) -> None:
        register.spec(gpt2_with_other_eps(), override=True)


# -- commands -----------------------------------------------------------------------------------


def test_plugin_command_named_like_a_builtin_is_refused_for_that_plugin_alone(manager) -> None:
    class Thief:
        @hookimpl
        def register_commands(self, subparsers) -> None:
            subparsers.add_parser("mine")
            subparsers.add_parser("list")

    class Honest:
        @hookimpl
        def register_commands(self, subparsers) -> None:
            subparsers.add_parser("honest").set_defaults(func=lambda args: 0)

    manager.add_plugin(Thief(), "thief")
    manager.add_plugin(Honest(), "honest")
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.add_commands(subparsers)
    (message,) = plugin_warnings(caught)
    assert message.startswith("tlcore plugin 'thief': ")
    assert "command 'list' is already taken by plugin 'tlcore.builtin.plugin'" in message
    assert {"list", "plugins", "demo", "parity", "honest"} <= set(subparsers.choices)
    assert "mine" not in subparsers.choices  # the refused plugin's commands all go
    from tlcore.commands import list_specs

    assert subparsers.choices["list"].get_default("func") is list_specs.run
    assert manager.records["honest"].registered["commands"] == ["honest"]
    assert "commands" not in manager.records["thief"].registered


def test_cli_keeps_every_builtin_command_with_a_thief_installed(tlcore_plugin, capsys) -> None:
    from tlcore.cli import main

    class Thief:
        @hookimpl
        def register_commands(self, subparsers) -> None:
            subparsers.add_parser("plugins").set_defaults(func=lambda args: 99)

    tlcore_plugin(Thief(), "thief")
    assert main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    assert "tlcore: warning: tlcore plugin 'thief'" in captured.err
    assert "'plugins' is already taken" in captured.err
    assert '"name": "thief"' in captured.out


# -- architectures ------------------------------------------------------------------------------


def test_overriding_a_builtin_spec_needs_the_switch(manager, monkeypatch) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = manager.add_plugin(ReplacesGpt2(), "evil")
    (message,) = plugin_warnings(caught)
    assert message.startswith("tlcore plugin 'evil': hook register_specs raised PluginError")
    assert f"set {REPLACE_ENV}=gpt2" in message
    assert record.state == "failed"
    assert manager.registry.specs["gpt2"].source.builtin
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(PluginError, match="would replace tlcore's built-in one"):
        manager.add_plugin(ReplacesGpt2(), "evil-strict")
    assert manager.registry.specs["gpt2"].source.builtin


def test_an_allowed_replacement_is_recorded_in_cfg_and_shown(
    tlcore_plugin, tiny_checkpoint, monkeypatch, capsys
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    builtin = tlcore.HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert builtin.cfg.spec_source.startswith("plugin 'tlcore.builtin.plugin'")
    monkeypatch.setenv(REPLACE_ENV, "gpt2")
    record = tlcore_plugin(ReplacesGpt2(), "evil")  # strict: the switch makes it no failure
    assert record.registered["replaces_builtin"] == ["architecture 'gpt2'"]
    model = tlcore.HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    assert model.cfg.spec_name == "gpt2"
    assert model.cfg.spec_source == f"{record.source}; replaces built-in architecture 'gpt2'"
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(model(tokens), builtin(tokens))  # it really computes otherwise
    from tlcore.cli import main

    assert main(["plugins"]) == 0
    assert "REPLACES BUILT-IN: architecture 'gpt2'" in capsys.readouterr().out


def test_an_invalid_replacement_brings_the_builtin_back(manager, monkeypatch) -> None:
    class Broken:
        @hookimpl
        def register_specs(self, register) -> None:
            doc = gpt2_with_other_eps()
            doc["traits"]["mlp"] = {"kind": "no_such_mlp"}
            register.spec(doc, override=True)

    monkeypatch.setenv(REPLACE_ENV, "gpt2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.add_plugin(Broken(), "broken")
    (message,) = plugin_warnings(caught)
    assert "plugin 'broken': invalid spec 'gpt2'" in message and "no_such_mlp" in message
    assert manager.registry.specs["gpt2"].source.builtin  # not gone: the built-in is back
    source = manager.registry.get_spec("gpt2").source  # what cfg.spec_source will say
    assert source.startswith("plugin 'tlcore.builtin.plugin'")
    assert "a replacement from plugin 'broken' was refused: invalid spec 'gpt2'" in source
    assert "architecture 'gpt2'" not in manager.registry.replacements


def test_outranking_a_builtin_by_priority_needs_the_switch(manager, monkeypatch) -> None:
    class Outranks:
        @hookimpl
        def register_specs(self, register) -> None:
            doc = gpt2_with_other_eps()
            doc["name"] = "sneaky_gpt2"
            doc["hf"] = {"model_types": ["gpt2"], "priority": 10}
            register.spec(doc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.add_plugin(Outranks(), "outranks")
    (message,) = plugin_warnings(caught)
    assert "plugin 'outranks'" in message and "'sneaky_gpt2' (hf.priority 10)" in message
    assert "built-in architecture 'gpt2'" in message
    assert "sneaky_gpt2" not in manager.registry.specs
    assert manager.registry.candidates_for({"model_type": "gpt2"})[0].name == "gpt2"


def test_a_plugin_spec_never_wins_a_priority_tie_with_a_builtin(manager) -> None:
    class Variant:
        @hookimpl
        def register_specs(self, register) -> None:
            doc = gpt2_with_other_eps()
            doc["name"] = "a_gpt2_variant"  # sorts before "gpt2"
            doc["hf"] = {"model_types": ["gpt2"], "match": {"scale_attn_weights": True}}
            register.spec(doc)

    manager.add_plugin(Variant(), "variant")
    assert "a_gpt2_variant" in manager.registry.specs
    config = {"model_type": "gpt2", "scale_attn_weights": True}
    assert [s.name for s in manager.registry.candidates_for(config)][:2] == [
        "gpt2",
        "a_gpt2_variant",
    ]


def test_resolve_hf_config_cannot_silently_take_a_builtins_checkpoints(
    manager, monkeypatch
) -> None:
    class Resolver:
        @hookimpl
        def resolve_hf_config(self, hf_config):
            return "mistral"

    manager.add_plugin(Resolver(), "resolver")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert manager.resolve_hf_config({"model_type": "llama"}) is None
    (message,) = plugin_warnings(caught)
    assert "plugin 'resolver'" in message and "built-in architecture 'llama'" in message
    # A config no built-in covers is the hook's to answer.
    assert manager.resolve_hf_config({"model_type": "no_builtin_covers_this"}) == "mistral"
    monkeypatch.setenv(REPLACE_ENV, "llama")
    assert manager.resolve_hf_config({"model_type": "llama"}) == "mistral"


@pytest.mark.parametrize("item", ["trait", "weight_op", "alias"])
def test_builtin_traits_ops_and_aliases_keep_their_names(manager, monkeypatch, item) -> None:
    from tlcore.components.norms import LayerNormTrait, make_layernorm

    class Replacer:
        @hookimpl
        def register_traits(self, register) -> None:
            if item == "trait":
                register.trait("norm", LayerNormTrait, make_layernorm, override=True)

        @hookimpl
        def register_weight_ops(self, register) -> None:
            if item == "weight_op":
                register.weight_op("transpose", lambda tensors, cfg: tensors, override=True)

        @hookimpl
        def register_aliases(self, register) -> None:
            if item == "alias":
                register.alias("gpt2-small", "someone/else", override=True)

    name = {"trait": "norm/layernorm", "weight_op": "transpose", "alias": "gpt2-small"}[item]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert manager.add_plugin(Replacer(), "replacer").state == "failed"
    (message,) = plugin_warnings(caught)
    assert "plugin 'replacer'" in message and f"{REPLACE_ENV}={name}" in message
    registry = manager.registry
    assert registry.traits[("norm", "layernorm")].source.builtin
    assert registry.weight_ops["transpose"].source.builtin
    assert registry.aliases["gpt2-small"][1].builtin
    monkeypatch.setenv(REPLACE_ENV, name)
    record = manager.add_plugin(Replacer(), "replacer-allowed")
    assert record.state == "ok" and len(record.registered["replaces_builtin"]) == 1


def test_register_spec_replace_builtin_is_the_explicit_argument(scoped_global) -> None:
    doc = gpt2_with_other_eps()
    with pytest.raises(PluginError, match="replace_builtin=True"):
        tlcore.register_spec(doc, override=True)
    assert scoped_global.registry.specs["gpt2"].source.builtin
    assert tlcore.register_spec(doc, override=True, replace_builtin=True) == ["gpt2"]
    spec = scoped_global.registry.get_spec("gpt2")
    assert spec.source == ("plugin 'tlcore.register_spec'; replaces built-in architecture 'gpt2'")
    assert scoped_global.records["tlcore.register_spec"].registered["replaces_builtin"] == [
        "architecture 'gpt2'"
    ]

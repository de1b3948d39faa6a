"""The plugin manager: lazy loading, isolation with rollback, spec-level drops, strict mode."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from tlcore import hookimpl
from tlcore.errors import PluginError
from tlcore.plugins import PluginWarning, TlcorePluginManager, get_manager, reset_manager
from tlcore.plugins.manager import DISABLE_ENV, STRICT_ENV
from tlcore.registry import get_registry
from tlcore.registry.registry import Registry


@pytest.fixture
def manager() -> TlcorePluginManager:
    """A fresh manager with the built-ins only (the process-wide one is left alone)."""
    fresh = TlcorePluginManager()
    fresh.load(entry_points=False)
    return fresh


def _warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


def test_import_tlcore_loads_no_plugins_and_no_transformers() -> None:
    code = (
        "import sys, json; before = set(sys.modules); import tlcore; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    imported = set(json.loads(out))
    assert "tlcore" in imported
    heavy = {"pluggy", "importlib.metadata", "transformers", "torch", "tlcore.plugins"}
    assert not imported & heavy, sorted(imported & heavy)
    assert not any(m.startswith(("tlcore.plugins", "tlcore.registry")) for m in imported)


def test_builtins_arrive_through_the_same_hooks(monkeypatch) -> None:
    # Installed plugins would keep their own items (and lose their specs, which need built-ins).
    monkeypatch.setenv(DISABLE_ENV, "1")
    reset_manager()
    try:
        manager = get_manager()
        record = manager.records["tlcore.builtin.plugin"]
        assert {"register_traits", "register_weight_ops", "register_specs"} <= set(record.hooks)
        assert "llama" in get_registry().spec_names()
        manager.remove_plugin("tlcore.builtin.plugin")
        registry = get_registry()
        assert registry.spec_names() == []
        assert not registry.traits and not registry.weight_ops and not registry.aliases
    finally:
        reset_manager()
    monkeypatch.delenv(DISABLE_ENV)
    assert "llama" in get_registry().spec_names()


def test_hook_that_raises_is_rolled_back(manager: TlcorePluginManager, monkeypatch) -> None:
    from tlcore.components.norms import LayerNormTrait, make_layernorm

    class Trait2(LayerNormTrait):
        kind: str = "layernorm_two"

    class Half:
        @hookimpl
        def register_traits(self, register) -> None:
            register.trait("norm", Trait2, make_layernorm)

        @hookimpl
        def register_specs(self, register) -> None:
            raise RuntimeError("boom")

    before = set(manager.registry.traits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = manager.add_plugin(Half(), "half")
    assert _warnings(caught) == [
        "tlcore plugin 'half': hook register_specs raised RuntimeError: boom"
    ]
    assert record.state == "failed" and record.registered == {}
    assert set(manager.registry.traits) == before
    assert not manager.pm.has_plugin("half")
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(PluginError, match="boom"):
        manager.add_plugin(Half(), "half")
    assert set(manager.registry.traits) == before


def test_invalid_spec_is_dropped_alone(manager: TlcorePluginManager) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.spec({"name": "good", "extends": "llama", "hf": {"model_types": ["g"]}})
            register.spec(
                {
                    "name": "bad",
                    "extends": "llama",
                    "hf": {"model_types": ["b"]},
                    "traits": {"mlp": {"kind": "no_such_mlp"}},
                }
            )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = manager.add_plugin(Plugin(), "mixed")
    (message,) = _warnings(caught)
    assert message.startswith("tlcore plugin 'mixed': invalid spec 'bad'")
    known = message.split("unknown mlp kind 'no_such_mlp' (known: ")[1].split(")")[0].split(", ")
    assert {"gated", "moe", "plain"} <= set(known) and known == sorted(known)
    assert record.state == "ok" and record.registered["specs"] == ["good"]
    assert "good" in manager.registry.specs and "bad" not in manager.registry.specs
    assert [r.name for r in manager.failures()] == ["mixed"]


def test_spec_covering_a_model_type_ambiguously_is_dropped(
    manager: TlcorePluginManager, monkeypatch
) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.spec(
                {"name": "my_llama", "extends": "llama", "hf": {"model_types": ["llama"]}}
            )
            register.spec(
                {
                    "name": "my_llama_first",
                    "extends": "llama",
                    "hf": {"model_types": ["llama"], "priority": 1},
                }
            )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.add_plugin(Plugin(), "llama-again")
    ambiguous, takeover = _warnings(caught)
    assert (
        "architecture 'my_llama' covers HF model type 'llama' exactly as architecture 'llama'"
        in ambiguous
    )
    assert "tlcore.builtin.plugin" in ambiguous
    # A higher priority would silently take the built-in's checkpoints: refused without the switch.
    assert "'my_llama_first' (hf.priority 1) would be chosen instead of tlcore's" in takeover
    assert "TLCORE_REPLACE_BUILTINS=llama" in takeover
    assert "my_llama" not in manager.registry.specs
    assert "my_llama_first" not in manager.registry.specs
    assert manager.registry.candidates_for({"model_type": "llama"})[0].name == "llama"

    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "llama")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = manager.add_plugin(Plugin(), "llama-allowed")
    assert len(_warnings(caught)) == 1  # my_llama is still ambiguous
    spec = manager.registry.get_spec("my_llama_first")
    assert "takes over HF configs of built-in architecture 'llama'" in spec.source
    assert record.registered["replaces_builtin"] == [
        "architecture 'llama' (outranked by 'my_llama_first')"
    ]
    assert manager.registry.candidates_for({"model_type": "llama"})[0].name == "my_llama_first"


def test_resolve_hf_config_failures_are_isolated(manager: TlcorePluginManager) -> None:
    class Raises:
        @hookimpl
        def resolve_hf_config(self, hf_config):
            raise KeyError("oops")

    class Unknown:
        @hookimpl
        def resolve_hf_config(self, hf_config):
            return "no_such_architecture"

    manager.add_plugin(Raises(), "raises")
    manager.add_plugin(Unknown(), "unknown")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert manager.resolve_hf_config({"model_type": "llama"}) is None
    messages = _warnings(caught)
    assert len(messages) == 2
    assert "plugin 'raises'" in messages[1] and "KeyError" in messages[1]
    assert "'no_such_architecture', which is not a registered architecture" in messages[0]


def test_register_commands_failure_keeps_the_cli(manager: TlcorePluginManager) -> None:
    import argparse

    class Broken:
        @hookimpl
        def register_commands(self, subparsers) -> None:
            subparsers.add_parser("half-added")
            raise RuntimeError("no commands today")

    manager.add_plugin(Broken(), "broken-cmd")
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.add_commands(subparsers)
    assert _warnings(caught) == [
        "tlcore plugin 'broken-cmd': hook register_commands raised RuntimeError: no commands today"
    ]
    assert "half-added" not in subparsers.choices
    assert {"list", "plugins"} <= set(subparsers.choices)


def test_plugin_names_are_unique(manager: TlcorePluginManager) -> None:
    manager.add_plugin(object(), "same")
    with pytest.raises(PluginError, match="already registered"):
        manager.add_plugin(object(), "same")


def test_hookimpl_may_take_fewer_arguments(manager: TlcorePluginManager) -> None:
    calls = []

    class NoArgs:
        @hookimpl
        def register_specs(self) -> None:
            calls.append(True)

    assert manager.add_plugin(NoArgs(), "no-args").state == "ok"
    assert calls == [True]


def test_remove_plugin_rebuilds_without_it(manager: TlcorePluginManager) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.spec({"name": "extra", "extends": "llama", "hf": {"model_types": ["x"]}})

    manager.add_plugin(Plugin(), "extra-plugin")
    assert "extra" in manager.registry.specs
    manager.remove_plugin("extra-plugin")
    assert "extra" not in manager.registry.specs and "llama" in manager.registry.specs
    with pytest.raises(KeyError):
        manager.remove_plugin("extra-plugin")
    assert isinstance(manager.registry, Registry)


def test_scoped_undoes_additions_and_removals(manager: TlcorePluginManager) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.spec({"name": "scoped", "extends": "llama", "hf": {"model_types": ["s"]}})

    specs = set(manager.registry.specs)
    with manager.scoped():
        manager.add_plugin(Plugin(), "scoped-plugin")
        with pytest.warns(PluginWarning, match="'scoped'.*no architecture named 'llama'"):
            manager.remove_plugin("tlcore.builtin.plugin")
        assert set(manager.registry.specs) == set()
    assert set(manager.registry.specs) == specs
    assert manager.pm.has_plugin("tlcore.builtin.plugin")
    assert not manager.pm.has_plugin("scoped-plugin") and "scoped-plugin" not in manager.records

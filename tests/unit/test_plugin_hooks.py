"""Each hook, exercised through a plugin object (``test_hook_<name>``), plus the meta-tests that
keep every hook tested and documented (datasette's pattern)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Literal

import pytest
import torch

import tlcore
from tlcore import hookimpl
from tlcore.errors import PluginError
from tlcore.plugins import HOOK_NAMES, hookspecs
from tlcore.registry import get_registry
from tlcore.spec import Trait

pytest_plugins = ["tlcore.testing.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[2]


def _spec(name: str = "toy", **traits) -> dict:
    """A small llama-like spec document (built on llama's weight map through ``extends``)."""
    doc = {
        "name": name,
        "extends": "llama",
        "hf": {"model_types": [f"{name}_type"], "architectures": []},
    }
    if traits:
        doc["traits"] = traits
    return doc


# -- one test per hook ------------------------------------------------------------------------


class DoubleNormTrait(Trait):
    """A test norm kind: LayerNorm whose output is doubled."""

    slot = "norm"
    kind: Literal["doubled_layernorm"] = "doubled_layernorm"
    eps: float = 1e-5


def make_doubled(trait: DoubleNormTrait, d, dtype: torch.dtype) -> torch.nn.Module:
    from tlcore.components.norms import LayerNorm

    class Doubled(LayerNorm):
        def forward(self, x):
            return 2 * super().forward(x)

    return Doubled(d, trait.eps, dtype=dtype)


def test_hook_register_traits(tlcore_plugin) -> None:
    class Plugin:
        @hookimpl
        def register_traits(self, register) -> None:
            register.trait("norm", DoubleNormTrait, make_doubled)

        @hookimpl
        def register_specs(self, register) -> None:
            register.spec(_spec(norm={"kind": "doubled_layernorm"}))

    record = tlcore_plugin(Plugin(), "doubled")
    assert record.registered["traits"] == ["norm/doubled_layernorm"]
    registry = get_registry()
    assert registry.trait_model("norm", "doubled_layernorm") is DoubleNormTrait
    assert registry.trait_model("final_norm", "doubled_layernorm") is DoubleNormTrait
    assert registry.get_spec("toy").traits["norm"]["kind"] == "doubled_layernorm"
    assert registry.traits[("norm", "doubled_layernorm")].source == record.source


def test_hook_register_weight_ops(tlcore_plugin, tiny_hf_checkpoint, monkeypatch) -> None:
    def negate(tensors, cfg, factor: float = 1.0):
        """Multiply by -factor."""
        return [-factor * t for t in tensors]

    class Plugin:
        @hookimpl
        def register_weight_ops(self, register) -> None:
            register.weight_op("negate", negate)

        @hookimpl
        def register_specs(self, register) -> None:
            doc = _spec("negated_llama")
            doc["hf"] = {"model_types": ["llama"], "priority": 5}  # outranks the built-in llama
            rule = {"to": "embed.W_E", "from": "model.embed_tokens.weight"}
            doc["weights"] = [{**rule, "ops": [{"negate": {"factor": 2.0}}]}]
            register.spec(doc)

    # Outranking a built-in architecture is the user's explicit choice.
    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "llama")
    record = tlcore_plugin(Plugin(), "negate-op")
    op = get_registry().weight_ops["negate"]
    assert op.source == record.source and op.doc == "Multiply by -factor."
    ckpt = tiny_hf_checkpoint("llama")
    model = tlcore.HookedTransformer.from_pretrained_no_processing(str(ckpt.path))
    assert model.cfg.spec_name == "negated_llama"
    assert model.cfg.spec_source == (
        f"{record.source}; takes over HF configs of built-in architecture 'llama'"
    )
    expected = -2.0 * ckpt.hf_model.model.embed_tokens.weight
    assert torch.equal(model.embed.W_E, expected)


def test_hook_register_specs(tlcore_plugin, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "from_folder.yaml").write_text(
        "name: from_folder\nextends: llama\nhf: {model_types: [from_folder_type]}\n"
    )
    (tmp_path / "one.yaml").write_text("name: from_file\nextends: llama\nhf: {model_types: [ff]}\n")

    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.spec(tmp_path / "folder")
            register.spec(str(tmp_path / "one.yaml"))
            register.spec(_spec("from_mapping"))

    record = tlcore_plugin(Plugin(), "specs")
    assert record.registered["specs"] == ["from_folder", "from_file", "from_mapping"]
    registry = get_registry()
    for name in record.registered["specs"]:
        assert registry.specs[name].source == record.source
        assert registry.get_spec(name).source == str(record.source)


def test_hook_register_aliases(tlcore_plugin, tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def register_aliases(self, register) -> None:
            register.alias("my-tiny", str(tmp_path))

    record = tlcore_plugin(Plugin(), "aliases")
    assert get_registry().aliases["my-tiny"] == (str(tmp_path), record.source)


def test_hook_resolve_hf_config(tlcore_plugin, monkeypatch) -> None:
    from tlcore.loading.resolve import spec_for_hf_config

    seen = []

    class Plugin:
        @hookimpl
        def resolve_hf_config(self, hf_config):
            seen.append(hf_config)
            hf_config["model_type"] = "changed"  # a copy: must not leak
            return "mistral" if hf_config.get("use_mistral") else None

    tlcore_plugin(Plugin(), "resolver")
    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "llama")  # the hook overrules a built-in
    config = {"model_type": "llama", "use_mistral": True}
    assert spec_for_hf_config(config).name == "mistral"
    assert config["model_type"] == "llama"
    assert spec_for_hf_config({"model_type": "llama"}).name == "llama"
    assert len(seen) == 2


def test_hook_locate_checkpoint(tlcore_plugin, tmp_path, monkeypatch) -> None:
    from tlcore.errors import CheckpointNotFoundError
    from tlcore.loading.resolve import resolve_checkpoint
    from tlcore.testing.tiny import save_tiny_checkpoint

    folder, _ = save_tiny_checkpoint(get_registry().get_spec("gpt2"), tmp_path / "ckpt")
    asked = []

    class Plugin:
        @hookimpl
        def locate_checkpoint(self, name):
            asked.append(name)
            if name == "broken":
                raise RuntimeError("boom")
            if name == "nowhere":
                return str(tmp_path / "missing")
            return str(folder) if name == "my-local-gpt2" else None

    tlcore_plugin(Plugin(), "locator")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("my-local-gpt2").where == str(folder)
    # An alias is located too: the typed name is asked first, then each alias target.
    get_registry().aliases["my-alias"] = ("my-local-gpt2", get_registry().aliases["gpt2-small"][1])
    assert resolve_checkpoint("my-alias").where == str(folder)
    assert asked[-2:] == ["my-alias", "my-local-gpt2"]
    # A hook that raises or answers a path that does not exist is skipped (with a warning).
    for name in ("broken", "nowhere"):
        with pytest.warns(UserWarning), pytest.raises(CheckpointNotFoundError, match=name):
            resolve_checkpoint(name)


def test_hook_register_commands(tlcore_plugin, capsys) -> None:
    from tlcore.cli import main

    class Plugin:
        @hookimpl
        def register_commands(self, subparsers) -> None:
            parser = subparsers.add_parser("hello", help="say hello")
            parser.add_argument("--name", default="world")
            parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)

    tlcore_plugin(Plugin(), "hello-cmd")
    assert main(["hello", "--name", "tlcore"]) == 3
    assert capsys.readouterr().out == "hello tlcore\n"
    from tlcore.plugins import get_manager

    assert get_manager().records["hello-cmd"].registered["commands"] == ["hello"]


# -- registrar rules ----------------------------------------------------------------------------


def test_duplicate_names_are_errors_naming_both_sources(tlcore_plugin) -> None:
    class Plugin:
        @hookimpl
        def register_weight_ops(self, register) -> None:
            register.weight_op("transpose", lambda tensors, cfg: tensors)

    with pytest.raises(PluginError) as info:
        tlcore_plugin(Plugin(), "dup-op")
    message = str(info.value)
    assert "plugin 'dup-op'" in message and "tlcore.builtin.plugin" in message
    assert "override=True" in message
    assert get_registry().weight_ops["transpose"].source.plugin == "tlcore.builtin.plugin"


def test_override_replaces_and_scope_restores(tlcore_plugin, monkeypatch) -> None:
    original = get_registry().weight_ops["transpose"]
    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "transpose")  # replacing a built-in: explicit

    class Plugin:
        @hookimpl
        def register_weight_ops(self, register) -> None:
            register.weight_op("transpose", lambda tensors, cfg: tensors, override=True)

    record = tlcore_plugin(Plugin(), "override-op")
    assert get_registry().weight_ops["transpose"].source == record.source
    assert record.registered["replaces_builtin"] == ["weight op 'transpose'"]
    # The fixture's scope ends after the test; the restore itself is checked here directly.
    from tlcore.plugins import get_manager

    manager = get_manager()
    with manager.scoped():
        manager.add_plugin(type("P", (), {})(), "inner")
        assert "inner" in manager.records
    assert "inner" not in manager.records
    assert original.source.plugin == "tlcore.builtin.plugin"


def test_builtin_items_record_distribution_and_version() -> None:
    source = get_registry().specs["llama"].source
    assert (source.plugin, source.distribution, source.version) == (
        "tlcore.builtin.plugin",
        "tlcore",
        tlcore.__version__,
    )


def test_hookimpl_with_a_typo_is_refused(tlcore_plugin) -> None:
    class Typo:
        @hookimpl
        def register_spec(self, register) -> None:  # not a hook: register_specs
            pass

    with pytest.raises(PluginError, match="register_spec"):
        tlcore_plugin(Typo(), "typo")


# -- meta-tests: every hook is tested and documented ----------------------------------------------


def _hookspecs() -> dict[str, inspect.Signature]:
    names = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "tlcore_spec")]
    return {n: inspect.signature(getattr(hookspecs, n)) for n in names}


def test_hook_names_list_is_complete() -> None:
    assert sorted(HOOK_NAMES) == sorted(_hookspecs())


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_plugin_hooks_have_tests(hook: str) -> None:
    tests = "".join(
        p.read_text()
        for pattern in ("tests/unit/test_plugin_*.py", "tests/integration/test_plugins*.py")
        for p in ROOT.glob(pattern)
    )
    assert re.search(rf"^def test_hook_{hook}\(", tests, re.M), f"no test_hook_{hook}"


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_plugin_hooks_are_documented(hook: str) -> None:
    signature = _hookspecs()[hook]
    args = ", ".join(signature.parameters)
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"{hook}({args}" in docs, f"docs/plugins.md does not show {hook}({args})"

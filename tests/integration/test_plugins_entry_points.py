"""Plugins discovered through real entry points: fake distributions on ``sys.path`` (a
``.dist-info`` folder with METADATA and entry_points.txt, plus the module), broken in each way a
plugin can break, and the installed example package ``tlcore-nemotron``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tlcore.errors import PluginError
from tlcore.plugins import TlcorePluginManager
from tlcore.plugins.manager import BLOCK_ENV, DISABLE_ENV, LOAD_ENV, STRICT_ENV

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
from tlcore import hookimpl

@hookimpl
def register_specs(register):
    register.spec({"name": "fake_good", "extends": "llama", "hf": {"model_types": ["fake_good"]}})
"""

SPEC_PLUGIN = """
from pathlib import Path
from tlcore import hookimpl

@hookimpl
def register_specs(register):
    register.spec(Path(__file__).with_name("{module}_specs"))
"""

# name: (module source, spec YAML or None, what the warning must say)
BROKEN: dict[str, tuple[str, str | None, str]] = {
    "import_error": (
        "import tlcore_no_such_dependency\n",
        None,
        "import of '{module}' failed: ModuleNotFoundError: No module named "
        "'tlcore_no_such_dependency'",
    ),
    "hook_raises": (
        "from tlcore import hookimpl\n\n@hookimpl\ndef register_traits(register):\n"
        "    raise ValueError('broken on purpose')\n",
        None,
        "hook register_traits raised ValueError: broken on purpose",
    ),
    "invalid_spec": (
        SPEC_PLUGIN,
        "name: {module}_arch\nextends: llama\nhf: {{model_types: [{module}]}}\n"
        "weights:\n  - {{to: embed.W_E}}\n",
        "invalid spec '{module}_arch': ",
    ),
    "duplicate_name": (
        SPEC_PLUGIN,
        "name: llama\nextends: gpt2\nhf: {{model_types: [{module}]}}\n",
        "hook register_specs raised PluginError: architecture 'llama' from plugin '{ep}' "
        "(tlcore-{ep} 1.2.3) conflicts with the one from plugin 'tlcore.builtin.plugin' (tlcore ",
    ),
    "unknown_trait_kind": (
        SPEC_PLUGIN,
        "name: {module}_arch\nextends: llama\nhf: {{model_types: [{module}]}}\n"
        "traits:\n  mlp: {{kind: quantum_mlp}}\n",
        "unknown mlp kind 'quantum_mlp' (known: gated, ",  # then every other registered kind
    ),
}


def fake_dist(root: Path, ep: str, source: str, spec: str | None = None) -> str:
    """Write distribution ``tlcore-<ep>`` 1.2.3 with entry point ``<ep>`` → module; return it."""
    module = f"fake_tlcore_{ep.replace('-', '_')}"
    (root / f"{module}.py").write_text(textwrap.dedent(source).replace("{module}", module))
    if spec is not None:
        (root / f"{module}_specs").mkdir()
        (root / f"{module}_specs" / "arch.yaml").write_text(spec.format(module=module, ep=ep))
    # Wheel naming: dashes in the name become underscores (the first dash starts the version).
    info = root / f"tlcore_{ep.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tlcore-{ep}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[tlcore]\n{ep} = {module}\n")
    return module


DRIVER = """
import contextlib, io, json
from tlcore.cli import main

out = {}
for key, argv in (("list", ["list"]), ("plugins", ["plugins", "--json"]), ("help", ["--help"])):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    out[key] = {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue()}
from tlcore.registry import get_registry
registry = get_registry()
out["specs"] = registry.spec_names()
out["llama_ok"] = registry.get_spec("llama").name == "llama"
print(json.dumps(out))
"""


def _env(path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLCORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _tlcore(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlcore.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_leaves_the_rest_usable(case: str, tmp_path: Path) -> None:
    source, spec, reason = BROKEN[case]
    ep = case.replace("_", "-")
    module = fake_dist(tmp_path, ep, source, spec)
    fake_dist(tmp_path, "good", GOOD)
    result = subprocess.run(
        [sys.executable, "-c", DRIVER],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # Built-ins and the other plugin still load; list and --help work.
    assert out["llama_ok"] and "fake_good" in out["specs"]
    assert out["list"]["code"] == 0 and "llama" in out["list"]["out"]
    assert "fake_good" in out["list"]["out"]
    assert out["help"]["code"] == 0 and "plugins" in out["help"]["out"]
    # Exactly one warning, naming the plugin and its distribution.
    warnings = [line for line in out["list"]["err"].splitlines() if "warning" in line]
    assert len(warnings) == 1, out["list"]["err"]
    expected = f"tlcore: warning: tlcore plugin '{ep}' (distribution tlcore-{ep} 1.2.3): "
    assert warnings[0].startswith(expected), warnings[0]
    assert reason.format(module=module, ep=ep) in warnings[0]
    # tlcore plugins reports it with its reason.
    rows = {row["name"]: row for row in json.loads(out["plugins"]["out"])}
    assert rows["good"]["status"] == "ok" and rows["good"]["version"] == "1.2.3"
    assert rows[ep]["errors"] and reason.format(module=module, ep=ep) in rows[ep]["errors"][0]
    whole_plugin = case not in ("invalid_spec", "unknown_trait_kind")
    assert rows[ep]["status"] == ("failed" if whole_plugin else "ok")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_strict_mode_raises_instead(case: str, tmp_path: Path, monkeypatch) -> None:
    source, spec, reason = BROKEN[case]
    ep = f"strict-{case.replace('_', '-')}"
    module = fake_dist(tmp_path, ep, source, spec)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(STRICT_ENV, "1")
    monkeypatch.setenv(LOAD_ENV, ep)
    with pytest.raises(PluginError) as info:
        TlcorePluginManager().load()
    message = str(info.value)
    assert message.startswith(f"tlcore plugin '{ep}' (distribution tlcore-{ep} 1.2.3): ")
    assert reason.format(module=module, ep=ep) in message


def test_cli_with_every_broken_plugin_installed(tmp_path: Path) -> None:
    for case, (source, spec, _) in BROKEN.items():
        fake_dist(tmp_path, case.replace("_", "-"), source, spec)
    env = _env(tmp_path)
    help_run = _tlcore(["--help"], env)
    assert help_run.returncode == 0, help_run.stderr
    assert "plugins" in help_run.stdout and "Traceback" not in help_run.stderr
    assert len(re.findall(r"^tlcore: warning: ", help_run.stderr, re.M)) == len(BROKEN)
    strict = _tlcore(["list"], _env(tmp_path, **{STRICT_ENV: "1"}))
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.startswith("tlcore: error: PluginError: tlcore plugin '")


@pytest.fixture
def two_good(tmp_path: Path, monkeypatch) -> Path:
    for ep in ("switch-a", "switch-b"):
        fake_dist(tmp_path, ep, GOOD.replace("fake_good", f"fake_{ep.replace('-', '_')}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (STRICT_ENV, DISABLE_ENV, LOAD_ENV, BLOCK_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _loaded(env: dict[str, str], monkeypatch) -> TlcorePluginManager:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    manager = TlcorePluginManager()
    manager.load()
    return manager


def test_autoload_loads_every_entry_point(two_good: Path, monkeypatch) -> None:
    manager = _loaded({}, monkeypatch)
    assert {"fake_switch_a", "fake_switch_b"} <= set(manager.registry.specs)
    assert manager.records["switch-a"].distribution == "tlcore-switch-a"


def test_disable_plugin_autoload(two_good: Path, monkeypatch) -> None:
    manager = _loaded({DISABLE_ENV: "1"}, monkeypatch)
    assert "fake_switch_a" not in manager.registry.specs and "llama" in manager.registry.specs
    assert manager.records["switch-a"].state == "skipped"
    # An explicit selection still loads, as pytest's -p does under PYTEST_DISABLE_PLUGIN_AUTOLOAD.
    manager = _loaded({DISABLE_ENV: "1", LOAD_ENV: "switch-b"}, monkeypatch)
    assert "fake_switch_b" in manager.registry.specs
    assert "fake_switch_a" not in manager.registry.specs


def test_load_plugins_selects_by_entry_point_or_distribution(two_good: Path, monkeypatch) -> None:
    manager = _loaded({LOAD_ENV: "tlcore_switch_a"}, monkeypatch)  # distribution, any spelling
    assert "fake_switch_a" in manager.registry.specs
    assert "fake_switch_b" not in manager.registry.specs
    assert manager.records["switch-b"].state == "skipped"
    manager = _loaded({LOAD_ENV: ""}, monkeypatch)  # set but empty: none
    assert "fake_switch_a" not in manager.registry.specs
    with pytest.warns(UserWarning, match="'no-such-plugin'.*requested by TLCORE_LOAD_PLUGINS"):
        _loaded({LOAD_ENV: "switch-a,no-such-plugin"}, monkeypatch)


def test_block_plugins(two_good: Path, monkeypatch) -> None:
    manager = _loaded({BLOCK_ENV: "switch-a", LOAD_ENV: "switch-a,switch-b"}, monkeypatch)
    assert "fake_switch_a" not in manager.registry.specs
    assert "fake_switch_b" in manager.registry.specs
    assert manager.records["switch-a"].state == "blocked"
    assert manager.pm.is_blocked("switch-a")
    assert not manager.failures()


EXAMPLE_PLUGINS = {
    # package folder: (entry point, module, what it registers)
    "tlcore-nemotron": (
        "nemotron",
        "tlcore_nemotron.plugin",
        {"specs": ["nemotron"], "traits": ["mlp/squared_relu"], "weight_ops": ["layernorm1p"]},
    ),
    "tlcore-gated-residual": (
        "gated_residual",
        "tlcore_gated_residual.plugin",
        {"specs": ["gated_residual"], "traits": ["block/gated_residual", "norm/scalenorm"]},
    ),
}


@pytest.mark.parametrize("package", sorted(EXAMPLE_PLUGINS))
def test_installed_example_plugin_is_discovered_through_its_entry_point(package: str) -> None:
    name, module, registered = EXAMPLE_PLUGINS[package]
    pyproject = (ROOT / "plugins" / package / "pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)
    result = _tlcore(["plugins", "--json"], _env(ROOT / "nonexistent"))
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert name in rows, f"{package} is not installed: run `make install`"
    row = rows[name]
    assert row["distribution"] == package
    assert row["version"] == version
    assert row["module"] == module
    assert f'{name} = "{module}"' in pyproject
    assert row["status"] == "ok" and not row["builtin"]
    assert row["registered"] == registered
    assert set(row["hooks"]) == {f"register_{kind}" for kind in registered}


def test_two_distributions_with_one_entry_point_name(tmp_path: Path, monkeypatch) -> None:
    for dist in ("first", "second"):
        module = f"fake_tlcore_same_{dist}"
        (tmp_path / f"{module}.py").write_text("")
        info = tmp_path / f"tlcore_same_{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: tlcore-same-{dist}\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(f"[tlcore]\nsame = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(LOAD_ENV, "same")
    with pytest.warns(UserWarning) as caught:
        manager = _loaded({}, monkeypatch)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(
        "tlcore plugin 'same [tlcore-same-second]' (distribution tlcore-same-second 1.0): "
        "entry point name 'same' is already used by plugin 'same' (distribution "
        "tlcore-same-first 1.0)"
    )
    assert manager.records["same"].state == "ok"
    assert manager.records["same"].distribution == "tlcore-same-first"

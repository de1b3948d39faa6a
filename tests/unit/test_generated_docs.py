"""The README's architecture table and docs/architectures.md are generated from the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_lists_every_builtin_architecture() -> None:
    from tlcore.registry import get_registry

    readme = (ROOT / "README.md").read_text()
    registry = get_registry()
    for name in registry.spec_names():
        if registry.specs[name].source.plugin == "tlcore.builtin.plugin":
            assert f"| `{name}` |" in readme

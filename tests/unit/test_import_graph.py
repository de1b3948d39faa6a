"""tlcore's import graph has no cycles, counting imports inside functions and TYPE_CHECKING blocks.

An import inside a function still couples two modules: if it closed a cycle, it would only be
hiding one. So every ``import``/``from ... import`` of a tlcore module counts, wherever it sits.
A submodule importing its own package (``tlcore.parity.compare`` -> ``tlcore.parity``) is Python
running the package ``__init__``, not a design dependency, and is not an edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tlcore"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``module -> modules it imports`` for every module under ``root`` (a package folder)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in files:  # ``from pkg import name`` -> pkg
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_tlcore_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 80 and "tlcore.model" in graph["tlcore.demo.loading"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle closed inside a function or a TYPE_CHECKING block is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    (pkg / "d.py").write_text("from . import a\nfrom .sub import e\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import e\n")
    (pkg / "sub" / "e.py").write_text("import pkg.sub\n")
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.a", "pkg.sub", "pkg.sub.e"}
    assert graph["pkg.sub.e"] == set()  # a module importing its own package is no edge
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


@pytest.mark.parametrize("module", ["tlcore", "tlcore.hook_points"])
def test_light_imports_stay_light(module: str) -> None:
    """``import tlcore`` loads no torch; ``tlcore.hook_points`` no model, cache or registry."""
    code = (
        f"import sys, {module}; heavy = ['torch', 'transformers', 'tlcore.model', "
        "'tlcore.cache', 'tlcore.registry']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)  # noqa: S307 - our own print of a list of strings
    expected = [] if module == "tlcore" else ["torch"]
    assert loaded == expected

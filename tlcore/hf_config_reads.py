"""What transformers' modelling code reads from a config: an AST scan of its source.

The config guard (:mod:`tlcore.guard`) accepts a non-default HF config field that HF's own model
never reads. :func:`hf_read_fields` answers which fields those are by parsing, without importing,
the module that defines the causal-LM class transformers would build for a config class (and the
transformers modules it imports), so the verdict follows the installed transformers version.

Parsing ``modeling_utils`` alone takes a third of a second, paid on every first load of a process,
so what a source file reads (and imports) is kept in ``hf_config_reads.json`` under
:func:`~tlcore.loading.gguf.tlcore_cache_dir`, keyed by the file's path, size and modification
time: a changed or upgraded transformers file is scanned again. The cache is an optimisation
only; an unreadable or unwritable cache directory means scanning every time.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

_CONFIG_NAME = re.compile(r"(^|_)config$")
_SKIPPED_IMPORTS = ("transformers.utils", "transformers.configuration_utils")


def hf_read_fields(config_class: type) -> frozenset[str] | None:
    """The config fields transformers' causal-LM code for ``config_class`` may read.

    Scans the module defining the causal-LM class transformers maps ``config_class`` to, and the
    transformers modules it imports, for ``<...config>.<name>``, ``getattr(<...config>, "name")``
    and ``hasattr(...)``; ``attribute_map`` aliases count as reads of the fields they name. The
    scan over-approximates (a field read by a sibling head class counts), which can only make the
    guard stricter.

    Args:
        config_class: A ``PretrainedConfig`` subclass.

    Returns:
        Field names, or None when no modelling code is found (then every field counts as read).

    Example:
        >>> from transformers import GPT2Config
        >>> reads = hf_read_fields(GPT2Config)
        >>> "n_embd" in reads, "n_ctx" in reads   # n_ctx is a legacy key GPT-2's code never reads
        (True, False)
    """
    return _read_fields_cached(config_class)


@functools.cache
def _read_fields_cached(config_class: type) -> frozenset[str] | None:
    module = _modelling_module(config_class)
    if module is None:
        return None
    names: set[str] = set()
    for scanned in _with_transformers_imports(module):
        names |= _config_reads(scanned)
    aliases = getattr(config_class, "attribute_map", {}) or {}
    return frozenset(names | {aliases[n] for n in names if n in aliases})


def _modelling_module(config_class: type) -> str | None:
    """The module defining transformers' causal LM for ``config_class``, found without import."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    )

    # A model registered at run time (a plugin's reference model) is already imported.
    registered = getattr(MODEL_FOR_CAUSAL_LM_MAPPING, "_extra_content", {}).get(config_class)
    if registered is not None:
        return str(registered.__module__)
    model_type = getattr(config_class, "model_type", "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return None
    package = model_type_to_module_name(model_type)
    return f"transformers.models.{package}.modeling_{package}"


def _with_transformers_imports(module: str) -> list[str]:
    """``module`` and the transformers modules it imports from (one level deep)."""
    return [module, *(m for m in _scan(module)["imports"] if m != module)]


def _imports(tree: ast.Module, module: str) -> list[str]:
    out: list[str] = []
    package = module.rpartition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        if not base.startswith("transformers") or base.startswith(_SKIPPED_IMPORTS):
            continue
        if ".configuration_" not in base and base not in out:
            out.append(base)
    return out


def _source_file(module: str) -> Path | None:
    """The ``.py`` file a module is (or would be) loaded from, found without importing it."""
    loaded = sys.modules.get(module)
    try:
        if loaded is not None:
            origin = getattr(loaded, "__file__", None)
        else:
            found = importlib.util.find_spec(module)
            origin = found.origin if found is not None else None
    except (ImportError, ValueError):
        return None
    return Path(origin) if origin and origin.endswith(".py") else None


def _cache_file() -> Path:
    from tlcore.loading.gguf import tlcore_cache_dir

    return tlcore_cache_dir() / "hf_config_reads.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass


@functools.cache
def _scan(module: str) -> dict[str, list[str]]:
    """The config fields ``module`` reads and the transformers modules it imports."""
    file = _source_file(module)
    stamp: list[Any] | None = None
    if file is not None:
        try:
            info = file.stat()
            stamp = [str(file), info.st_size, info.st_mtime_ns]
        except OSError:
            stamp = None
    if stamp is not None:
        cached = _read_cache().get(module)
        if isinstance(cached, dict) and cached.get("stamp") == stamp:
            return {"reads": list(cached["reads"]), "imports": list(cached["imports"])}
    tree = _parse(module)
    if tree is None:
        return {"reads": [], "imports": []}
    entry = {"reads": sorted(_reads(tree)), "imports": _imports(tree, module)}
    if stamp is not None:
        _write_cache(module, {"stamp": stamp, **entry})
    return entry


@functools.cache
def _parse(module: str) -> ast.Module | None:
    """Parse a module's source without importing it (None when it has no readable source)."""
    loaded = sys.modules.get(module)
    try:
        if loaded is not None:
            source = inspect.getsource(loaded)
        else:
            found = importlib.util.find_spec(module)
            if found is None or found.origin is None or not found.origin.endswith(".py"):
                return None
            source = Path(found.origin).read_text(encoding="utf-8")
        return ast.parse(source)
    except (OSError, TypeError, SyntaxError, ImportError, ValueError):
        return None


def _config_reads(module: str) -> set[str]:
    return set(_scan(module)["reads"])


def _reads(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_config(node.value):
            names.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and _is_config(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            names.add(node.args[1].value)
    return names


def _is_config(node: ast.AST) -> bool:
    """``config``, ``self.config``, ``text_config``, ``config.get_text_config()``, ..."""
    if isinstance(node, ast.Name):
        return bool(_CONFIG_NAME.search(node.id))
    if isinstance(node, ast.Attribute):
        return bool(_CONFIG_NAME.search(node.attr))
    if isinstance(node, ast.Call):
        return _is_config(node.func) or (
            isinstance(node.func, ast.Attribute) and _is_config(node.func.value)
        )
    return False

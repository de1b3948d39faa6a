"""Make ``import transformer_lens`` give tlcore: unmodified TransformerLens 2.x code runs on it.

Call :func:`as_transformer_lens` once, before anything imports ``transformer_lens``::

    import tlcore.compat
    tlcore.compat.as_transformer_lens()

    import sae_lens                                     # imports transformer_lens → tlcore
    from transformer_lens import HookedTransformer      # tlcore.HookedTransformer
    from transformer_lens.hook_points import HookPoint  # tlcore's HookPoint

**Precedence.** While the switch is on, every ``transformer_lens`` module path resolves to tlcore,
whether or not the real TransformerLens is installed: the paths in :data:`MODULES` are tlcore's,
and any other ``transformer_lens.*`` path (TransformerLens 3's ``model_bridge``, BERT/T5 classes,
...) raises ``ModuleNotFoundError`` naming it, never a mix of the two packages. If the real
package was imported before the switch, :func:`as_transformer_lens` refuses (its objects are
already in use) unless ``replace_loaded=True`` drops them from ``sys.modules``.
``importlib.metadata.version("transformer-lens")`` still reports the installed distribution, if any.
:func:`restore` turns the switch off.

Each ``transformer_lens`` module is a lazy proxy: reading an attribute imports the tlcore module
that provides it (the first in its :data:`MODULES` entry that has it). Editing the table is all it
takes to map another path, or to point a path at a module that moved.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["MODULES", "PACKAGE_ATTRIBUTES", "as_transformer_lens", "is_active", "restore"]

_COMPONENTS: dict[str, str] = {
    "Attention": "tlcore.components.attention:Attention",
    "AbstractAttention": "tlcore.components.attention:Attention",
    "GroupedQueryAttention": "tlcore.components.attention:GroupedQueryAttention",
    "LayerNorm": "tlcore.components.norms:LayerNorm",
    "LayerNormPre": "tlcore.components.norms:LayerNorm",
    "RMSNorm": "tlcore.components.norms:RMSNorm",
    "RMSNormPre": "tlcore.components.norms:RMSNorm",
    "Embed": "tlcore.components.embed:Embed",
    "PosEmbed": "tlcore.components.positions:LearnedPositions",
    "Unembed": "tlcore.components.unembed:Unembed",
    "MLP": "tlcore.components.mlp:MLP",
    "GatedMLP": "tlcore.components.mlp:GatedMLP",
    "MoE": "tlcore.components.moe:MoE",
    "TransformerBlock": "tlcore.components.block:TransformerBlock",
    "CanBeUsedAsMLP": "tlcore.compat.names:CanBeUsedAsMLP",
}
"""TransformerLens component names → tlcore's classes (for imports, type hints, isinstance)."""

MODULES: dict[str, Sequence[str | dict[str, str]]] = {
    # TransformerLens 2.x module path: where its names come from, in order. A string is a tlcore
    # module (all its names; skipped if it does not exist yet); a dict maps single names to
    # "module:attribute".
    "transformer_lens.hook_points": ("tlcore.hook_points", "tlcore.hooks"),
    "transformer_lens.HookedTransformer": (
        "tlcore.model",
        "tlcore.hook_points",
        "tlcore.hooks",
        "tlcore.compat.names",
        {"ActivationCache": "tlcore.cache:ActivationCache", "utils": "tlcore.utils:"},
    ),
    "transformer_lens.HookedTransformerConfig": ("tlcore.config",),
    "transformer_lens.ActivationCache": ("tlcore.cache",),
    "transformer_lens.FactoredMatrix": ("tlcore.factored_matrix",),
    "transformer_lens.SVDInterpreter": ("tlcore.svd_interpreter",),
    "transformer_lens.utils": ("tlcore.utils",),
    "transformer_lens.utilities": ("tlcore.utils",),
    "transformer_lens.utilities.activation_functions": (
        "tlcore.utils.activations",
        "tlcore.compat.names",
    ),
    "transformer_lens.evals": ("tlcore.evals",),
    "transformer_lens.train": ("tlcore.train",),
    "transformer_lens.patching": ("tlcore.patching",),
    "transformer_lens.head_detector": ("tlcore.head_detector",),
    "transformer_lens.loading_from_pretrained": ("tlcore.loading_from_pretrained",),
    "transformer_lens.past_key_value_caching": ("tlcore.past_key_value_caching",),
    "transformer_lens.components": (_COMPONENTS,),
    "transformer_lens.components.mlps": (_COMPONENTS,),
    "transformer_lens.components.mlps.can_be_used_as_mlp": (_COMPONENTS,),
    "transformer_lens.components.mlps.mlp": (_COMPONENTS,),
    "transformer_lens.components.mlps.gated_mlp": (_COMPONENTS,),
    "transformer_lens.components.mlps.moe": (_COMPONENTS,),
}
"""TransformerLens 2.x module paths and the tlcore modules that provide their names."""

PACKAGE_ATTRIBUTES: dict[str, str] = {
    # ``transformer_lens.X``: classes where TransformerLens's package exports a class, else the
    # module proxy of that path.
    "HookedTransformer": "tlcore.model:HookedTransformer",
    "HookedTransformerConfig": "tlcore.config:HookedTransformerConfig",
    "ActivationCache": "tlcore.cache:ActivationCache",
    "FactoredMatrix": "tlcore.factored_matrix:FactoredMatrix",
    "SVDInterpreter": "tlcore.svd_interpreter:SVDInterpreter",
    "HookedTransformerKeyValueCache": "tlcore.kv_cache:HookedTransformerKeyValueCache",
    "HookedTransformerKeyValueCacheEntry": "tlcore.kv_cache:HookedTransformerKeyValueCacheEntry",
    "EasyTransformer": "tlcore.model:HookedTransformer",
    "EasyTransformerConfig": "tlcore.config:HookedTransformerConfig",
    "EasyTransformerKeyValueCache": "tlcore.kv_cache:HookedTransformerKeyValueCache",
    "EasyTransformerKeyValueCacheEntry": "tlcore.kv_cache:HookedTransformerKeyValueCacheEntry",
    "loading": "transformer_lens.loading_from_pretrained",
}
"""Top-level names of ``transformer_lens`` that are not simply its submodules."""

_MISSING_HINT = (
    "tlcore provides TransformerLens 2.x's HookedTransformer API; HookedEncoder, "
    "HookedEncoderDecoder, HookedAudioEncoder, BertNextSentencePrediction, lit, factories and "
    "TransformerLens 3's model_bridge are not part of it"
)
_ROOT = "transformer_lens"
_state: dict[str, Any] = {"finder": None}


def _resolve(target: str) -> Any:
    """``"module:attr"`` → the attribute; ``"module:"`` or a proxied path → the module."""
    module_name, _, attr = target.partition(":")
    if module_name in sys.modules and module_name.startswith(_ROOT):
        module = sys.modules[module_name]
    else:
        module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class _ProxyModule(types.ModuleType):
    """A ``transformer_lens`` module whose attributes come from tlcore modules, on first use."""

    def __init__(self, name: str, sources: Sequence[str | dict[str, str]]) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package: submodules import through sys.modules
        self.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        self.__tlcore_sources__ = tuple(sources)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        child = f"{self.__name__}.{name}"
        if child in sys.modules:
            return sys.modules[child]
        for source in self.__tlcore_sources__:
            if isinstance(source, dict):
                if name in source:
                    value = _resolve(source[name])
                    break
                continue
            try:
                module = importlib.import_module(source)
            except ModuleNotFoundError as exc:
                if exc.name == source:  # not written yet (e.g. tlcore.hook_points): next one
                    continue
                raise
            if hasattr(module, name):
                value = getattr(module, name)
                break
        else:
            raise AttributeError(
                f"module {self.__name__!r} (tlcore's TransformerLens compatibility) has no "
                f"attribute {name!r}; {_MISSING_HINT}"
            )
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        for source in self.__tlcore_sources__:
            if isinstance(source, dict):
                names.update(source)
                continue
            try:
                names.update(n for n in dir(importlib.import_module(source)) if n[0] != "_")
            except ModuleNotFoundError:
                continue
        return sorted(names)


class _Package(_ProxyModule):
    """The ``transformer_lens`` package: its classes, then its submodules."""

    __version__: str

    def __dir__(self) -> list[str]:
        children = {n.split(".")[1] for n in MODULES}
        return sorted({*super().__dir__(), *PACKAGE_ATTRIBUTES, *children})

    def __getattr__(self, name: str) -> Any:
        if name in PACKAGE_ATTRIBUTES:
            value = _resolve(PACKAGE_ATTRIBUTES[name])
            setattr(self, name, value)
            return value
        if f"{_ROOT}.{name}" in sys.modules:
            return sys.modules[f"{_ROOT}.{name}"]
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"module 'transformer_lens' (tlcore's TransformerLens compatibility) has no "
            f"attribute {name!r}; {_MISSING_HINT}"
        )


class _Finder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: a ``transformer_lens`` path tlcore does not map is an error."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _ROOT and not fullname.startswith(_ROOT + "."):
            return None
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: tlcore.compat.as_transformer_lens() is on and maps "
            f"only TransformerLens 2.x's paths ({', '.join(sorted(MODULES))}); {_MISSING_HINT}",
            name=fullname,
        )


def is_active() -> bool:
    """Whether :func:`as_transformer_lens` is on."""
    return _state["finder"] is not None


def as_transformer_lens(replace_loaded: bool = False) -> types.ModuleType:
    """Make ``transformer_lens`` and its 2.x submodule paths resolve to tlcore (idempotent).

    Args:
        replace_loaded: If the real TransformerLens is already imported, drop its modules from
            ``sys.modules`` instead of refusing (objects made from it stay as they are).

    Returns:
        The ``transformer_lens`` package proxy.

    Raises:
        RuntimeError: If the real TransformerLens is already imported and ``replace_loaded`` is
            False.

    Example:
        >>> import tlcore, tlcore.compat
        >>> tlcore.compat.as_transformer_lens() is __import__("transformer_lens")
        True
        >>> from transformer_lens.hook_points import HookPoint
        >>> HookPoint is tlcore.HookPoint
        True
        >>> tlcore.compat.restore()
    """
    if is_active():
        return sys.modules[_ROOT]
    loaded = [n for n in sys.modules if n == _ROOT or n.startswith(_ROOT + ".")]
    if loaded:
        if not replace_loaded:
            raise RuntimeError(
                "transformer_lens is already imported; call tlcore.compat.as_transformer_lens() "
                "before anything imports it, or pass replace_loaded=True"
            )
        for name in loaded:
            del sys.modules[name]
    package = _Package(_ROOT, ())
    package.__version__ = "2.18.0+tlcore"
    package.__file__ = __file__
    sys.modules[_ROOT] = package
    for name, sources in MODULES.items():
        sys.modules[name] = _ProxyModule(name, sources)
    for name in sorted(MODULES):  # parents before children: attach each to its parent
        parent, _, leaf = name.rpartition(".")
        if leaf not in PACKAGE_ATTRIBUTES:
            setattr(sys.modules[parent], leaf, sys.modules[name])
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    _state["finder"] = finder
    return package


def restore() -> None:
    """Turn the switch off: remove the ``transformer_lens`` proxies and the import hook."""
    finder = _state["finder"]
    if finder is None:
        return
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n == _ROOT or n.startswith(_ROOT + ".")]:
        del sys.modules[name]
    _state["finder"] = None

"""The registry: architectures, trait kinds, weight ops and model aliases, each with its source.

The registry is filled only through the plugin manager's hooks (the built-ins are a plugin like any
other), so every entry records which plugin and distribution registered it.

Built-ins keep their names. Replacing a built-in item (``override=True`` on a built-in
architecture, trait kind, weight op or alias) is refused unless the user allowed it explicitly:
the environment variable :data:`REPLACE_ENV` names the built-ins that may be replaced (``*`` for
all), or :func:`tlcore.register_spec` is called with ``replace_builtin=True``. An allowed
replacement is recorded on the spec (``spec.source``, hence ``cfg.spec_source``) and shown by
``tlcore plugins``.

The entries themselves are in :mod:`tlcore.registry.entries`, the queries (``get_spec``,
``candidates_for``, ...) in :mod:`tlcore.registry.lookup`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import PluginError, SpecError
from tlcore.registry.entries import (
    REPLACE_ENV,
    Source,
    SpecEntry,
    TraitKind,
    WeightOp,
    replacement_allowed,
)
from tlcore.registry.lookup import RegistryLookup
from tlcore.spec.bounds import check_document_bounds
from tlcore.spec.loader import read_spec_file
from tlcore.spec.schema import ArchitectureSpec, TextTower
from tlcore.spec.traits import Trait

__all__ = ["REPLACE_ENV", "Registry", "Source", "TraitKind", "WeightOp", "replacement_allowed"]


@dataclass
class Registry(RegistryLookup):
    """All registered items. Use :func:`tlcore.registry.get_registry` to get the populated one."""

    specs: dict[str, SpecEntry] = field(default_factory=dict)
    traits: dict[tuple[str, str], TraitKind] = field(default_factory=dict)
    weight_ops: dict[str, WeightOp] = field(default_factory=dict)
    aliases: dict[str, tuple[str, Source]] = field(default_factory=dict)
    text_towers: dict[str, tuple[TextTower, Source]] = field(default_factory=dict)
    """Wrapper HF model type → how its checkpoints hold the language model."""
    _validated: dict[str, ArchitectureSpec] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)
    """Built-in items replaced with the user's permission: ``"architecture 'gpt2'"`` → plugin."""
    _deferred: int = 0
    _allow_builtin: bool = False

    @contextlib.contextmanager
    def deferred_validation(self) -> Iterator[None]:
        """Accept specs without validating them (plugin loading validates once at the end).

        Yields:
            Nothing.
        """
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    @contextlib.contextmanager
    def builtin_replacement(self, allowed: bool) -> Iterator[None]:
        """Allow (or not) replacing built-in items inside the block, whatever the environment.

        Args:
            allowed: The user's explicit choice (``register_spec(..., replace_builtin=True)``).

        Yields:
            Nothing.
        """
        before, self._allow_builtin = self._allow_builtin, allowed
        try:
            yield
        finally:
            self._allow_builtin = before

    def _check_replacement(self, what: str, name: str, old: Source, new: Source) -> None:
        """Refuse replacing a built-in item unless the user allowed it; record it if allowed."""
        if not old.builtin or new.builtin:
            return
        if self._allow_builtin or replacement_allowed(name):
            self.replacements[f"{what} '{name}'"] = new.plugin
            return
        raise PluginError(
            f"{what} '{name}' from {new} would replace tlcore's built-in one; built-ins keep their "
            f"names. To replace it on purpose, set {REPLACE_ENV}={name} (or use "
            f"tlcore.register_spec(..., replace_builtin=True)); otherwise give it another name"
        )

    # -- registration ---------------------------------------------------------------------------
    def add_spec(
        self,
        spec: Mapping[str, Any] | ArchitectureSpec | str | Path,
        source: Source,
        override: bool = False,
    ) -> list[str]:
        """Register a spec given as a document, an object, a YAML file or a folder of YAML files.

        Outside plugin loading (a direct call), the new specs are validated at once: an invalid
        one raises and leaves the registry as it was, so it cannot break later loads.

        Args:
            spec: What to register.
            source: The registering plugin.
            override: Replace an existing spec of the same name instead of failing (a built-in
                one only where the user allowed it, see :data:`REPLACE_ENV`).

        Returns:
            The names registered.

        Raises:
            PluginError: If a name is taken and ``override`` is false, or the name is a built-in's
                and replacing it was not allowed.
            SpecError: If a file cannot be read or a spec is malformed.
        """
        if isinstance(spec, ArchitectureSpec):
            docs = [spec.model_dump(by_alias=True, exclude={"source"})]
        elif isinstance(spec, (str, Path)):
            path = Path(spec)
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            if path.is_dir() and not files:
                raise SpecError(f"{path}: no spec files (*.yaml) in this folder")
            docs = [read_spec_file(f) for f in files]
        elif isinstance(spec, Mapping):
            where = f"<spec mapping from {source}>"
            check_document_bounds(spec, where)
            docs = [dict(spec)]
        else:
            raise SpecError(f"cannot register {spec!r} as a spec: not a path, mapping or spec")
        for doc in docs:
            name = doc.get("name")
            if not isinstance(name, str) or not name:
                where = doc.get("source_file") or f"<spec mapping from {source}>"
                raise SpecError(f"{where}: field 'name': required, a non-empty string")
        before, replaced = dict(self.specs), dict(self.replacements)
        names = []
        try:
            for doc in docs:
                name = doc["name"]
                old = self.specs.get(name)
                if old is not None and not override:
                    raise PluginError(
                        f"architecture '{name}' from {source} conflicts with the one from "
                        f"{old.source}; pass override=True to replace it"
                    )
                if old is not None:
                    self._check_replacement("architecture", name, old.source, source)
                self.specs[name] = SpecEntry(
                    doc, source, replaces=old, user_allowed=self._allow_builtin
                )
                names.append(name)
            self._validated.clear()
            if not self._deferred:
                for name in names:
                    self.get_spec(name)
        except Exception:
            self.specs, self.replacements = before, replaced
            self._validated.clear()
            raise
        return names

    def add_trait(
        self,
        slot: str,
        model: type[Trait],
        component: Callable[..., Any],
        source: Source,
        override: bool = False,
    ) -> None:
        """Register a trait kind (its ``kind`` comes from the model's ``kind`` field default).

        Args:
            slot: The slot it fills.
            model: Its pydantic parameter model (a :class:`Trait` subclass with a ``kind`` default).
            component: Factory building the module (its signature depends on the slot).
            source: The registering plugin.
            override: Replace an existing kind.

        Raises:
            PluginError: If the kind exists and ``override`` is false, or the model is invalid.
        """
        if not (isinstance(model, type) and issubclass(model, Trait)):
            raise PluginError(f"trait for slot '{slot}' from {source} is not a tlcore Trait model")
        kind = model.model_fields["kind"].default
        if not isinstance(kind, str):
            raise PluginError(f"trait model {model.__name__} from {source} has no default 'kind'")
        key = (slot, kind)
        if key in self.traits and not override:
            raise PluginError(
                f"trait {slot}/{kind} from {source} conflicts with the one from "
                f"{self.traits[key].source}; pass override=True to replace it"
            )
        if key in self.traits:
            self._check_replacement("trait kind", f"{slot}/{kind}", self.traits[key].source, source)
        if not callable(component):
            raise PluginError(f"trait {slot}/{kind} from {source}: the component is not callable")
        self.traits[key] = TraitKind(slot, kind, model, component, source)
        self._validated.clear()

    def add_weight_op(
        self, name: str, fn: Callable[..., Any], source: Source, override: bool = False
    ) -> None:
        """Register a weight transform.

        Args:
            name: Its name in specs' ``ops:`` lists.
            fn: ``fn(tensors: list[Tensor], cfg, **params) -> list[Tensor]``.
            source: The registering plugin.
            override: Replace an existing op.

        Raises:
            PluginError: If the name is taken and ``override`` is false.
        """
        if name in self.weight_ops and not override:
            raise PluginError(
                f"weight op '{name}' from {source} conflicts with the one from "
                f"{self.weight_ops[name].source}; pass override=True to replace it"
            )
        if name in self.weight_ops:
            self._check_replacement("weight op", name, self.weight_ops[name].source, source)
        self.weight_ops[name] = WeightOp(name, fn, source, (fn.__doc__ or "").strip())

    def add_alias(self, alias: str, target: str, source: Source, override: bool = False) -> None:
        """Register a model alias (``gpt2-small`` → ``gpt2``, or → a local path or hub id).

        Args:
            alias: The short name.
            target: What it stands for.
            source: The registering plugin.
            override: Replace an existing alias.

        Raises:
            PluginError: If the alias is taken and ``override`` is false.
        """
        if not isinstance(alias, str) or not isinstance(target, str) or not alias or not target:
            raise PluginError(f"alias {alias!r} -> {target!r} from {source}: both must be strings")
        if alias in self.aliases and self.aliases[alias][0] != target:
            if not override:
                raise PluginError(
                    f"alias '{alias}' from {source} conflicts with the one from "
                    f"{self.aliases[alias][1]}"
                )
            self._check_replacement("alias", alias, self.aliases[alias][1], source)
        self.aliases[alias] = (target, source)

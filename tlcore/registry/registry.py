"""The registry: architectures, trait kinds, weight ops and model aliases, each with its source.

The registry is filled only through the plugin manager's hooks (the built-ins are a plugin like any
other), so every entry records which plugin and distribution registered it.

Built-ins keep their names. Replacing a built-in item (``override=True`` on a built-in
architecture, trait kind, weight op or alias) is refused unless the user allowed it explicitly:
the environment variable :data:`REPLACE_ENV` names the built-ins that may be replaced (``*`` for
all), or :func:`tlcore.register_spec` is called with ``replace_builtin=True``. An allowed
replacement is recorded on the spec (``spec.source``, hence ``cfg.spec_source``) and shown by
``tlcore plugins``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import PluginError, SpecError, UnknownArchitectureError
from tlcore.spec.bounds import check_document_bounds
from tlcore.spec.loader import merge_extends, read_spec_file, validate_spec
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait

REPLACE_ENV = "TLCORE_REPLACE_BUILTINS"
"""Comma-separated built-in names a plugin may replace: architectures (``gpt2``), trait kinds
(``norm/layernorm``), weight ops (``transpose``) and aliases (``gpt2-small``); ``*`` for all."""


def replacement_allowed(name: str) -> bool:
    """Tell whether the user allowed replacing the built-in item ``name`` (:data:`REPLACE_ENV`).

    Args:
        name: An architecture, ``slot/kind``, weight op or alias name.

    Returns:
        True if the environment variable names it (or is ``*``).
    """
    allowed = {part.strip() for part in os.environ.get(REPLACE_ENV, "").split(",")}
    return "*" in allowed or name in allowed


@dataclass(frozen=True)
class Source:
    """Where a registry entry came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        if self.distribution:
            return f"plugin '{self.plugin}' ({self.distribution} {self.version or ''})".strip()
        return f"plugin '{self.plugin}'"


@dataclass(frozen=True)
class TraitKind:
    """A registered trait kind: its slot, parameter model and component factory."""

    slot: str
    kind: str
    model: type[Trait]
    component: Callable[..., Any]
    source: Source


@dataclass(frozen=True)
class WeightOp:
    """A registered weight transform: ``fn(tensors, cfg, **params) -> tensors``."""

    name: str
    fn: Callable[..., Any]
    source: Source
    doc: str = ""


@dataclass
class _SpecEntry:
    doc: dict[str, Any]
    source: Source
    replaces: _SpecEntry | None = None
    """The entry this one replaced under the same name (restored if this one is dropped)."""
    takes_over: list[str] = field(default_factory=list)
    """Built-in architectures this spec outranks for some HF configs (allowed by the user)."""
    user_allowed: bool = False
    """Registered with ``replace_builtin=True`` (:func:`tlcore.register_spec`)."""
    notes: list[str] = field(default_factory=list)
    """What else a model built from it should know (a refused replacement)."""

    def describe_source(self) -> str:
        """The source, plus which built-ins it replaces (what ``cfg.spec_source`` records)."""
        notes = []
        if self.replaces is not None and self.replaces.source.builtin:
            notes.append(f"replaces built-in architecture '{self.doc.get('name')}'")
        notes += [f"takes over HF configs of built-in architecture '{n}'" for n in self.takes_over]
        return "; ".join([str(self.source), *notes, *self.notes])


@dataclass
class Registry:
    """All registered items. Use :func:`tlcore.registry.get_registry` to get the populated one."""

    specs: dict[str, _SpecEntry] = field(default_factory=dict)
    traits: dict[tuple[str, str], TraitKind] = field(default_factory=dict)
    weight_ops: dict[str, WeightOp] = field(default_factory=dict)
    aliases: dict[str, tuple[str, Source]] = field(default_factory=dict)
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
                self.specs[name] = _SpecEntry(
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

    # -- lookup ---------------------------------------------------------------------------------
    def trait_model(self, slot: str, kind: str) -> type[Trait] | None:
        """Return the parameter model of a trait kind, or None.

        Args:
            slot: The slot (``final_norm`` shares ``norm``'s kinds).
            kind: The kind.

        Returns:
            The model or None.
        """
        entry = self.traits.get((SLOT_KINDS_FROM.get(slot, slot), kind))
        return entry.model if entry else None

    def trait_kinds(self, slot: str) -> list[str]:
        """List the kinds registered for a slot.

        Args:
            slot: The slot.

        Returns:
            Sorted kind names.
        """
        slot = SLOT_KINDS_FROM.get(slot, slot)
        return sorted(k for s, k in self.traits if s == slot)

    def component(self, slot: str, kind: str) -> Callable[..., Any]:
        """Return the component factory of a trait kind.

        Args:
            slot: The slot.
            kind: The kind.

        Returns:
            The factory.
        """
        return self.traits[(SLOT_KINDS_FROM.get(slot, slot), kind)].component

    def spec_names(self) -> list[str]:
        """Return all registered architecture names, sorted.

        Returns:
            Names.
        """
        return sorted(self.specs)

    def _merged_doc(self, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        entry = self.specs[name]
        parent = entry.doc.get("extends")
        if parent is None:
            return dict(entry.doc)
        where = entry.doc.get("source_file") or name
        if parent in seen or parent == name:
            raise SpecError(
                f"{where}: field 'extends': cycle through {' -> '.join(seen + (name,))}"
            )
        if parent not in self.specs:
            raise SpecError(
                f"{where}: field 'extends': no architecture named '{parent}'"
                + _suggest(parent, self.specs)
            )
        return merge_extends(self._merged_doc(parent, seen + (name,)), entry.doc)

    def get_spec(self, name: str) -> ArchitectureSpec:
        """Return the validated spec of an architecture (``extends`` applied).

        Args:
            name: The architecture name.

        Returns:
            The spec.

        Raises:
            UnknownArchitectureError: If no spec has that name.
            SpecError: If the spec is malformed.
        """
        if name not in self._validated:
            if name not in self.specs:
                raise UnknownArchitectureError(
                    f"no architecture named '{name}'"
                    + _suggest(name, self.specs)
                    + f". Registered: {', '.join(self.spec_names()) or 'none'}."
                )
            doc = self._merged_doc(name)
            doc["source"] = self.specs[name].describe_source()
            self._validated[name] = validate_spec(doc, self.trait_model, self.trait_kinds)
        return self._validated[name]

    def candidates_for(self, hf_config: Mapping[str, Any]) -> list[ArchitectureSpec]:
        """The specs that cover an HF config, best first.

        A spec covers a config when its ``hf.model_types`` holds the config's ``model_type`` or its
        ``hf.architectures`` one of the config's classes, and every ``hf.match`` field equals the
        config's. Higher ``hf.priority`` comes first; at equal priority a built-in comes before a
        plugin's spec, so a plugin never wins a tie against a built-in. A spec that fails to
        validate is skipped: one broken spec does not stop other models from loading.

        Args:
            hf_config: The HF config as a dict.

        Returns:
            The covering specs, best first (empty if none).

        Raises:
            SpecError: If no valid spec covers the config but an invalid one would have.
        """
        model_type = hf_config.get("model_type")
        classes = set(hf_config.get("architectures") or [])
        found: list[tuple[int, bool, ArchitectureSpec]] = []
        broken: list[SpecError] = []
        for name in self.spec_names():
            try:
                spec = self.get_spec(name)
            except SpecError as exc:
                hf = self.specs[name].doc.get("hf")
                raw_types = hf.get("model_types", []) if isinstance(hf, Mapping) else []
                if isinstance(raw_types, list) and model_type in raw_types:
                    broken.append(exc)
                continue
            if model_type not in spec.hf.model_types and not classes & set(spec.hf.architectures):
                continue
            if all(hf_config.get(k) == v for k, v in spec.hf.match.items()):
                found.append((spec.hf.priority, self.specs[name].source.builtin, spec))
        if not found and broken:
            raise broken[0]
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [spec for _, _, spec in found]

    def supported_model_types(self) -> list[str]:
        """The HF model types some valid spec covers, sorted (invalid specs are skipped).

        Returns:
            Model types.
        """
        types: set[str] = set()
        for name in self.spec_names():
            try:
                types.update(self.get_spec(name).hf.model_types)
            except SpecError:
                continue
        return sorted(types)

    def is_builtin(self, name: str) -> bool:
        """Tell whether an architecture was registered by a built-in plugin.

        Args:
            name: The architecture name.

        Returns:
            True for a built-in spec.
        """
        entry = self.specs.get(name)
        return entry is not None and entry.source.builtin


def _suggest(name: str, options: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""

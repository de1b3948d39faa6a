"""The registry: architectures, trait kinds, weight ops and model aliases, each with its source.

The registry is filled only through the plugin manager's hooks (the built-ins are a plugin like any
other), so every entry records which plugin and distribution registered it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import PluginError, SpecError, UnknownArchitectureError
from tlcore.spec.loader import merge_extends, read_spec_file, validate_spec
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait


@dataclass(frozen=True)
class Source:
    """Where a registry entry came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

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


@dataclass
class Registry:
    """All registered items. Use :func:`tlcore.registry.get_registry` to get the populated one."""

    specs: dict[str, _SpecEntry] = field(default_factory=dict)
    traits: dict[tuple[str, str], TraitKind] = field(default_factory=dict)
    weight_ops: dict[str, WeightOp] = field(default_factory=dict)
    aliases: dict[str, tuple[str, Source]] = field(default_factory=dict)
    _validated: dict[str, ArchitectureSpec] = field(default_factory=dict)

    # -- registration ---------------------------------------------------------------------------
    def add_spec(
        self,
        spec: Mapping[str, Any] | ArchitectureSpec | str | Path,
        source: Source,
        override: bool = False,
    ) -> list[str]:
        """Register a spec given as a document, an object, a YAML file or a folder of YAML files.

        Args:
            spec: What to register.
            source: The registering plugin.
            override: Replace an existing spec of the same name instead of failing.

        Returns:
            The names registered.

        Raises:
            PluginError: If a name is taken and ``override`` is false.
            SpecError: If a file cannot be read.
        """
        if isinstance(spec, ArchitectureSpec):
            docs = [spec.model_dump(by_alias=True, exclude={"source"})]
        elif isinstance(spec, (str, Path)):
            path = Path(spec)
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            if path.is_dir() and not files:
                raise SpecError(f"{path}: no spec files (*.yaml) in this folder")
            docs = [read_spec_file(f) for f in files]
        else:
            docs = [dict(spec)]
        names = []
        for doc in docs:
            name = doc["name"]
            if name in self.specs and not override:
                raise PluginError(
                    f"architecture '{name}' from {source} conflicts with the one from "
                    f"{self.specs[name].source}; pass override=True to replace it"
                )
            self.specs[name] = _SpecEntry(doc, source)
            names.append(name)
        self._validated.clear()
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
        if alias in self.aliases and not override and self.aliases[alias][0] != target:
            raise PluginError(
                f"alias '{alias}' from {source} conflicts with the one from "
                f"{self.aliases[alias][1]}"
            )
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
            doc["source"] = str(self.specs[name].source)
            self._validated[name] = validate_spec(doc, self.trait_model, self.trait_kinds)
        return self._validated[name]


def _suggest(name: str, options: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""

"""The object each registration hook receives: registers items and records their source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tlcore.registry.registry import Registry, Source
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import Trait


class Registrar:
    """Registers items into the registry on behalf of one plugin.

    Args:
        registry: The registry to fill.
        source: The plugin doing the registering.
    """

    def __init__(self, registry: Registry, source: Source) -> None:
        self._registry = registry
        self.source = source
        self.registered: dict[str, list[str]] = {
            "specs": [], "traits": [], "weight_ops": [], "aliases": []
        }

    def spec(self, spec: ArchitectureSpec | Mapping[str, Any] | str | Path,
             override: bool = False) -> None:
        """Register a spec object, a spec mapping, a YAML file or a folder of YAML files.

        Args:
            spec: The spec(s).
            override: Replace an existing architecture of the same name.
        """
        names = self._registry.add_spec(spec, self.source, override=override)
        self.registered["specs"].extend(names)

    def trait(self, slot: str, model: type[Trait], component: Callable[..., Any],
              override: bool = False) -> None:
        """Register a trait kind.

        Args:
            slot: The slot it fills (``attention``, ``mlp``, ``norm``, ...).
            model: The parameter model (a :class:`tlcore.spec.Trait` subclass).
            component: The component factory for the slot.
            override: Replace an existing kind.
        """
        self._registry.add_trait(slot, model, component, self.source, override=override)
        self.registered["traits"].append(f"{slot}/{model.model_fields['kind'].default}")

    def weight_op(self, name: str, fn: Callable[..., Any], override: bool = False) -> None:
        """Register a weight transform.

        Args:
            name: Its name in specs.
            fn: ``fn(tensors, cfg, **params) -> tensors``.
            override: Replace an existing op.
        """
        self._registry.add_weight_op(name, fn, self.source, override=override)
        self.registered["weight_ops"].append(name)

    def alias(self, alias: str, target: str, override: bool = False) -> None:
        """Register a model alias.

        Args:
            alias: The short name.
            target: An architecture-qualified checkpoint (local dir or hub id).
            override: Replace an existing alias.
        """
        self._registry.add_alias(alias, target, self.source, override=override)
        self.registered["aliases"].append(alias)

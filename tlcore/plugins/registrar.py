"""The object each registration hook receives: registers items and records their source."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from tlcore.errors import PluginError, SpecError
from tlcore.registry.registry import Registry, Source
from tlcore.spec.bounds import read_yaml_file
from tlcore.spec.loader import check_spec_document
from tlcore.spec.schema import ArchitectureSpec, TextTower
from tlcore.spec.traits import Trait

SpecInput = ArchitectureSpec | Mapping[str, Any] | str | Path | Traversable
"""What :meth:`Registrar.spec` accepts."""


class Registrar:
    """Registers items into the registry on behalf of one plugin.

    Every item is stamped with :attr:`source` (plugin name, distribution, version), so a conflict
    names both plugins and ``tlcore plugins`` shows who registered what. A name that is already
    taken is an error (:class:`~tlcore.errors.PluginError`) unless ``override=True``.

    Args:
        registry: The registry to fill.
        source: The plugin doing the registering.
    """

    def __init__(self, registry: Registry, source: Source) -> None:
        self._registry = registry
        self.source = source
        self.registered: dict[str, list[str]] = {
            "specs": [],
            "traits": [],
            "weight_ops": [],
            "aliases": [],
            "text_towers": [],
        }

    def spec(self, spec: SpecInput, override: bool = False) -> list[str]:
        """Register a spec object, a spec mapping, a YAML file or a folder of YAML files.

        Args:
            spec: The spec(s). Folders and files may be paths or ``importlib.resources``
                Traversables (a package's data folder, even inside a zip).
            override: Replace an existing architecture of the same name.

        Returns:
            The architecture names registered.
        """
        if isinstance(spec, (ArchitectureSpec, Mapping, str, Path)):
            names = self._registry.add_spec(spec, self.source, override=override)
        elif isinstance(spec, Traversable):
            names = []
            for doc in _traversable_docs(spec):
                names += self._registry.add_spec(doc, self.source, override=override)
        else:
            raise SpecError(f"cannot register {spec!r} as a spec: not a path, mapping or spec")
        self.registered["specs"].extend(names)
        return names

    def package_specs(
        self, package: str, folder: str = "specs", override: bool = False
    ) -> list[str]:
        """Register the YAML specs in a folder shipped inside a package (by convention ``specs/``).

        Args:
            package: A package or module name; a plugin module passes its ``__name__`` (a plain
                module stands for the package that contains it).
            folder: The data folder inside the package.
            override: Replace existing architectures of the same names.

        Returns:
            The architecture names registered.

        Raises:
            SpecError: If the package has no such folder.

        Example:
            In a plugin module ``tlcore_myarch/plugin.py``::

                @hookimpl
                def register_specs(register):
                    register.package_specs(__name__)  # tlcore_myarch/specs/*.yaml
        """
        try:
            root = importlib.resources.files(package)
        except TypeError:  # a plain module (Python < 3.12): use the package that holds it
            root = importlib.resources.files(package.rpartition(".")[0])
        if not (root / folder).is_dir():
            raise SpecError(f"package '{package}' has no '{folder}/' folder of spec files ({root})")
        return self.spec(root / folder, override=override)

    def trait(
        self,
        slot: str,
        model: type[Trait],
        component: Callable[..., Any],
        override: bool = False,
    ) -> None:
        """Register a trait kind.

        Args:
            slot: The slot it fills (``attention``, ``mlp``, ``norm``, ...).
            model: The parameter model (a :class:`tlcore.spec.Trait` subclass whose ``kind``
                field has a default).
            component: The component factory for the slot.
            override: Replace an existing kind.
        """
        self._registry.add_trait(slot, model, component, self.source, override=override)
        self.registered["traits"].append(f"{slot}/{model.model_fields['kind'].default}")

    def weight_op(self, name: str, fn: Callable[..., Any], override: bool = False) -> None:
        """Register a weight transform.

        Args:
            name: Its name in specs' ``ops:`` lists.
            fn: ``fn(tensors, cfg, **params) -> tensors``.
            override: Replace an existing op.

        Raises:
            PluginError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise PluginError(f"weight op '{name}' from {self.source} is not callable")
        self._registry.add_weight_op(name, fn, self.source, override=override)
        self.registered["weight_ops"].append(name)

    def alias(self, alias: str, target: str, override: bool = False) -> None:
        """Register a model alias.

        Args:
            alias: The short name.
            target: A hub id or a local checkpoint folder.
            override: Replace an existing alias.
        """
        self._registry.add_alias(alias, target, self.source, override=override)
        self.registered["aliases"].append(alias)

    def text_tower(self, tower: TextTower | Mapping[str, Any], override: bool = False) -> None:
        """Register how multimodal wrapper checkpoints hold their language model.

        Args:
            tower: A :class:`~tlcore.spec.schema.TextTower` (or its fields), naming the wrapper
                model types it covers.
            override: Replace an existing tower of one of those model types.

        Raises:
            PluginError: If a model type already has a tower and ``override`` is false.
        """
        tower = tower if isinstance(tower, TextTower) else TextTower.model_validate(dict(tower))
        towers = self._registry.text_towers
        for model_type in tower.model_types:
            old = towers.get(model_type)
            if old is not None and not override:
                raise PluginError(
                    f"text tower of model_type '{model_type}' from {self.source} conflicts with "
                    f"the one from {old[1]}; pass override=True to replace it"
                )
        for model_type in tower.model_types:
            towers[model_type] = (tower, self.source)
        self.registered["text_towers"].extend(tower.model_types)


def _traversable_docs(resource: Traversable) -> list[dict[str, Any]]:
    """Read spec documents from a Traversable that is not a plain path (a package inside a zip)."""
    if resource.is_dir():
        files = sorted(
            (f for f in resource.iterdir() if f.name.endswith((".yaml", ".yml"))),
            key=lambda f: f.name,
        )
        if not files:
            raise SpecError(f"{resource}: no spec files (*.yaml) in this folder")
    else:
        files = [resource]
    return [check_spec_document(read_yaml_file(file, str(file)), str(file)) for file in files]

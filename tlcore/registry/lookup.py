"""Read-only queries on the registry: trait kinds, validated specs, the specs covering a config."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from tlcore.errors import SpecError, UnknownArchitectureError
from tlcore.registry.entries import SpecEntry, TraitKind
from tlcore.spec.loader import merge_extends, validate_spec
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait


class RegistryLookup:
    """The queries of :class:`~tlcore.registry.registry.Registry` (mixed into it)."""

    specs: dict[str, SpecEntry]
    traits: dict[tuple[str, str], TraitKind]
    _validated: dict[str, ArchitectureSpec]

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

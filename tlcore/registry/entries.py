"""What the registry holds: each entry's source, trait kinds, weight ops and spec documents.

Also the user's permission to replace built-in items (:data:`REPLACE_ENV`), which
:class:`~tlcore.registry.registry.Registry` and the plugin manager both consult.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tlcore.spec.traits import Trait

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
class SpecEntry:
    """A registered spec document, its source, and what it replaced or outranks."""

    doc: dict[str, Any]
    source: Source
    replaces: SpecEntry | None = None
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

"""What the plugin manager knows of each plugin (:class:`PluginRecord`) and how it warns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tlcore.registry.registry import Source

State = Literal["ok", "failed", "blocked", "skipped"]


class PluginWarning(UserWarning):
    """A plugin (or one of its specs) failed to load; tlcore carries on without it."""


@dataclass
class PluginRecord:
    """What one plugin is and what it registered (shown by ``tlcore plugins``).

    ``state`` is ``ok`` (loaded; ``errors`` may still list specs of it that were dropped),
    ``failed`` (nothing of it is registered; ``errors`` says why), ``blocked``
    (``TLCORE_BLOCK_PLUGINS``) or ``skipped`` (not selected by ``TLCORE_LOAD_PLUGINS`` or autoload
    disabled).
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    state: State = "ok"
    registered: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def source(self) -> Source:
        """The :class:`Source` stamped on this plugin's registry entries."""
        return Source(self.name, self.distribution, self.version, builtin=self.builtin)

    @property
    def error(self) -> str | None:
        """All failure reasons joined, or None."""
        return "; ".join(self.errors) if self.errors else None

    def describe(self) -> str:
        """Name the plugin and its distribution, as warnings and errors do.

        Returns:
            ``plugin 'name' (distribution dist 1.0)`` or ``plugin 'name'``.
        """
        if self.distribution:
            where = f"{self.distribution} {self.version}" if self.version else self.distribution
            return f"plugin '{self.name}' (distribution {where})"
        return f"plugin '{self.name}'"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able view.

        Returns:
            The record as a dict.
        """
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "builtin": self.builtin,
            "status": self.state,
            "hooks": list(self.hooks),
            "registered": {k: list(v) for k, v in self.registered.items() if v},
            "errors": list(self.errors),
        }


USER_PLUGIN = "tlcore.register_spec"
"""The pseudo-plugin name of specs registered with :func:`tlcore.register_spec`."""

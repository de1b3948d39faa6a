"""The state a plugin manager holds and the primitives its parts share.

The pluggy manager, the registry it fills and a record per plugin; recording a plugin's failure
(a warning, or an error in strict mode) and snapshotting the registry to roll a failure back.
"""

from __future__ import annotations

import warnings
from typing import Any

import pluggy

from tlcore.errors import PluginError
from tlcore.plugins import hookspecs
from tlcore.plugins.records import PluginRecord, PluginWarning
from tlcore.plugins.switches import strict
from tlcore.registry.registry import Registry


class ManagerState:
    """The pluggy manager plus the registry it fills and a record per plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}
        self._user_specs: list[tuple[Any, bool, bool]] = []
        self._raising = 0  # > 0: failures raise PluginError as in strict mode

    def _record_of(self, plugin: object) -> PluginRecord:
        name = self.pm.get_name(plugin) or "?"
        return self.records.get(name) or PluginRecord(name)

    def failures(self) -> list[PluginRecord]:
        """Return the records of plugins that failed or had specs dropped.

        Returns:
            Records with errors.
        """
        return [r for r in self.records.values() if r.errors]

    def _snapshot(self) -> Registry:
        reg = self.registry
        snapshot = Registry(
            dict(reg.specs), dict(reg.traits), dict(reg.weight_ops), dict(reg.aliases)
        )
        snapshot.replacements = dict(reg.replacements)
        snapshot.text_towers = dict(reg.text_towers)
        return snapshot

    def _restore(self, snapshot: Registry) -> None:
        self.registry.specs, self.registry.traits = dict(snapshot.specs), dict(snapshot.traits)
        self.registry.weight_ops = dict(snapshot.weight_ops)
        self.registry.aliases = dict(snapshot.aliases)
        self.registry.replacements = dict(snapshot.replacements)
        self.registry.text_towers = dict(snapshot.text_towers)
        self.registry._validated.clear()

    def _fail(self, record: PluginRecord, reason: str, keep: bool = False) -> None:
        """Record a failure and warn, or raise in strict mode.

        Args:
            record: The plugin's record.
            reason: What went wrong.
            keep: The plugin stays loaded (one of its specs was dropped).

        Raises:
            PluginError: In strict mode.
        """
        message = f"tlcore {record.describe()}: {reason}"
        if strict() or self._raising:
            raise PluginError(message)
        record.errors.append(reason)
        if not keep:
            record.state = "failed"
            record.registered = {}
            self.records[record.name] = record
        warnings.warn(message, PluginWarning, stacklevel=2)

"""Plugin discovery and loading: built-ins first, then ``tlcore`` entry points, each isolated.

Loading is lazy (first registry use, never at ``import tlcore``) and idempotent. Each entry point is
imported and each of its hooks is called in its own try/except: a broken plugin yields one warning
naming it and its distribution, its partial registrations are rolled back, and everything else keeps
working. Environment switches:

- ``TLCORE_STRICT_PLUGINS=1``: raise :class:`tlcore.errors.PluginError` instead of warning;
- ``TLCORE_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins still load);
- ``TLCORE_LOAD_PLUGINS=a,b``: load only these entry points (by entry-point or distribution name);
- ``TLCORE_BLOCK_PLUGINS=a,b``: never load these.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata as md
import os
import threading
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from tlcore.errors import PluginError, SpecError
from tlcore.plugins import hookspecs
from tlcore.plugins.registrar import Registrar
from tlcore.registry.registry import Registry, Source

ENTRY_POINT_GROUP = "tlcore"
BUILTIN_PLUGINS: tuple[str, ...] = ("tlcore.builtin.plugin",)
"""Modules registered before any entry point, through the same hooks."""

# Registration order matters: specs may use traits and ops of any plugin.
_REGISTRATION_HOOKS = ("register_traits", "register_weight_ops", "register_specs",
                       "register_aliases")


class PluginWarning(UserWarning):
    """A plugin failed to load or register; tlcore carries on without it."""


@dataclass
class PluginRecord:
    """What one plugin is and what it registered (shown by ``tlcore plugins``)."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    registered: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def source(self) -> Source:
        """The :class:`Source` stamped on this plugin's registry entries."""
        return Source(self.name, self.distribution, self.version)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able view.

        Returns:
            The record as a dict.
        """
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version,
            "builtin": self.builtin, "hooks": self.hooks, "registered": self.registered,
            "status": "ok" if self.error is None else f"failed: {self.error}",
        }


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def _strict() -> bool:
    return os.environ.get("TLCORE_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


class TlcorePluginManager:
    """The pluggy manager plus the registry it fills and a record per plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("tlcore")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}

    # -- loading --------------------------------------------------------------------------------
    def load(self, entry_points: bool = True) -> None:
        """Register the built-in plugins, then (optionally) entry points, and run their hooks.

        Args:
            entry_points: Discover ``tlcore`` entry points (subject to the environment switches).
        """
        for module_name in BUILTIN_PLUGINS:
            self.add_plugin(importlib.import_module(module_name), module_name, builtin=True)
        if entry_points and os.environ.get("TLCORE_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"):
            self._load_entry_points()
        self._validate_specs()

    def _load_entry_points(self) -> None:
        only, blocked = _env_list("TLCORE_LOAD_PLUGINS"), _env_list("TLCORE_BLOCK_PLUGINS")
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else None
            names = {ep.name, dist} - {None}
            if (only and not names & only) or names & blocked:
                if names & blocked:
                    self.pm.set_blocked(ep.name)
                continue
            if ep.name in self.records:
                continue
            record = PluginRecord(ep.name, dist, ep.dist.version if ep.dist else None)
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure must be isolated
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, ep.name, record=record)
        missing = only - {r.name for r in self.records.values()} - {
            r.distribution for r in self.records.values()}
        for name in sorted(missing):
            self._fail(PluginRecord(name), "requested by TLCORE_LOAD_PLUGINS but not installed")

    def add_plugin(self, plugin: ModuleType | object, name: str, builtin: bool = False,
                   record: PluginRecord | None = None) -> PluginRecord:
        """Register one plugin object with pluggy and run its registration hooks, isolated.

        On failure the plugin's registrations are rolled back and it is unregistered.

        Args:
            plugin: A module or object with ``@hookimpl`` functions.
            name: Its plugin name.
            builtin: Whether it ships with tlcore.
            record: A pre-filled record (entry-point metadata).

        Returns:
            The plugin's record (``error`` set on failure).
        """
        record = record or PluginRecord(name, builtin=builtin)
        record.builtin = builtin
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(record, f"invalid plugin: {exc}")
            return record
        record.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        snapshot = self._snapshot()
        registrar = Registrar(self.registry, record.source)
        for hook_name in _REGISTRATION_HOOKS:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    impl.function(register=registrar)
                except Exception as exc:  # noqa: BLE001
                    self._restore(snapshot)
                    self.pm.unregister(plugin)
                    self._fail(record, f"hook {hook_name} raised {type(exc).__name__}: {exc}")
                    return record
        record.registered = {k: v for k, v in registrar.registered.items() if v}
        self.records[name] = record
        return record

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and rebuild the registry from the remaining ones.

        Args:
            name: The plugin name.
        """
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.records.pop(name, None)
        remaining = [(n, self.pm.get_plugin(n), r) for n, r in self.records.items()]
        self.registry = Registry()
        self.records = {}
        for plugin_name, obj, record in remaining:
            if obj is not None:
                self.pm.unregister(obj)
                self.add_plugin(obj, plugin_name, builtin=record.builtin, record=PluginRecord(
                    record.name, record.distribution, record.version))
        self._validate_specs()

    def _validate_specs(self) -> None:
        for name in list(self.registry.specs):
            try:
                self.registry.get_spec(name)
            except SpecError as exc:
                source = self.registry.specs[name].source
                del self.registry.specs[name]
                self.registry._validated.clear()
                record = self.records.get(source.plugin)
                if record is not None:
                    record.registered.get("specs", []).remove(name) if name in \
                        record.registered.get("specs", []) else None
                self._fail(record or PluginRecord(source.plugin), f"invalid spec '{name}': {exc}",
                           keep=record is not None)

    def _snapshot(self) -> Registry:
        reg = self.registry
        return Registry(dict(reg.specs), dict(reg.traits), dict(reg.weight_ops), dict(reg.aliases))

    def _restore(self, snapshot: Registry) -> None:
        self.registry.specs, self.registry.traits = snapshot.specs, snapshot.traits
        self.registry.weight_ops, self.registry.aliases = snapshot.weight_ops, snapshot.aliases
        self.registry._validated.clear()

    def _fail(self, record: PluginRecord, reason: str, keep: bool = False) -> None:
        dist = f" (distribution {record.distribution} {record.version or ''})".rstrip() \
            if record.distribution else ""
        message = f"tlcore plugin '{record.name}'{dist}: {reason}"
        if _strict():
            raise PluginError(message)
        if not keep:
            record.error = reason
            self.records[record.name] = record
        else:
            record.error = (record.error + "; " if record.error else "") + reason
        warnings.warn(message, PluginWarning, stacklevel=3)

    # -- queries ----------------------------------------------------------------------------------
    def failures(self) -> list[PluginRecord]:
        """Return the records of plugins that failed.

        Returns:
            Failed plugin records.
        """
        return [r for r in self.records.values() if r.error]

    def resolve_hf_config(self, hf_config: dict[str, Any]) -> str | None:
        """Ask plugins to pick an architecture for an HF config (first non-None answer).

        Args:
            hf_config: The HF config dict.

        Returns:
            An architecture name or None.
        """
        return self.pm.hook.resolve_hf_config(hf_config=copy.deepcopy(hf_config))


_MANAGER: TlcorePluginManager | None = None
_LOCK = threading.Lock()


def get_manager() -> TlcorePluginManager:
    """Return the process-wide plugin manager, loading plugins on first call.

    Returns:
        The loaded manager.
    """
    global _MANAGER
    if _MANAGER is None:
        with _LOCK:
            if _MANAGER is None:
                manager = TlcorePluginManager()
                manager.load()
                _MANAGER = manager
    return _MANAGER


def reset_manager() -> None:
    """Forget the loaded plugins so the next registry use discovers them again (tests, notebooks)."""
    global _MANAGER
    _MANAGER = None

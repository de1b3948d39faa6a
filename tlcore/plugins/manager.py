"""Plugin discovery and loading: built-ins first, then ``tlcore`` entry points, each isolated.

Loading is lazy (first registry use, never at ``import tlcore``) and idempotent. Each entry point
is imported and its registration hooks are called inside its own try/except: a broken plugin yields
one :class:`PluginWarning` naming the plugin and its distribution, everything it registered is
rolled back, and everything else keeps working. Specs are validated once every plugin has
registered (a spec may use another plugin's trait kinds); an invalid spec is dropped on its own,
with a warning naming its plugin. Environment switches:

- ``TLCORE_STRICT_PLUGINS=1``: raise :class:`tlcore.errors.PluginError` instead of warning;
- ``TLCORE_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins still load), unless
  ``TLCORE_LOAD_PLUGINS`` names some;
- ``TLCORE_LOAD_PLUGINS=a,b``: load only these entry points (entry-point or distribution names;
  set but empty: none);
- ``TLCORE_BLOCK_PLUGINS=a,b``: never load these (wins over ``TLCORE_LOAD_PLUGINS``).

This module loads, adds and removes plugins; the manager's other parts are mixins in their own
modules: its state and failure reporting (:mod:`~tlcore.plugins.manager_state`), spec conflicts
(:mod:`~tlcore.plugins.spec_conflicts`), the hooks asked while loading a model
(:mod:`~tlcore.plugins.hook_calls`) and CLI commands (:mod:`~tlcore.plugins.cli_commands`).
Records and switches are in :mod:`~tlcore.plugins.records` and :mod:`~tlcore.plugins.switches`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.metadata as md
import threading
from collections.abc import Iterator
from typing import Any

from tlcore.errors import PluginError, SpecError
from tlcore.plugins import hookspecs
from tlcore.plugins.cli_commands import CommandRegistration
from tlcore.plugins.hook_calls import HookCalls
from tlcore.plugins.records import USER_PLUGIN, PluginRecord, PluginWarning, State
from tlcore.plugins.registrar import Registrar
from tlcore.plugins.spec_conflicts import SpecConflicts
from tlcore.plugins.switches import (
    BLOCK_ENV,
    DISABLE_ENV,
    LOAD_ENV,
    STRICT_ENV,
    env_flag,
    env_names,
    normalize_name,
    strict,
)
from tlcore.registry.registry import Registry

__all__ = [
    "BLOCK_ENV",
    "BUILTIN_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "LOAD_ENV",
    "REGISTRATION_HOOKS",
    "STRICT_ENV",
    "USER_PLUGIN",
    "PluginRecord",
    "PluginWarning",
    "State",
    "TlcorePluginManager",
    "get_manager",
    "reset_manager",
    "strict",
]

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BUILTIN_PLUGINS: tuple[str, ...] = ("tlcore.builtin.plugin",)
"""Modules registered before any entry point, through the same hooks."""

REGISTRATION_HOOKS: tuple[str, ...] = (
    "register_traits",
    "register_weight_ops",
    "register_specs",
    "register_aliases",
)
"""Registration hooks, in the order each plugin's are run (specs may use traits and ops)."""


class TlcorePluginManager(SpecConflicts, HookCalls, CommandRegistration):
    """The pluggy manager plus the registry it fills and a record per plugin."""

    # -- loading --------------------------------------------------------------------------------
    def load(self, entry_points: bool = True) -> None:
        """Register the built-in plugins, then (optionally) entry points, and validate the specs.

        Args:
            entry_points: Discover ``tlcore`` entry points (subject to the environment switches).
        """
        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            self.add_plugin(module, module_name, builtin=True, validate=False)
        if entry_points:
            self._load_entry_points()
        self.validate_specs()

    def _load_entry_points(self) -> None:
        only, blocked = env_names(LOAD_ENV), env_names(BLOCK_ENV) or set()
        autoload = not env_flag(DISABLE_ENV)
        found: set[str] = set()
        eps = sorted(
            md.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (normalize_name(ep.dist.name) if ep.dist else "", ep.name),
        )
        for ep in eps:
            dist = ep.dist.name if ep.dist else None
            record = PluginRecord(ep.name, dist, ep.dist.version if ep.dist else None, ep.value)
            keys = {normalize_name(ep.name)} | ({normalize_name(dist)} if dist else set())
            found |= keys
            if keys & blocked:
                self.pm.set_blocked(ep.name)
                record.state = "blocked"
                self.records.setdefault(ep.name, record)
                continue
            if (only is not None and not keys & only) or (only is None and not autoload):
                record.state = "skipped"
                self.records.setdefault(ep.name, record)
                continue
            taken = self.records.get(ep.name)
            if taken is not None and taken.state != "skipped":
                # Two distributions declare the same entry-point name: the second cannot be
                # registered under it, and must not overwrite the first one's record.
                record.name = f"{ep.name} [{dist}]"
                self._fail(
                    record, f"entry point name '{ep.name}' is already used by {taken.describe()}"
                )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure must be isolated
                self._fail(record, f"import of '{ep.value}' failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, ep.name, record=record, validate=False)
        for name in sorted((only or set()) - found):
            self._fail(
                PluginRecord(name),
                f"requested by {LOAD_ENV} but no installed distribution provides it "
                f"(entry-point group '{ENTRY_POINT_GROUP}')",
            )

    def add_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        builtin: bool = False,
        record: PluginRecord | None = None,
        validate: bool = True,
    ) -> PluginRecord:
        """Register one plugin object with pluggy and run its registration hooks, isolated.

        On failure every registration of the plugin is rolled back, it is unregistered, and a
        :class:`PluginWarning` is issued (:class:`~tlcore.errors.PluginError` in strict mode).

        Args:
            plugin: A module or object with ``@hookimpl`` functions.
            name: Its plugin name (default: its ``__name__``).
            builtin: Whether it ships with tlcore.
            record: A pre-filled record (entry-point metadata).
            validate: Validate the registered specs now (the loader validates once at the end).

        Returns:
            The plugin's record (``state == "failed"`` on failure).

        Raises:
            PluginError: If a loaded plugin already has that name.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        existing = self.records.get(name)
        if self.pm.has_plugin(name) or (existing is not None and existing.state == "ok"):
            raise PluginError(f"a tlcore plugin named '{name}' is already registered")
        if record is None:
            record = PluginRecord(name, module=getattr(plugin, "__name__", None))
        if builtin:
            from tlcore import __version__

            record.builtin, record.distribution, record.version = True, "tlcore", __version__
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy raises ValueError and its own errors
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(record, f"invalid plugin: {type(exc).__name__}: {exc}")
            return record
        record.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        snapshot = self._snapshot()
        failure = self._run_registration(plugin, record)
        if failure is not None:
            self._restore(snapshot)
            self.pm.unregister(plugin)
            self._fail(record, failure)
            return record
        record.state = "ok"
        self.records[name] = record
        if validate:
            self.validate_specs()
        return record

    def _run_registration(self, plugin: object, record: PluginRecord) -> str | None:
        """Call the plugin's registration hooks; return a failure reason or None."""
        registrar = Registrar(self.registry, record.source)
        replaced = dict(self.registry.replacements)
        with self.registry.deferred_validation():
            for hook_name in REGISTRATION_HOOKS:
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    try:
                        # A hookimpl may declare fewer arguments than the spec (pluggy allows it).
                        impl.function(**{arg: registrar for arg in impl.argnames})
                    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                        return f"hook {hook_name} raised {type(exc).__name__}: {exc}"
        commands = record.registered.get("commands", [])
        record.registered = {k: v for k, v in registrar.registered.items() if v}
        if commands:
            record.registered["commands"] = commands
        new = [item for item in self.registry.replacements if item not in replaced]
        if new:
            record.registered["replaces_builtin"] = new
        return None

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and rebuild the registry from the remaining plugins.

        Args:
            name: The plugin name.

        Raises:
            KeyError: If no plugin has that name.
        """
        plugin = self.pm.get_plugin(name)
        if plugin is None and name not in self.records:
            raise KeyError(f"no tlcore plugin named '{name}' (plugins: {sorted(self.records)})")
        if plugin is not None:
            self.pm.unregister(plugin)
        self.records.pop(name, None)
        self.registry = Registry()
        for record in self.records.values():
            obj = self.pm.get_plugin(record.name)
            if obj is None or record.state != "ok":
                continue
            record.errors = []
            failure = self._run_registration(obj, record)
            if failure is not None:  # it registered fine before; only a conflict can do this
                self.pm.unregister(obj)
                self._fail(record, failure)
        user_specs, self._user_specs = self._user_specs, []
        self.records.pop(USER_PLUGIN, None)
        self.validate_specs()
        for spec, override, replace_builtin in user_specs:
            try:
                self.register_spec(spec, override=override, replace_builtin=replace_builtin)
            except (SpecError, PluginError) as exc:
                self._fail(PluginRecord(USER_PLUGIN), f"re-registering {spec!r}: {exc}", keep=True)

    @contextlib.contextmanager
    def scoped(self) -> Iterator[TlcorePluginManager]:
        """Undo, on exit, every plugin added or removed and every registration made in the block.

        Yields:
            This manager.

        Example:
            >>> manager = get_manager()
            >>> with manager.scoped():
            ...     _ = manager.add_plugin(object(), "nothing")
            >>> "nothing" in manager.records
            False
        """
        plugins = {self.pm.get_name(p): p for p in self.pm.get_plugins()}
        blocked = {name for name in self.records if self.pm.is_blocked(name)}
        registry = self._snapshot()
        records = copy.deepcopy(self.records)
        user_specs = list(self._user_specs)
        try:
            yield self
        finally:
            self._user_specs = user_specs
            for plugin in list(self.pm.get_plugins()):
                if self.pm.get_name(plugin) not in plugins:
                    self.pm.unregister(plugin)
            for name, plugin in plugins.items():
                if not self.pm.is_registered(plugin):
                    self.pm.register(plugin, name=name)
            for name in list(self.records):
                if self.pm.is_blocked(name) and name not in blocked:
                    self.pm.unblock(name)
            self._restore(registry)
            self.records = records

    def register_spec(
        self,
        spec: Any,
        *,
        override: bool = False,
        replace_builtin: bool = False,
    ) -> list[str]:
        """Register spec(s) at run time, validated first (see :func:`tlcore.register_spec`).

        Args:
            spec: A YAML file, a folder of YAML files, a mapping or an ArchitectureSpec.
            override: Replace an architecture of the same name registered by a plugin.
            replace_builtin: Allow replacing or outranking a built-in architecture.

        Returns:
            The architecture names registered.

        Raises:
            SpecError: If a spec is invalid (nothing is registered then).
            PluginError: If a name is taken, or a built-in would be replaced without
                ``replace_builtin=True``.
        """
        record = self.records.get(USER_PLUGIN)
        if record is None:
            record = PluginRecord(USER_PLUGIN, module="tlcore.register_spec")
        snapshot = self._snapshot()
        registrar = Registrar(self.registry, record.source)
        try:
            with self.registry.builtin_replacement(replace_builtin):
                with self.registry.deferred_validation():
                    names = registrar.spec(spec, override=override)
                for name in names:
                    self.registry.get_spec(name)
                self._raising += 1
                try:
                    self._drop_ambiguous_spec()
                    self._drop_builtin_takeover()
                finally:
                    self._raising -= 1
        except Exception:
            self._restore(snapshot)
            raise
        record.registered.setdefault("specs", []).extend(
            n for n in names if n not in record.registered.get("specs", [])
        )
        for item in [k for k in self.registry.replacements if k not in snapshot.replacements]:
            record.registered.setdefault("replaces_builtin", []).append(item)
        record.state = "ok"
        self.records[USER_PLUGIN] = record
        self._user_specs.append((spec, override, replace_builtin))
        return names


_MANAGER: TlcorePluginManager | None = None
_LOCK = threading.Lock()


def get_manager() -> TlcorePluginManager:
    """Return the process-wide plugin manager, loading plugins on first call.

    Returns:
        The loaded manager.

    Raises:
        PluginError: In strict mode (``TLCORE_STRICT_PLUGINS=1``), when a plugin fails.
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
    """Forget the loaded plugins: the next registry use discovers them again (tests, notebooks)."""
    global _MANAGER
    with _LOCK:
        _MANAGER = None

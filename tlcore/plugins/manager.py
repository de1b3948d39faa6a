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
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import importlib.metadata as md
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy

from tlcore.errors import PluginError, SpecError
from tlcore.plugins import hookspecs
from tlcore.plugins.registrar import Registrar
from tlcore.registry.registry import REPLACE_ENV, Registry, Source, replacement_allowed

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

STRICT_ENV = "TLCORE_STRICT_PLUGINS"
DISABLE_ENV = "TLCORE_DISABLE_PLUGIN_AUTOLOAD"
LOAD_ENV = "TLCORE_LOAD_PLUGINS"
BLOCK_ENV = "TLCORE_BLOCK_PLUGINS"

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


def _env_set(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {_normalize(part) for part in value.split(",") if part.strip()}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _normalize(name: str) -> str:
    """PEP 503 name normalisation, so ``tlcore_foo`` selects distribution ``tlcore-foo``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def strict() -> bool:
    """Tell whether plugin failures raise (``TLCORE_STRICT_PLUGINS``) instead of warning.

    Returns:
        True in strict mode.
    """
    return _truthy(STRICT_ENV)


class TlcorePluginManager:
    """The pluggy manager plus the registry it fills and a record per plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}
        self._user_specs: list[tuple[Any, bool, bool]] = []
        self._raising = 0  # > 0: failures raise PluginError as in strict mode

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
        only, blocked = _env_set(LOAD_ENV), _env_set(BLOCK_ENV) or set()
        autoload = not _truthy(DISABLE_ENV)
        found: set[str] = set()
        eps = sorted(
            md.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (_normalize(ep.dist.name) if ep.dist else "", ep.name),
        )
        for ep in eps:
            dist = ep.dist.name if ep.dist else None
            record = PluginRecord(ep.name, dist, ep.dist.version if ep.dist else None, ep.value)
            keys = {_normalize(ep.name)} | ({_normalize(dist)} if dist else set())
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

    def validate_specs(self) -> None:
        """Validate every registered spec; drop each invalid one with a warning naming its plugin.

        Runs until no spec fails, since dropping a spec breaks the specs that extend it. Also
        refuses a spec that covers the same HF model type or class as another plugin's spec with
        the same ``hf.match`` and ``hf.priority`` (which one loads would be arbitrary), and a
        plugin's spec that would be chosen instead of a built-in one (a higher ``hf.priority`` for
        the same HF model type or class) unless the user allowed replacing that built-in.
        """
        while True:
            failed = False
            for name in list(self.registry.specs):
                try:
                    self.registry.get_spec(name)
                except SpecError as exc:
                    self._drop_spec(name, f"invalid spec '{name}': {exc}")
                    failed = True
                    break
            if not failed:
                failed = self._drop_ambiguous_spec()
            if not failed:
                failed = self._drop_builtin_takeover()
            if not failed:
                return

    def _drop_builtin_takeover(self) -> bool:
        """Drop one plugin spec that outranks a built-in without the user's permission."""
        registry = self.registry
        builtins = [n for n, e in registry.specs.items() if e.source.builtin]
        for name, entry in registry.specs.items():
            if entry.source.builtin:
                continue
            spec = registry.get_spec(name)
            taken: list[tuple[str, str]] = []
            for builtin_name in builtins:
                if builtin_name == name:
                    continue  # a replacement by name was checked when it was registered
                other = registry.get_spec(builtin_name)
                shared = sorted(set(spec.hf.model_types) & set(other.hf.model_types))
                shared += sorted(set(spec.hf.architectures) & set(other.hf.architectures))
                if not shared or spec.hf.priority <= other.hf.priority:
                    continue
                theirs = other.hf.match
                if any(k in theirs and theirs[k] != v for k, v in spec.hf.match.items()):
                    continue  # the two never cover the same config
                taken.append((builtin_name, shared[0]))
            refused = [
                (b, what) for b, what in taken if not (entry.user_allowed or replacement_allowed(b))
            ]
            if refused:
                builtin_name, what = refused[0]
                self._drop_spec(
                    name,
                    f"architecture '{name}' (hf.priority {spec.hf.priority}) would be chosen "
                    f"instead of tlcore's built-in architecture '{builtin_name}' for HF "
                    f"'{what}' checkpoints, silently changing what they compute; built-ins keep "
                    f"their checkpoints unless you allow it: set {REPLACE_ENV}={builtin_name} "
                    f"(or use tlcore.register_spec(..., replace_builtin=True))",
                )
                return True
            names = [b for b, _ in taken]
            if names != entry.takes_over:
                entry.takes_over = names
                registry._validated.pop(name, None)
                record = self.records.get(entry.source.plugin)
                if record is not None and names:
                    items = record.registered.setdefault("replaces_builtin", [])
                    items += [
                        f"architecture '{b}' (outranked by '{name}')"
                        for b in names
                        if f"architecture '{b}' (outranked by '{name}')" not in items
                    ]
        return False

    def _drop_ambiguous_spec(self) -> bool:
        seen: dict[tuple[str, str, str, int], str] = {}
        for name, entry in self.registry.specs.items():
            hf = self.registry.get_spec(name).hf
            match = json.dumps(hf.match, sort_keys=True, default=str)
            keys = [("model type", t) for t in hf.model_types]
            keys += [("class", c) for c in hf.architectures]
            for what, value in keys:
                key = (what, value, match, hf.priority)
                other = seen.setdefault(key, name)
                if other == name or self.registry.specs[other].source.plugin == entry.source.plugin:
                    continue
                self._drop_spec(
                    name,
                    f"architecture '{name}' covers HF {what} '{value}' exactly as architecture "
                    f"'{other}' from {self.registry.specs[other].source} does (same hf.match, "
                    f"same hf.priority {hf.priority}), so which one loads would be arbitrary; "
                    f"give it its own hf.match, a higher hf.priority to take precedence, or "
                    f"register it under the same name with override=True to replace it",
                )
                return True
        return False

    def _drop_spec(self, name: str, reason: str) -> None:
        source = self.registry.specs[name].source
        record = self.records.get(source.plugin) or PluginRecord(
            source.plugin, source.distribution, source.version
        )
        # Strict mode raises before anything changes, so the registry stays as it was.
        self._fail(record, reason, keep=True)
        replaced = self.registry.specs[name].replaces
        if replaced is not None:  # what it overrode comes back (a built-in stays a built-in)
            note = f"a replacement from {source} was refused: {reason.split(':', 1)[0]}"
            self.registry.specs[name] = dataclasses.replace(replaced, notes=[*replaced.notes, note])
            self.registry.replacements.pop(f"architecture '{name}'", None)
        else:
            del self.registry.specs[name]
        self.registry._validated.clear()
        specs = record.registered.get("specs", [])
        if name in specs:
            specs.remove(name)

    def _snapshot(self) -> Registry:
        reg = self.registry
        snapshot = Registry(
            dict(reg.specs), dict(reg.traits), dict(reg.weight_ops), dict(reg.aliases)
        )
        snapshot.replacements = dict(reg.replacements)
        return snapshot

    def _restore(self, snapshot: Registry) -> None:
        self.registry.specs, self.registry.traits = dict(snapshot.specs), dict(snapshot.traits)
        self.registry.weight_ops = dict(snapshot.weight_ops)
        self.registry.aliases = dict(snapshot.aliases)
        self.registry.replacements = dict(snapshot.replacements)
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

    # -- CLI commands -----------------------------------------------------------------------------
    def add_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Run every plugin's ``register_commands`` hook, built-ins first, each isolated.

        Built-in commands are added first and keep their names. A plugin that adds a command
        whose name (or alias) is already taken, or whose hook raises, loses every command it
        added and gets a warning naming it; the CLI and every other plugin's commands keep
        working.

        Args:
            subparsers: The CLI's sub-parsers.
        """
        order = {name: n for n, name in enumerate(self.records)}
        impls = sorted(
            self.pm.hook.register_commands.get_hookimpls(),
            key=lambda impl: (
                not self._record_of(impl.plugin).builtin,
                order.get(self.pm.get_name(impl.plugin) or "", len(order)),
            ),
        )
        owners: dict[str, str] = {}
        for impl in impls:
            record = self._record_of(impl.plugin)
            before = dict(subparsers.choices)
            actions = list(subparsers._choices_actions)
            guarded = _GuardedSubparsers(subparsers, record, owners)
            try:
                impl.function(**{arg: guarded for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - one plugin's command must not break the CLI
                subparsers.choices.clear()
                subparsers.choices.update(before)
                subparsers._choices_actions[:] = actions
                for name in [n for n, owner in owners.items() if owner == record.name]:
                    del owners[name]
                self._fail(
                    record, f"hook register_commands raised {type(exc).__name__}: {exc}", keep=True
                )
                continue
            added = sorted(set(subparsers.choices) - set(before))
            if added:
                record.registered["commands"] = added

    def _record_of(self, plugin: object) -> PluginRecord:
        name = self.pm.get_name(plugin) or "?"
        return self.records.get(name) or PluginRecord(name)

    # -- queries ----------------------------------------------------------------------------------
    def failures(self) -> list[PluginRecord]:
        """Return the records of plugins that failed or had specs dropped.

        Returns:
            Records with errors.
        """
        return [r for r in self.records.values() if r.errors]

    def resolve_hf_config(self, hf_config: dict[str, Any]) -> str | None:
        """Ask plugins to pick an architecture for an HF config (first registered answer wins).

        A plugin whose hook raises, or answers a name that is not registered, is skipped with a
        warning (an error in strict mode): one buggy plugin must not break loading other models.
        An answer that differs from the built-in architecture that covers the config replaces
        that built-in, and is refused the same way unless the user allowed it
        (``TLCORE_REPLACE_BUILTINS``, or the answered spec was registered with the user's
        explicit permission, ``Registry.builtin_replacement(True)``).

        Args:
            hf_config: The HF config dict.

        Returns:
            An architecture name or None.
        """
        for impl in reversed(self.pm.hook.resolve_hf_config.get_hookimpls()):
            record = self._record_of(impl.plugin)
            try:
                answer = impl.function(**{arg: copy.deepcopy(hf_config) for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                self._fail(
                    record, f"hook resolve_hf_config raised {type(exc).__name__}: {exc}", keep=True
                )
                continue
            if answer is None:
                continue
            if not isinstance(answer, str) or answer not in self.registry.specs:
                self._fail(
                    record,
                    f"hook resolve_hf_config answered {answer!r}, which is not a registered "
                    f"architecture; ignored",
                    keep=True,
                )
                continue
            builtin = self._builtin_choice(hf_config)
            if (
                not record.builtin
                and builtin is not None
                and builtin != answer
                and not replacement_allowed(builtin)
                and not self.registry.specs[answer].user_allowed
            ):
                self._fail(
                    record,
                    f"hook resolve_hf_config chose '{answer}' for a checkpoint tlcore's built-in "
                    f"architecture '{builtin}' covers; ignored (built-ins keep their "
                    f"checkpoints: set {REPLACE_ENV}={builtin} to allow it)",
                    keep=True,
                )
                continue
            return str(answer)
        return None

    def locate_checkpoint(self, name: str) -> str | None:
        """Ask plugins for a local path of a model reference (first answer wins).

        A plugin whose hook raises or answers a path that does not exist is skipped with a
        warning (an error in strict mode), like :meth:`resolve_hf_config`.

        Args:
            name: The model reference.

        Returns:
            A local path, or None.
        """
        for impl in reversed(self.pm.hook.locate_checkpoint.get_hookimpls()):
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            record = self.records.get(plugin_name) or PluginRecord(plugin_name)
            try:
                answer = impl.function(name=name)
            except Exception as exc:  # noqa: BLE001
                self._fail(
                    record, f"hook locate_checkpoint raised {type(exc).__name__}: {exc}", keep=True
                )
                continue
            if answer is None:
                continue
            if not Path(str(answer)).exists():
                self._fail(
                    record,
                    f"hook locate_checkpoint answered '{answer}' for '{name}', which does not "
                    f"exist; ignored",
                    keep=True,
                )
                continue
            return str(answer)
        return None

    def _builtin_choice(self, hf_config: dict[str, Any]) -> str | None:
        try:
            candidates = self.registry.candidates_for(hf_config)
        except SpecError:
            return None
        builtins = [c.name for c in candidates if self.registry.is_builtin(c.name)]
        return builtins[0] if builtins else None

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


USER_PLUGIN = "tlcore.register_spec"
"""The pseudo-plugin name of specs registered with :func:`tlcore.register_spec`."""


class _GuardedSubparsers:
    """The sub-parsers a plugin's ``register_commands`` sees: taken names are refused."""

    def __init__(
        self, subparsers: argparse._SubParsersAction, record: PluginRecord, owners: dict[str, str]
    ) -> None:
        self._subparsers = subparsers
        self._record = record
        self._owners = owners

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add a command, unless its name or an alias is taken.

        Args:
            name: The command name.
            **kwargs: As ``argparse``'s ``add_parser`` (``help``, ``aliases``, ...).

        Returns:
            The new parser.

        Raises:
            PluginError: If the name or an alias belongs to another command.
        """
        for wanted in [name, *kwargs.get("aliases", ())]:
            if wanted in self._subparsers.choices:
                owner = self._owners.get(wanted, "another plugin")
                raise PluginError(
                    f"command '{wanted}' is already taken by {owner}; a plugin cannot replace a "
                    f"command: choose another name"
                )
        parser = self._subparsers.add_parser(name, **kwargs)
        for wanted in [name, *kwargs.get("aliases", ())]:
            self._owners[wanted] = self._record.describe()
        return parser

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._subparsers, attribute)


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

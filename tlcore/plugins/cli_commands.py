"""Plugins' CLI commands: each plugin's ``register_commands`` hook, isolated, names guarded."""

from __future__ import annotations

import argparse
from typing import Any

from tlcore.errors import PluginError
from tlcore.plugins.manager_state import ManagerState
from tlcore.plugins.records import PluginRecord


class CommandRegistration(ManagerState):
    """Adding plugins' commands to the ``tlcore`` CLI (mixed into the manager)."""

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

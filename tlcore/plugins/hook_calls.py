"""Asking plugins to choose: which architecture loads an HF config, where a checkpoint lives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tlcore.errors import SpecError
from tlcore.plugins.manager_state import ManagerState
from tlcore.plugins.records import PluginRecord
from tlcore.registry.registry import REPLACE_ENV, replacement_allowed


class HookCalls(ManagerState):
    """The hooks called while loading a model, each answer checked (mixed into the manager)."""

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

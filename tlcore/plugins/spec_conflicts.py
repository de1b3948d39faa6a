"""Refusing plugin specs that conflict: invalid, ambiguous, or taking a built-in's checkpoints."""

from __future__ import annotations

import dataclasses
import json

from tlcore.errors import SpecError
from tlcore.plugins.manager_state import ManagerState
from tlcore.plugins.records import PluginRecord
from tlcore.registry.registry import REPLACE_ENV, replacement_allowed


class SpecConflicts(ManagerState):
    """Validation of the registered specs, dropping each that fails (mixed into the manager)."""

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

"""What a parity run found: its cases, and per case the HF comparison and the snapshot check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tlcore.parity.result import ParityResult
from tlcore.parity.snapshots import SnapshotResult
from tlcore.spec.schema import ArchitectureSpec

SnapshotMode = Literal["check", "update"]


@dataclass
class Case:
    """One spec (registered or given as an object) and one of its test variants."""

    spec: ArchitectureSpec
    variant: str | None
    source: str

    @property
    def name(self) -> str:
        """``spec`` or ``spec/variant``."""
        return f"{self.spec.name}/{self.variant}" if self.variant else self.spec.name


@dataclass
class CaseReport:
    """Everything the tool found about one case."""

    case: Case
    parity: ParityResult
    snapshot: SnapshotResult | None = None
    table_row: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether every requested check passed."""
        parity_ok = self.parity.ok and self.parity.error is None
        return parity_ok and (self.snapshot is None or self.snapshot.ok)


@dataclass
class Report:
    """The outcome of a parity run."""

    cases: list[CaseReport]
    other_snapshots: list[SnapshotResult] = field(default_factory=list)
    """Manifest entries without a case: orphans (fail) and entries of absent plugins (skipped)."""
    seconds: float = 0.0
    hf: bool = True
    snapshots: SnapshotMode | None = None

    @property
    def ok(self) -> bool:
        """Whether everything passed."""
        return all(c.ok for c in self.cases) and all(s.ok for s in self.other_snapshots)

    @property
    def failures(self) -> list[str]:
        """One line per failure."""
        out: list[str] = [
            f"{c.case.name}: {c.parity.message}"
            for c in self.cases
            if not (c.parity.ok and c.parity.error is None)
        ]
        out += [
            f"{c.case.name}: snapshot {c.snapshot.status}: {c.snapshot.message}"
            for c in self.cases
            if c.snapshot is not None and not c.snapshot.ok
        ]
        out += [
            f"{s.name}: snapshot {s.status}: {s.message}" for s in self.other_snapshots if not s.ok
        ]
        return out

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns:
            ``ok``, ``seconds``, one entry per case (parity and snapshot), other snapshots.
        """
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "hf": self.hf,
            "snapshots": self.snapshots,
            "cases": [
                {
                    "name": c.case.name,
                    "spec": c.case.spec.name,
                    "variant": c.case.variant,
                    "ok": c.ok,
                    "parity": c.parity.as_dict() if self.hf else None,
                    "error": c.parity.error,
                    "snapshot": c.snapshot.as_dict() if c.snapshot else None,
                }
                for c in self.cases
            ],
            "other_snapshots": [s.as_dict() for s in self.other_snapshots],
            "failures": self.failures,
        }

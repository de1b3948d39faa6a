"""Fuzz suite settings: derandomised hypothesis runs, bounded in time and memory per test.

Every property here has the same shape: hostile input in, and out comes either a correct result or
one of tlcore's typed errors (:class:`tlcore.errors.TlcoreError`), within
``tlcore.testing.fuzz.SECONDS`` per example (:func:`tlcore.testing.fuzz.outcome`) and
:data:`PEAK_MB` of extra peak memory per test; never a raw internal exception.

CI runs a fixed, derandomised set of examples (about a minute in all). For a longer hunt:
``TLCORE_FUZZ_SCALE=20 HYPOTHESIS_PROFILE=explore pytest tests/fuzz``.
"""

from __future__ import annotations

import os
import resource

import pytest
from hypothesis import HealthCheck, settings

PEAK_MB = 768
"""Most extra peak memory one fuzz test may add (an alias bomb or a string repeat takes GBs)."""

_COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("explore", derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(autouse=True)
def bounded_memory():
    """Fail a fuzz test whose examples raised the process's peak memory by more than PEAK_MB."""
    before = _peak_mb()
    yield
    grown = _peak_mb() - before
    assert grown < PEAK_MB, f"peak memory grew by {grown:.0f} MB"

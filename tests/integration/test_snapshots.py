"""The CI parity run: every registered spec and test variant against HF and its stored snapshot.

One pass (:func:`tlcore.parity.verify`) builds each case's tiny seeded checkpoint once, compares
tlcore with HF (raw logits, every layer's residual stream, processed log-probs) and with the
snapshot in ``specs/snapshots`` (logits within ``1e-5 + 1e-6 * max|logits|``, spec content hash
unchanged, file intact). A failure here means: a spec broke (parity), tlcore drifted (snapshot
``fail``), a spec changed without ``python tools/parity.py --update`` (``stale``), or a new spec or
variant has no snapshot yet (``missing``).
"""

from __future__ import annotations

import pytest

from tlcore.parity import cases, read_manifest, verify
from tlcore.parity.encoders import is_encoder_spec
from tlcore.parity.report import Report
from tlcore.parity.snapshots import orphan_entries, snapshot_key

# Fixed at collection, before any test registers temporary plugins.
CASES = cases()
NAMES = [c.name for c in CASES]
UPDATE_HINT = "run `python tools/parity.py --update` after checking the change is intended"


@pytest.fixture(scope="module")
def report(parity_cases) -> Report:
    """The CI check, on the session's shared comparisons (each case compared with HF once)."""
    specs = list(dict.fromkeys(c.spec.name for c in CASES))
    return verify(specs, True, hf=True, processed=True, snapshots="check", runner=parity_cases.run)


def test_each_case_was_compared_with_hf_once(report: Report, parity_cases) -> None:
    """The family tests and this check share one HF comparison (and one checkpoint) per case."""
    assert all(parity_cases.compared[name] == 1 for name in NAMES), parity_cases.compared
    assert all(parity_cases.built[name] == 1 for name in NAMES), parity_cases.built


def test_every_case_was_checked(report: Report) -> None:
    assert [c.case.name for c in report.cases] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_matches_hf(report: Report, name: str) -> None:
    case = next(c for c in report.cases if c.case.name == name)
    result = case.parity
    assert result.error is None, result.message
    assert result.ok, result.message
    assert result.logits_max_diff <= result.atol
    if not is_encoder_spec(case.case.spec):  # encoders have no weight processing
        assert result.processed_logprobs_max_diff is not None
        assert result.processed_logprobs_max_diff <= result.atol
    assert max(result.layer_max_diffs) <= result.atol


@pytest.mark.parametrize("name", NAMES)
def test_matches_snapshot(report: Report, name: str) -> None:
    case = next(c for c in report.cases if c.case.name == name)
    snap = case.snapshot
    assert snap is not None
    hint = f" ({UPDATE_HINT})" if snap.status in ("stale", "missing") else ""
    assert snap.status == "ok", f"{name}: snapshot {snap.status}: {snap.message}{hint}"


def test_no_orphan_snapshots() -> None:
    """Every built-in snapshot belongs to a registered case (a removed variant leaves none)."""
    from tlcore.plugins.manager import get_manager

    loaded = {n for n, r in get_manager().records.items() if r.state == "ok"}
    live = {snapshot_key(c.spec.name, c.variant) for c in CASES}
    orphans, _ = orphan_entries(read_manifest(), live, loaded)
    assert not orphans, [f"{o.name}: {o.message}" for o in orphans]

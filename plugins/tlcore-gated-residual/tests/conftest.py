"""The plugin's tests use tlcore's opt-in fixtures, and run installed or from a checkout."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import tlcore_gated_residual.plugin  # noqa: E402

pytest_plugins = ["tlcore.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def gated_residual(tlcore_plugin):
    """The plugin, registered for each test (or, when installed, the one its entry point loaded)."""
    return tlcore_plugin(tlcore_gated_residual.plugin)


@pytest.fixture(params=[None, "post_norms"])
def variant(request) -> str | None:
    """Both test configs: gates only, and post-norms before the gates."""
    return request.param

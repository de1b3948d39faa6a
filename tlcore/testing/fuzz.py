"""Helpers for fuzzing tlcore (and a plugin's specs): a typed error or a result, in bounded time.

tlcore's own fuzz suite (``tests/fuzz``) uses these; a plugin can fuzz its specs the same way::

    from hypothesis import given, strategies as st
    from tlcore.testing.fuzz import outcome

    @given(st.dictionaries(st.text(), st.integers()))
    def test_my_spec_survives_any_config(hf_config):
        outcome(resolve_config, my_spec, hf_config)   # a config, or a TlcoreError
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from tlcore.errors import TlcoreError

SECONDS = 10.0
"""Longest one call may take before :func:`outcome` fails it (hangs take minutes)."""


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, TlcoreError | None]:
    """Call ``fn``; return ``(result, None)`` or ``(None, error)`` for a tlcore typed error.

    Any other exception propagates (the property fails), as does a call slower than
    :data:`SECONDS` or a typed error with an empty message.

    Args:
        fn: The call under test.
        *args: Its arguments.
        **kwargs: Its keyword arguments.

    Returns:
        The result and None, or None and the error.

    Example:
        >>> from tlcore.spec.expressions import evaluate
        >>> result, error = outcome(evaluate, {"pow": [10, 10**8]}, {})
        >>> result, type(error).__name__
        (None, 'SpecError')
    """
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs), None
    except TlcoreError as exc:
        if not str(exc).strip():
            raise AssertionError(f"{type(exc).__name__} with an empty message") from exc
        return None, exc
    finally:
        elapsed = time.perf_counter() - start
        if elapsed > SECONDS:
            raise AssertionError(f"{getattr(fn, '__name__', fn)} took {elapsed:.1f}s")


def examples(n: int) -> int:
    """How many examples a fuzz test runs: ``n``, times ``TLCORE_FUZZ_SCALE`` (default 1).

    Args:
        n: The CI count.

    Returns:
        The count to pass to ``hypothesis.settings(max_examples=...)``.
    """
    return max(1, int(n * float(os.environ.get("TLCORE_FUZZ_SCALE", "1"))))

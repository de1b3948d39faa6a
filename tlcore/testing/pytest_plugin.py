"""pytest fixtures for plugin authors (opt-in, not auto-registered).

Enable them in a ``conftest.py``::

    pytest_plugins = ["tlcore.testing.pytest_plugin"]

Fixtures:

- ``tlcore_plugin``: ``tlcore_plugin(plugin, name=None) -> PluginRecord`` registers a plugin object
  (a module or an object with ``@tlcore.hookimpl`` functions) for one test and restores the plugin
  manager and the registry afterwards. A failing plugin raises
  :class:`~tlcore.errors.PluginError` at once. A plugin already loaded (an installed entry
  point) is returned as it is, so the same tests run installed or not.
- ``tiny_hf_checkpoint``: ``tiny_hf_checkpoint(spec_name_or_spec, variant=None, **overrides)``
  writes a tiny checkpoint filled from tlcore's seeded generator and returns
  ``TinyCheckpoint(path, hf_model)``.
- ``assert_parity``: :func:`tlcore.testing.assertions.assert_parity`, which raises with the first
  divergence.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import pytest

from tlcore.spec.schema import ArchitectureSpec


class TinyCheckpoint(NamedTuple):
    """A tiny seeded checkpoint folder and the HF model it was saved from (fp32, eval mode)."""

    path: Path
    hf_model: Any


@pytest.fixture
def tlcore_plugin() -> Iterator[Callable[..., Any]]:
    """Register plugin objects for one test; the manager and registry are restored afterwards.

    Yields:
        ``register(plugin, name=None) -> PluginRecord``.
    """
    from tlcore.errors import PluginError
    from tlcore.plugins.manager import STRICT_ENV, get_manager

    manager = get_manager()

    def register(plugin: object, name: str | None = None) -> Any:
        loaded_as = manager.pm.get_name(plugin) if manager.pm.is_registered(plugin) else None
        if loaded_as is not None:
            return manager.records[loaded_as]
        # Strict for this call: a broken test plugin should fail the test, not warn.
        with mock.patch.dict(os.environ, {STRICT_ENV: "1"}):
            record = manager.add_plugin(plugin, name)
        if record.errors:  # unreachable in strict mode; kept for a clear message regardless
            raise PluginError(f"{record.describe()}: {record.error}")
        return record

    with manager.scoped():
        yield register


@pytest.fixture
def tiny_hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TinyCheckpoint]:
    """Factory writing tiny seeded HF checkpoints for a spec.

    Args:
        tmp_path_factory: pytest's temporary folders.

    Returns:
        ``make(spec_name_or_spec, variant=None, seed=..., **hf_overrides) -> TinyCheckpoint``.
    """
    from tlcore.testing.tiny import DEFAULT_SEED, save_tiny_checkpoint

    def make(
        spec: ArchitectureSpec | str,
        variant: str | None = None,
        seed: int = DEFAULT_SEED,
        **overrides: Any,
    ) -> TinyCheckpoint:
        if isinstance(spec, str):
            from tlcore.registry import get_registry

            spec = get_registry().get_spec(spec)
        folder = tmp_path_factory.mktemp(f"{spec.name}-{variant or 'base'}")
        path, hf_model = save_tiny_checkpoint(
            spec,
            folder,
            variant,
            seed,
            attn_implementation=spec.parity.attn_for(variant),
            **overrides,
        )
        return TinyCheckpoint(Path(path), hf_model)

    return make


@pytest.fixture
def assert_parity() -> Callable[..., Any]:
    """The :func:`tlcore.testing.assertions.assert_parity` helper.

    Returns:
        ``assert_parity(spec, variant=None, *, atol=None, processed=True) -> ParityResult``.
    """
    from tlcore.testing.assertions import assert_parity as check

    return check

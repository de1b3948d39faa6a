"""Helpers for testing tlcore and plugins: tiny seeded checkpoints, parity assertions, fixtures.

- :mod:`tlcore.testing.tiny`: tiny HF checkpoints filled from tlcore's seeded generator;
- :mod:`tlcore.testing.assertions`: ``assert_parity`` (raises with the first divergence);
- :mod:`tlcore.testing.pytest_plugin`: opt-in fixtures (``pytest_plugins = [...]``).
"""

"""Helpers for testing tlcore and plugins: tiny seeded checkpoints, parity assertions, fixtures.

- :mod:`tlcore.testing.tiny`: tiny HF checkpoints filled from tlcore's seeded generator;
- :mod:`tlcore.testing.cases`: one checkpoint and one HF comparison per case, shared by a session;
- :mod:`tlcore.testing.sensitivity`: break one feature, require parity to fail (shared breakers);
- :mod:`tlcore.testing.models`: small random models from a spec's test config or from traits;
- :mod:`tlcore.testing.assertions`: ``assert_parity`` (raises with the first divergence);
- :mod:`tlcore.testing.pytest_plugin`: opt-in fixtures (``pytest_plugins = [...]``).
"""

"""Helpers for testing tlcore and plugins: tiny seeded HF checkpoints, parity assertions, fixtures."""

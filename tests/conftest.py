"""Shared test setup: offline HF, small thread pools, tiny seeded checkpoints per spec."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``tiny_checkpoint(spec_name, variant=None)`` → (folder, hf_model), per session."""
    from tlcore.registry import get_registry
    from tlcore.testing.tiny import save_tiny_checkpoint

    made: dict[tuple[str, str | None], tuple] = {}

    def make(name: str, variant: str | None = None):
        key = (name, variant)
        if key not in made:
            spec = get_registry().get_spec(name)
            folder = tmp_path_factory.mktemp(f"{name}-{variant or 'base'}")
            made[key] = save_tiny_checkpoint(
                spec, folder, variant, attn_implementation=spec.parity.attn_for(variant)
            )
        return made[key]

    return make

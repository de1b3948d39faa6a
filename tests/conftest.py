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
def parity_cases(tmp_path_factory: pytest.TempPathFactory):
    """The session's tiny checkpoints and HF comparisons, each made once per (spec, variant).

    The snapshot check, the family parity tests and the sensitivity tests share them.
    """
    from tlcore.testing.cases import ParityCases

    return ParityCases(tmp_path_factory.mktemp("parity-cases"))


@pytest.fixture(scope="session")
def tiny_checkpoint(parity_cases):
    """Factory: ``tiny_checkpoint(spec_name, variant=None)`` → (folder, hf_model), per session."""
    return parity_cases.checkpoint

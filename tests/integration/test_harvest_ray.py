"""tlcore.harvest on a local Ray cluster of two one-CPU workers (Ray Data actor pool).

The shards must equal the in-process harvest's byte for byte (so the rows equal a direct
``run_with_cache``, which test_harvest.py checks for the in-process path), also when a worker is
SIGKILLed mid-run. One cluster serves the module and is shut down at its end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tlcore.harvest import harvest
from tlcore.harvest.ray_backend import KILL_ENV, TOKENS_DIR
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
datasets = pytest.importorskip("datasets")

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
CTX = 16
SETTINGS = {
    "context_size": CTX,
    "batch_size": 4,
    "rows_per_shard": 4,
    "tokens": CTX * 24,
    "progress": False,
}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint (no tokenizer: the dataset is pre-tokenised) and an in-process harvest."""
    root = tmp_path_factory.mktemp("ray-harvest")
    folder, _ = save_tiny_checkpoint(
        get_registry().get_spec("llama"), root / "ckpt", vocab_size=1000, num_hidden_layers=3
    )
    rng = np.random.default_rng(0)
    dataset = datasets.Dataset.from_dict({"tokens": rng.integers(0, 1000, (30, CTX)).tolist()})
    saved = root / "tokens"
    dataset.save_to_disk(str(saved))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each one-CPU worker: the same kernels, the same bits
    try:
        local = harvest(str(folder), saved, HOOKS, root / "local", **SETTINGS)
    finally:
        torch.set_num_threads(threads)
    return folder, saved, local


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.arrow"))}


def test_two_workers_write_the_in_process_rows(cluster, setup, tmp_path):
    folder, saved, local = setup
    result = harvest(
        str(folder), saved, HOOKS, tmp_path / "ray", ray=True, num_workers=2, **SETTINGS
    )
    assert result.workers == 2 and result.shards == local.shards == 6
    assert shard_bytes(tmp_path / "ray") == shard_bytes(local.path)
    pids = {
        json.loads(p.read_text())["worker_pid"] for p in (tmp_path / "ray").glob("shard-*.json")
    }
    assert len(pids) == 2, "both workers computed shards"
    loaded = datasets.load_from_disk(str(tmp_path / "ray"))
    assert len(loaded) == 24 and not (tmp_path / "ray" / TOKENS_DIR).exists()


def test_a_killed_worker_loses_and_duplicates_nothing(cluster, setup, tmp_path):
    folder, saved, local = setup
    marker = tmp_path / "killed"
    # The worker that picks up shard 3 SIGKILLs itself; Ray restarts it and retries the shard.
    runtime_env = {"env_vars": {KILL_ENV: f"3:{marker}"}}
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    result = harvest(
        str(folder), saved, HOOKS, tmp_path / "ray", ray=True, num_workers=2, **SETTINGS
    )
    assert marker.exists(), "a worker was killed mid-run"
    killed = int(marker.read_text())
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "ray").glob("shard-*.json"))]
    assert [r["shard"] for r in records] == list(range(6))
    assert records[3]["worker_pid"] != killed
    assert result.rows == 24
    assert shard_bytes(tmp_path / "ray") == shard_bytes(local.path)
    loaded = datasets.load_from_disk(str(tmp_path / "ray")).with_format("numpy")
    assert len(loaded) == 24 and len({tuple(r) for r in loaded["token_ids"]}) == 24


def test_a_bad_hook_fails_in_the_driver_before_any_worker_starts(setup, tmp_path):
    from tlcore.errors import HookNameError

    folder, saved, _ = setup
    with pytest.raises(HookNameError, match="hook_resid_post"):
        harvest(str(folder), saved, ["blocks.0.hook_resid_pots"], tmp_path / "x", ray=True)
    assert not (tmp_path / "x").exists()

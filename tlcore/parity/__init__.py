"""Logit parity against HuggingFace, snapshots and the model table.

Importable, so plugin authors check their own specs with the functions the contributor tool uses:

* :func:`compare_spec` / :func:`compare_model`: one spec (or model) against HF, naming the first
  diverging hook on failure.
* :func:`run_parity`: every registered spec (built-in and plugin) and test variant.
* :func:`check_snapshots` / :func:`update_snapshots`: stored tlcore logits, checked without HF.
* :func:`model_table` / :func:`write_model_table`: the JSONL + HTML model table.
* :func:`compare_pretrained`: real weights, as a markdown table row.

Names load on first use, so ``tlcore --help`` (which imports the command's argument parser from
:mod:`tlcore.parity.cli`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "ParityResult": "compare",
    "compare_model": "compare",
    "compare_spec": "compare",
    "parity_tokens": "compare",
    "probe_layer": "probes",
    "PretrainedParity": "pretrained",
    "compare_pretrained": "pretrained",
    "Report": "runner",
    "cases": "runner",
    "check_snapshots": "runner",
    "run_parity": "runner",
    "update_snapshots": "runner",
    "verify": "runner",
    "SnapshotResult": "snapshots",
    "default_snapshot_dir": "snapshots",
    "read_manifest": "snapshots",
    "model_table": "table",
    "write_model_table": "table",
}

if TYPE_CHECKING:
    from tlcore.parity.compare import (
        ParityResult,
        compare_model,
        compare_spec,
        parity_tokens,
    )
    from tlcore.parity.pretrained import PretrainedParity, compare_pretrained
    from tlcore.parity.probes import probe_layer
    from tlcore.parity.runner import (
        Report,
        cases,
        check_snapshots,
        run_parity,
        update_snapshots,
        verify,
    )
    from tlcore.parity.snapshots import SnapshotResult, default_snapshot_dir, read_manifest
    from tlcore.parity.table import model_table, write_model_table


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tlcore.parity' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"tlcore.parity.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ParityResult",
    "PretrainedParity",
    "Report",
    "SnapshotResult",
    "cases",
    "check_snapshots",
    "compare_model",
    "compare_pretrained",
    "compare_spec",
    "default_snapshot_dir",
    "model_table",
    "parity_tokens",
    "probe_layer",
    "read_manifest",
    "run_parity",
    "update_snapshots",
    "verify",
    "write_model_table",
]

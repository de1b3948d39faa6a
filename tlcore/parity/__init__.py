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
    "ParityResult": "result",
    "compare_model": "compare",
    "compare_spec": "compare",
    "parity_tokens": "result",
    "probe_layer": "probes",
    "PretrainedParity": "pretrained",
    "compare_pretrained": "pretrained",
    "Report": "report",
    "cases": "runner",
    "check_snapshots": "runner",
    "run_parity": "runner",
    "update_snapshots": "runner",
    "verify": "runner",
    "SnapshotResult": "snapshots",
    "default_snapshot_dir": "snapshots",
    "read_manifest": "snapshots",
    "model_table": "runner",
    "write_model_table": "table_page",
}

if TYPE_CHECKING:
    from tlcore.parity.compare import compare_model, compare_spec
    from tlcore.parity.pretrained import PretrainedParity, compare_pretrained
    from tlcore.parity.probes import probe_layer
    from tlcore.parity.report import Report
    from tlcore.parity.result import ParityResult, parity_tokens
    from tlcore.parity.runner import (
        cases,
        check_snapshots,
        model_table,
        run_parity,
        update_snapshots,
        verify,
    )
    from tlcore.parity.snapshots import SnapshotResult, default_snapshot_dir, read_manifest
    from tlcore.parity.table_page import write_model_table


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

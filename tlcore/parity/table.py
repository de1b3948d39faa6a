"""The model table: traits, cfg, parameter/activation shapes and parity status per spec.

One row per spec and test variant, written as JSONL and as a static self-contained HTML page.

Shapes come from the tiny test model (``run_with_cache`` on the ``[2, 12]`` parity batch, no
weight processing). Layer-indexed names are folded into ``blocks.{i}.…`` when every layer has the
same shape; layers that differ (MoE every other layer, per-layer windows) are listed one by one.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from jaxtyping import Int

CFG_FIELDS = (
    "d_model",
    "n_layers",
    "n_heads",
    "n_key_value_heads",
    "d_head",
    "d_mlp",
    "d_vocab",
    "d_vocab_out",
    "n_ctx",
    "act_fn",
    "normalization_type",
    "eps",
    "positional_embedding_type",
    "rotary_dim",
    "rotary_base",
    "rotary_adjacent_pairs",
    "parallel_attn_mlp",
    "gated_mlp",
    "num_experts",
    "experts_per_token",
    "attn_scale",
    "attn_scores_soft_cap",
    "output_logits_soft_cap",
    "use_qk_norm",
    "use_local_attn",
    "window_size",
    "attn_types",
    "use_normalization_before_and_after",
    "post_embedding_ln",
    "tie_word_embeddings",
    "original_architecture",
)
"""TransformerLens cfg fields shown per row (the JSONL has them all)."""

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fold_layers(shapes: dict[str, list[int]], n_layers: int) -> dict[str, list[int]]:
    """Fold ``blocks.N.x`` names into ``blocks.{i}.x`` where every layer has the same shape.

    Args:
        shapes: Name → shape, in model order.
        n_layers: Number of blocks.

    Returns:
        The folded mapping, first-appearance order.

    Example:
        >>> fold_layers({"blocks.0.a": [2], "blocks.1.a": [2], "blocks.0.b": [3], "x": [1]}, 2)
        {'blocks.{i}.a': [2], 'blocks.0.b': [3], 'x': [1]}
    """
    groups: dict[str, dict[int, list[int]]] = {}
    for name, shape in shapes.items():
        match = _LAYER.match(name)
        if match:
            groups.setdefault(_LAYER.sub("blocks.{i}.", name), {})[int(match.group(1))] = shape
    out: dict[str, list[int]] = {}
    for name, shape in shapes.items():
        match = _LAYER.match(name)
        if not match:
            out[name] = shape
            continue
        pattern = _LAYER.sub("blocks.{i}.", name)
        layers = groups[pattern]
        uniform = len(layers) == n_layers and all(s == shape for s in layers.values())
        if uniform:
            out.setdefault(pattern, shape)
        else:
            out[name] = shape
    return out


def inspect_model(model: Any, tokens: Int[torch.Tensor, "batch pos"]) -> dict[str, Any]:
    """Collect a loaded model's table facts: cfg, traits, parameter and activation shapes.

    Args:
        model: An unprocessed :class:`tlcore.HookedTransformer`.
        tokens: The batch to run for activation shapes.

    Returns:
        ``cfg``, ``traits``, ``parameters``, ``activations``, ``n_params``.
    """
    cfg = model.cfg
    params = {name: list(p.shape) for name, p in model.named_parameters()}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    activations = {name: list(t.shape) for name, t in cache.items()}
    traits = {}
    for slot, trait in cfg.traits.items():
        dumped = trait.model_dump(mode="json", exclude_defaults=True)
        traits[slot] = {"kind": getattr(trait, "kind", None), **dumped}
    return {
        "cfg": {f: _jsonable(getattr(cfg, f, None)) for f in CFG_FIELDS},
        "traits": _jsonable(traits),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "parameters": fold_layers(params, cfg.n_layers),
        "activations": fold_layers(activations, cfg.n_layers),
        "activation_batch": list(tokens.shape),
    }


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.3g}")


def table_row(case: Any, run: Any, snapshot: Any = None) -> dict[str, Any]:
    """One row of the model table.

    Args:
        case: A :class:`tlcore.parity.runner.Case`.
        run: Its :class:`tlcore.parity.compare.CaseRun`.
        snapshot: Its :class:`tlcore.parity.snapshots.SnapshotResult`, if checked.

    Returns:
        The row (JSON-able).
    """
    spec, result = case.spec, run.result
    status = result.status
    if snapshot is not None and not snapshot.ok and status == "ok":
        status = f"snapshot {snapshot.status}"
    return {
        "name": case.name,
        "spec": spec.name,
        "variant": case.variant,
        "source": case.source,
        "description": spec.description,
        "extends": spec.extends,
        "hf_model_types": list(spec.hf.model_types),
        "hf_architectures": list(spec.hf.architectures),
        "hf_match": _jsonable(spec.hf.match),
        "content_hash": spec.content_hash(),
        "test_config": _jsonable({**spec.test_config, **spec.test_variants.get(case.variant, {})})
        if case.variant
        else _jsonable(spec.test_config),
        **run.extra,
        "parity": {
            "status": status,
            "logits_max_diff": _num(result.logits_max_diff),
            "logprobs_max_diff": _num(result.logprobs_max_diff),
            "processed_logprobs_max_diff": _num(result.processed_logprobs_max_diff),
            "processed_logprobs_vs_hf_max_diff": _num(result.processed_logprobs_vs_hf_max_diff),
            "layers_max_diff": _num(max(result.layer_max_diffs))
            if result.layer_max_diffs
            else None,
            "atol": result.atol,
            "first_divergence": result.first_divergence,
            "error": result.error,
            "snapshot": snapshot.status if snapshot is not None else None,
            "snapshot_max_diff": _num(snapshot.max_diff) if snapshot is not None else None,
        },
    }

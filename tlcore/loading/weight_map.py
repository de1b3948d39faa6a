"""Executing a spec's weight map: HF tensors → TransformerLens-named tensors, one rule at a time.

For each rule and layer, the first source whose keys all exist is read, its ops run, and the results
go to the targets. Every problem (missing targets, unexpected checkpoint keys, wrong shapes, ops
that produce the wrong number of tensors) is collected and reported together.

Key templates: ``{i}`` is the layer and ``{e}`` the expert (one group of tensors per expert). In
a ``from`` key, ``{h}`` expands in place to one key per head (``n_heads`` of them) and
``{h:FIELD}`` to ``cfg.FIELD`` keys (``{h:n_key_value_heads}``), so per-head modules stored as a
list (StableLM's ``q_layernorm.norms.{h}.weight``) reach the ops together, e.g. to be stacked
into ``[n_heads, d_head]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tlcore.errors import CheckpointMismatchError, SpecError
from tlcore.spec.expressions import evaluate
from tlcore.spec.schema import ArchitectureSpec, WeightRule, WeightSource
from tlcore.utils.frozen_map import FrozenMap

# TransformerLens always has these biases; a checkpoint without them means zeros.
ZERO_DEFAULT_PARAMS = frozenset(
    {"b_Q", "b_K", "b_V", "b_O", "_b_K", "_b_V", "b_in", "b_out", "b_U", "b_gate"}
)

WeightOpFn = Callable[..., list[torch.Tensor]]
"""``fn(tensors, cfg, **params) -> tensors``: a weight op."""


@dataclass(frozen=True)
class WeightMap:
    """A spec's weight rules with everything needed to run them, fixed at resolution.

    Attributes:
        spec: The spec (its ``weights`` rules; its name and file for error messages).
        ops: The weight ops by name (the ones registered when the plan was resolved).
        cfg: The config fields op parameters and ``{h:FIELD}`` templates read (a frozen copy).
        hf: The HF config dict (op parameters may be ``{hf: ...}`` expressions).
        checkpoint_layers: Layers the checkpoint holds (more than ``cfg.n_layers`` when only the
            first layers are loaded: the rest are read past, never loaded).
    """

    spec: ArchitectureSpec
    ops: Mapping[str, WeightOpFn]
    cfg: Mapping[str, Any]
    hf: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_layers: int | None = None

    @classmethod
    def build(
        cls,
        spec: ArchitectureSpec,
        ops: Mapping[str, WeightOpFn],
        cfg: Any,
        hf: Mapping[str, Any],
        checkpoint_layers: int | None = None,
    ) -> WeightMap:
        """Freeze what the rules need: the ops they name and the config's plain fields.

        Args:
            ops: Every registered op (the rules' ops are taken from it).
            cfg: The resolved ``HookedTransformerConfig``.
            hf: The HF config dict.
            checkpoint_layers: See the class attributes (default: ``cfg.n_layers``).

        Returns:
            The weight map.
        """
        fields = {
            k: getattr(cfg, k)
            for k in cfg.__dataclass_fields__
            if k not in ("traits", "hf_config", "extra")
        }
        return cls(
            spec,
            FrozenMap(dict(ops)),
            FrozenMap(fields),
            FrozenMap(dict(hf)),
            checkpoint_layers or cfg.n_layers,
        )

    @property
    def n_layers(self) -> int:
        """Layers of the model being filled."""
        return int(self.cfg["n_layers"])


class _Fields:
    """Attribute access to the frozen config fields (what ops and templates read)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.__dict__.update(fields)


# Non-persistent HF buffers that some checkpoints still carry; they hold no weights.
IGNORED_KEY_SUFFIXES = (
    ".rotary_emb.inv_freq",
    ".attn.bias",
    ".attn.masked_bias",
    "attention.bias",
    "attention.masked_bias",
    ".rotary_emb.cos_cached",
    ".rotary_emb.sin_cached",
    "embed_positions",
    "embeddings.position_ids",  # BERT checkpoints saved before the buffer became non-persistent
)


@dataclass
class MappingReport:
    """What went wrong while mapping a checkpoint (empty when everything matched)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def raise_if_any(self, spec: ArchitectureSpec, where: str) -> None:
        """Raise one error listing every problem.

        Args:
            spec: The spec used.
            where: The checkpoint.

        Raises:
            CheckpointMismatchError: If any problem was recorded.
        """
        if not (self.missing or self.unexpected or self.mis_shaped or self.errors):
            return
        parts = [
            f"checkpoint {where} does not match architecture '{spec.name}' "
            f"({spec.source_file or 'spec object'}):"
        ]
        for title, items in (
            ("missing parameters (no checkpoint key maps to them)", self.missing),
            ("unexpected checkpoint keys (no rule uses them)", self.unexpected),
            ("wrong shapes", self.mis_shaped),
            ("errors", self.errors),
        ):
            if items:
                shown = items[:20] + (
                    [f"... and {len(items) - 20} more"] if len(items) > 20 else []
                )
                parts.append(f"  {title}:\n    " + "\n    ".join(shown))
        raise CheckpointMismatchError("\n".join(parts))


def _fill(template: str, layer: int | None, expert: int | None = None) -> str:
    out = template
    if layer is not None:
        out = out.replace("{i}", str(layer))
    if expert is not None:
        out = out.replace("{e}", str(expert))
    return out


def _parse_op(op: Any) -> tuple[str, dict[str, Any] | list[Any]]:
    """``name`` → no parameters; ``{name: {p: v}}`` → keywords; ``{name: v}`` → one positional."""
    if isinstance(op, str):
        return op, {}
    if isinstance(op, dict) and len(op) == 1:
        ((name, params),) = op.items()
        if params is None:
            return name, {}
        return name, dict(params) if isinstance(params, dict) else [params]
    raise SpecError(f"weight op {op!r}: expected a name or a one-key mapping {{name: params}}")


def run_ops(ops: list[Any], tensors: list[torch.Tensor], weights: WeightMap) -> list[torch.Tensor]:
    """Run a rule's op list.

    Args:
        ops: The ops (names or ``{name: params}``).
        tensors: Source tensors, in ``from`` order.
        weights: The weight map (its ops, config fields and HF config).

    Returns:
        The resulting tensors.

    Raises:
        SpecError: For an unknown op.
    """
    cfg = _Fields(weights.cfg)
    for op in ops:
        name, params = _parse_op(op)
        if name not in weights.ops:
            raise SpecError(f"unknown weight op '{name}' (known: {', '.join(sorted(weights.ops))})")
        params = evaluate(params, weights.hf, weights.cfg, f"op {name}")
        if isinstance(params, dict):
            tensors = weights.ops[name](tensors, cfg, **params)
        else:
            tensors = weights.ops[name](tensors, cfg, *params)
    return tensors


def _optional(rule: WeightRule) -> bool:
    """A rule may find no source: declared ``optional``, or it fills only zero-default biases.

    A checkpoint without those biases means zeros; a misspelt bias key still fails, because the
    checkpoint's real key is then unexpected.
    """
    return rule.optional or all(t.rpartition(".")[2] in ZERO_DEFAULT_PARAMS for t in rule.to)


def _layers_of(rule: WeightRule, n_layers: int) -> list[int | None]:
    templated = any("{i}" in t for t in rule.to)
    return list(range(n_layers)) if templated else [None]


def _expand_targets(rule: WeightRule, layer: int | None, n_experts: int) -> list[str]:
    names = []
    for target in rule.to:
        target = _fill(target, layer)
        if "{e}" in target:
            names += [_fill(target, None, e) for e in range(n_experts)]
        else:
            names.append(target)
    return names


_PER_HEAD = re.compile(r"\{h(?::(\w+))?\}")


def _expand_heads(key: str, cfg: Any) -> list[str]:
    """Expand ``{h}`` / ``{h:FIELD}`` into one key per head (``n_heads`` / ``cfg.FIELD`` keys)."""
    match = _PER_HEAD.search(key)
    if match is None:
        return [key]
    n = int(getattr(cfg, match.group(1) or "n_heads"))
    return [key[: match.start()] + str(h) + key[match.end() :] for h in range(n)]


def _source_keys(
    source: WeightSource, layer: int | None, expert: int | None, cfg: Any
) -> list[str]:
    return [k for t in source.from_ for k in _expand_heads(_fill(t, layer, expert), cfg)]


def iter_mapped_tensors(
    weights: WeightMap,
    keys: set[str],
    read: Callable[[str], torch.Tensor],
    targets: dict[str, tuple[int, ...]],
    report: MappingReport,
    on_group_done: Callable[[list[tuple[str, torch.Tensor]]], None] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(canonical name, tensor)`` for every target the weight map fills.

    Only shapes are looked at, never values, so the map runs "dry" on meta tensors too.

    Args:
        weights: The weight map.
        keys: All checkpoint keys.
        read: Reads one checkpoint tensor.
        targets: The model's parameter names and shapes (what must be filled).
        report: Collects problems.
        on_group_done: Called with the ``(key, tensor)`` sources of each rule application once its
            targets have been consumed (the loader frees sources it copied).

    Yields:
        Canonical names and tensors, one at a time.
    """
    cfg = _Fields(weights.cfg)
    used: set[str] = set()
    n_experts = int(weights.cfg.get("num_experts") or 0)
    n_layers_ckpt = weights.checkpoint_layers or weights.n_layers
    skip_layers_from = weights.n_layers if n_layers_ckpt > weights.n_layers else None
    for n, rule in enumerate(weights.spec.weights):
        for layer in _layers_of(rule, n_layers_ckpt):
            names = _expand_targets(rule, layer, n_experts)
            beyond = (
                skip_layers_from is not None and layer is not None and layer >= skip_layers_from
            )
            present = [name for name in names if name in targets]
            if not present and not beyond:
                continue  # the model has no such parameters at this layer (e.g. dense MoE layers)
            chosen = None
            per_expert = False
            for source in rule.sources():
                per_expert = any("{e}" in k for k in source.from_)
                experts = range(n_experts) if per_expert else [None]
                wanted = [k for e in experts for k in _source_keys(source, layer, e, cfg)]
                if all(k in keys for k in wanted):
                    chosen = source
                    break
            if chosen is None:
                if not _optional(rule) and not beyond:
                    report.missing.extend(present)
                continue
            if beyond:
                experts = range(n_experts) if per_expert else [None]
                used.update(k for e in experts for k in _source_keys(chosen, layer, e, cfg))
                continue
            where = f"weights[{n}] (to {rule.to[0]}), layer {layer}"
            if per_expert:
                groups = [
                    (
                        _source_keys(chosen, layer, e, cfg),
                        [_fill(_fill(t, layer), None, e) for t in rule.to],
                    )
                    for e in range(n_experts)
                ]
            else:
                groups = [(_source_keys(chosen, layer, None, cfg), names)]
            for source_keys, group_targets in groups:
                used.update(source_keys)
                inputs = [read(k) for k in source_keys]
                try:
                    outputs = run_ops(chosen.ops, inputs, weights)
                except Exception as exc:  # noqa: BLE001 - torch and einops raise many types
                    report.errors.append(f"{where}: ops failed: {type(exc).__name__}: {exc}")
                    continue
                if len(outputs) != len(group_targets):
                    report.errors.append(
                        f"{where}: ops produced {len(outputs)} tensors "
                        f"for {len(group_targets)} targets"
                    )
                    continue
                for name, tensor in zip(group_targets, outputs):
                    if name not in targets:
                        report.unexpected.extend(
                            f"{k} (→ {name}, not a model parameter)" for k in source_keys
                        )
                        continue
                    if tuple(tensor.shape) != targets[name]:
                        report.mis_shaped.append(
                            f"{name}: checkpoint gives {tuple(tensor.shape)} "
                            f"(from {', '.join(source_keys)}), "
                            f"model expects {targets[name]}"
                        )
                        continue
                    yield name, tensor
                if on_group_done is not None:
                    on_group_done(list(zip(source_keys, inputs)))
    ignored = [re.compile(pattern) for pattern in weights.spec.ignore_keys]
    leftover = sorted(
        k
        for k in keys - used
        if not k.endswith(IGNORED_KEY_SUFFIXES) and not any(p.match(k) for p in ignored)
    )
    report.unexpected.extend(leftover)

"""Loading encoders and encoder-decoders: ``from_pretrained`` through an encoder spec's plan.

The steps are the decoder's (:mod:`tlcore.model_loading`): resolve the checkpoint, resolve its spec
(among the encoder specs) into a plan, build on the meta device, stream the checkpoint through the
plan's weight map. Which optional output modules to build (a masked-LM head, a pooler...) is read
from the checkpoint itself: a module is built when the spec's rules for it find their keys.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tlcore.config import HookedTransformerConfig
from tlcore.encoder_specs import encoder_spec_for_hf_config, encoder_specs
from tlcore.loading.loader import load_checkpoint, materialize_meta_buffers
from tlcore.loading.resolve import hf_config_object, resolve_checkpoint
from tlcore.plan import ModelPlan, resolve_plan
from tlcore.spec.schema import ArchitectureSpec

logger = logging.getLogger(__name__)

_PENDING = ArchitectureSpec(name="pending-encoder-spec")
"""Handed to ``resolve_checkpoint`` so it does not look among decoder specs; replaced at once."""


def heads_in_checkpoint(
    spec: ArchitectureSpec, keys: set[str], heads: tuple[str, ...]
) -> tuple[str, ...]:
    """The optional modules whose weights the checkpoint holds.

    Args:
        spec: The encoder spec.
        keys: The checkpoint's keys.
        heads: Candidate module names (``mlm_head``, ``pooler``...).

    Returns:
        Those for which every weight rule filling ``<head>.*`` finds a source.

    Example:
        >>> spec = encoder_specs()["bert"]
        >>> keys = {"pooler.dense.weight", "pooler.dense.bias"}
        >>> heads_in_checkpoint(spec, keys, ("pooler", "mlm_head"))
        ('pooler',)
    """
    found = []
    for head in heads:
        rules = [r for r in spec.weights if any(t.startswith(head + ".") for t in r.to)]
        if rules and all(
            any(all(k in keys for k in src.from_) for src in rule.sources()) for rule in rules
        ):
            found.append(head)
    return tuple(found)


def plan_from_tl_fields(cfg: HookedTransformerConfig | dict[str, Any], spec_name: str) -> ModelPlan:
    """A plan from TransformerLens's config fields, through an encoder spec.

    Each ``config:`` entry of the spec that reads one HF field (``d_model: {hf: hidden_size}``) is
    inverted to give that HF field; the HF config class fills in the rest with its defaults.

    Args:
        cfg: TransformerLens's fields (``d_model``, ``n_layers``, ``n_heads``, ``d_mlp``...).
        spec_name: The encoder spec (``bert``, ``t5``).

    Returns:
        The plan (no checkpoint: random weights).
    """
    fields = (
        dict(cfg)
        if isinstance(cfg, dict)
        else {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k not in ("traits", "extra")}
    )
    spec = encoder_specs()[spec_name]
    hf: dict[str, Any] = {"model_type": spec.hf.model_types[0]}
    for key, expr in spec.config.items():
        if isinstance(expr, dict) and set(expr) <= {"hf", "default"}:
            if fields.get(key) is not None:
                hf[expr["hf"]] = fields[key]
    # Fields named as the HF config names them (TransformerLens's relative_attention_num_buckets).
    hf.update({k: v for k, v in fields.items() if k in _hf_names(spec.traits) and v is not None})
    overrides = {k: fields[k] for k in ("dtype", "device", "seed") if fields.get(k) is not None}
    return resolve_plan(spec, hf_config_object(hf), **overrides)


def init_weights_(model: torch.nn.Module, seed: int | None = None) -> None:
    """Random weights N(0, 0.02), identity norms and zero biases, as ``HookedTransformer``'s.

    Args:
        model: The model (parameters on the meta device are left alone).
        seed: The generator's seed (default 0).
    """
    from tlcore.components.norms import Norm

    generator = torch.Generator().manual_seed(seed or 0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_meta:
                continue
            owner = model.get_submodule(name.rpartition(".")[0])
            if isinstance(owner, Norm):
                owner.reset_affine_()
            elif param.dim() == 1 or name.rpartition(".")[2].startswith("b"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _hf_names(doc: Any) -> set[str]:
    """Every HF field an expression in ``doc`` reads (``{hf: name}``)."""
    if isinstance(doc, dict):
        own = {doc["hf"]} if isinstance(doc.get("hf"), str) else set()
        return own.union(*(_hf_names(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(_hf_names(v) for v in doc))
    return set()


class EncoderLoadingMixin:
    """``from_pretrained`` for models built from encoder specs."""

    HEADS: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        checkpoint_index: int | None = None,
        checkpoint_value: int | None = None,
        hf_model: Any = None,
        device: str | torch.device | None = None,
        tokenizer: Any = None,
        move_to_device: bool = True,
        dtype: torch.dtype | str = torch.float32,
        **from_pretrained_kwargs: Any,
    ) -> Any:
        """Load a checkpoint (no weight processing, as TransformerLens's encoders).

        Args:
            model_name: An alias, a local checkpoint folder, or an HF hub id (when reachable).
            checkpoint_index: Not supported (training checkpoints are separate revisions).
            checkpoint_value: Not supported.
            hf_model: Convert this in-memory HF model instead of reading files.
            device: Target device (default: CUDA if available, else CPU).
            tokenizer: A tokenizer to use instead of the checkpoint's.
            move_to_device: Put the parameters on ``device``.
            dtype: Parameter dtype.
            **from_pretrained_kwargs: Accepted for compatibility and ignored, with a warning
                (``torch_dtype`` is read as ``dtype``).

        Returns:
            The model.
        """
        from tlcore.model_loading import _load_tokenizer, _to_dtype

        if checkpoint_index is not None or checkpoint_value is not None:
            raise NotImplementedError("training checkpoints: load the checkpoint's own folder")
        if "torch_dtype" in from_pretrained_kwargs:
            dtype = from_pretrained_kwargs.pop("torch_dtype")
        if from_pretrained_kwargs:
            logger.warning("from_pretrained ignores %s", sorted(from_pretrained_kwargs))
        torch_dtype = _to_dtype(dtype)
        target = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        resolved = resolve_checkpoint(model_name, hf_model, spec=_PENDING)
        spec = encoder_spec_for_hf_config(resolved.hf_config, cls.__name__)
        plan = resolve_plan(
            spec,
            resolved.hf_config,
            dtype=torch_dtype,
            device=str(target),
            model_name=resolved.model_name,
        )
        assert plan.weights is not None
        heads = heads_in_checkpoint(spec, set(resolved.source.keys()), cls.HEADS)
        build: Any = cls
        with torch.device("meta"):
            model = build(plan, move_to_device=False, heads=heads, init_weights=False)
        where = resolved.where.replace(_PENDING.name, spec.name)
        load_checkpoint(
            model,
            plan.weights,
            resolved.source,
            device=target if move_to_device else "cpu",
            dtype=torch_dtype,
            where=where,
        )
        materialize_meta_buffers(model, target)
        if tokenizer is None and resolved.tokenizer_dir is not None:
            tokenizer = _load_tokenizer(resolved.tokenizer_dir)
        model.tokenizer = tokenizer
        model.setup()
        return model

"""Loading checkpoints into a ``HookedTransformer``: ``from_pretrained`` and weight processing.

``from_pretrained`` resolves the checkpoint (its HF config picks the spec, unless ``spec=`` names
one), resolves the spec into a :class:`~tlcore.plan.ModelPlan`, builds the model from the plan on
the meta device, streams the checkpoint in through the plan's weight map and applies
TransformerLens's weight processing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import torch

from tlcore import processing
from tlcore.errors import InputValidationError, UnsupportedConfigError
from tlcore.loading.loader import load_checkpoint, materialize_meta_buffers
from tlcore.loading.resolve import resolve_checkpoint
from tlcore.loading_checks import check_from_pretrained_args, check_unembedding_present
from tlcore.offload import DISK, place_, split_device_map
from tlcore.plan import resolve_plan
from tlcore.processing_plan import ProcessingPlan
from tlcore.processing_tied import loaded_ties
from tlcore.spec.schema import ArchitectureSpec

logger = logging.getLogger(__name__)


class LoadingMixin:
    """``from_pretrained``, ``from_pretrained_no_processing`` and ``process_weights_``."""

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        refactor_factored_attn_matrices: bool = False,
        checkpoint_index: int | None = None,
        checkpoint_value: int | None = None,
        hf_model: Any = None,
        device: str | torch.device | None = None,
        n_devices: int = 1,
        tokenizer: Any = None,
        move_to_device: bool = True,
        fold_value_biases: bool = True,
        default_prepend_bos: bool | None = None,
        default_padding_side: Literal["left", "right"] = "right",
        dtype: str | torch.dtype = "float32",
        first_n_layers: int | None = None,
        n_ctx: int | None = None,
        spec: ArchitectureSpec | None = None,
        device_map: Mapping[str, Any] | None = None,
        **from_pretrained_kwargs: Any,
    ) -> Any:
        """Load a checkpoint and apply TransformerLens's default weight processing.

        Args:
            model_name: An alias, a local checkpoint folder (``config.json`` + safetensors), a
                ``.gguf`` file, or an HF hub id (when the hub or its cache is reachable).
            fold_ln: Fold norm weights into the next linear maps (norms become LNPre/RMSPre).
            center_writing_weights: Centre weights writing to the residual stream.
            center_unembed: Centre the unembedding over the vocabulary.
            refactor_factored_attn_matrices: Refactor W_Q/W_K and W_V/W_O (not with rotary).
            checkpoint_index: Not supported (training checkpoints are separate hub revisions).
            checkpoint_value: Not supported.
            hf_model: Convert this in-memory HF model instead of reading files.
            device: Target device (default: CUDA if available, else CPU).
            n_devices: Split the blocks over this many devices from ``device`` on, as
                TransformerLens does (:func:`tlcore.offload.split_device_map`).
            tokenizer: A tokenizer to use instead of the checkpoint's.
            move_to_device: Move parameters to ``device``.
            fold_value_biases: Fold value biases into ``b_O``.
            default_prepend_bos: Override the architecture's default BOS handling.
            default_padding_side: ``"right"`` or ``"left"``.
            dtype: Parameter dtype (``"float32"``, ``"bfloat16"``, ``torch.float16`` ...).
            first_n_layers: Load only the first n blocks.
            n_ctx: Override the context length.
            spec: Load with this architecture spec instead of the one the checkpoint's HF config
                resolves to (a spec object need not be registered; its trait kinds and weight ops
                must be).
            device_map: Where each part lives and runs: module-name prefixes (``embed``,
                ``blocks.3``, ``unembed`` ...) → a device, ``"cpu"`` (offloaded to CPU memory and
                streamed to ``device`` per call) or ``"disk"`` (left in the memory-mapped
                checkpoint, streamed per call; unprocessed loads only). See
                :mod:`tlcore.offload`.
            **from_pretrained_kwargs: Accepted for compatibility and ignored, with a warning.

        Returns:
            The model.
        """
        check_from_pretrained_args(
            model_name, hf_model, first_n_layers, n_ctx, device, n_devices, default_padding_side,
            {"fold_ln": fold_ln, "center_writing_weights": center_writing_weights,
             "center_unembed": center_unembed, "fold_value_biases": fold_value_biases,
             "refactor_factored_attn_matrices": refactor_factored_attn_matrices},
        )  # fmt: skip
        if checkpoint_index is not None or checkpoint_value is not None:
            raise NotImplementedError(
                "training checkpoints: load the checkpoint's own folder or revision"
            )
        if n_devices != 1 and device_map is not None:
            raise InputValidationError("pass n_devices or device_map, not both", "device_map")
        if from_pretrained_kwargs:
            logger.warning(
                "from_pretrained ignores unsupported arguments: %s", sorted(from_pretrained_kwargs)
            )
        torch_dtype = _to_dtype(dtype)
        target = (
            torch.device(device)
            if device is not None
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        resolved = resolve_checkpoint(model_name, hf_model, spec=spec)
        overrides: dict[str, Any] = {
            "dtype": torch_dtype,
            "device": str(target),
            "model_name": resolved.model_name,
            "default_padding_side": default_padding_side,
        }
        if n_ctx is not None:
            overrides["n_ctx"] = n_ctx
        if default_prepend_bos is not None:
            overrides["default_prepend_bos"] = default_prepend_bos
        check_unembedding_present(
            resolved.spec, resolved.source.keys(), resolved.hf_config, resolved.where
        )
        plan = resolve_plan(
            resolved.spec, resolved.hf_config, first_n_layers=first_n_layers, **overrides
        )
        assert plan.weights is not None
        if n_devices > 1:
            device_map = split_device_map(plan.cfg.n_layers, n_devices, target)
        steps = (fold_ln, center_writing_weights, center_unembed, fold_value_biases)
        if device_map is not None and DISK in map(str, device_map.values()):
            if any(steps) or refactor_factored_attn_matrices:
                raise UnsupportedConfigError(
                    "device_map 'disk' keeps weights in the checkpoint file, so they cannot be "
                    "processed: use from_pretrained_no_processing, or 'cpu' offload"
                )
        build: Any = cls
        with torch.device("meta"):
            model = build(plan, move_to_device=False, init_weights=False)
        ties = load_checkpoint(
            model,
            plan.weights,
            resolved.source,
            device=target if move_to_device and device_map is None else "cpu",
            dtype=torch_dtype,
            where=resolved.where,
        )
        materialize_meta_buffers(model, target if device_map is None else "cpu")
        if tokenizer is None and resolved.tokenizer_dir is not None:
            tokenizer = _load_tokenizer(resolved.tokenizer_dir)
        if tokenizer is not None:
            model.set_tokenizer(tokenizer, default_padding_side=default_padding_side)
        with loaded_ties(ties):  # W_U read again from W_E's tensor: equal, no need to compare
            model._process(
                plan.processing,
                # Parameters over the source's own memory (its private file maps) are rewritten in
                # place; an hf_model's tensors belong to the caller and are left untouched.
                in_place=not getattr(resolved.source, "shares_memory", False),
                fold_ln=fold_ln,
                center_writing_weights=center_writing_weights,
                center_unembed=center_unembed,
                fold_value_biases=fold_value_biases,
                refactor_factored_attn_matrices=refactor_factored_attn_matrices,
            )
        if device_map is not None:
            place_(model, device_map, target)
        model.setup()
        return model

    @classmethod
    def from_pretrained_no_processing(
        cls,
        model_name: str,
        fold_ln: bool = False,
        center_writing_weights: bool = False,
        center_unembed: bool = False,
        refactor_factored_attn_matrices: bool = False,
        fold_value_biases: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Load a checkpoint with no weight processing: logits equal HuggingFace's.

        Args:
            model_name: See :meth:`from_pretrained`.
            fold_ln: Off by default.
            center_writing_weights: Off by default.
            center_unembed: Off by default.
            refactor_factored_attn_matrices: Off by default.
            fold_value_biases: Off by default.
            **kwargs: Passed to :meth:`from_pretrained`.

        Returns:
            The model.
        """
        return cls.from_pretrained(
            model_name,
            fold_ln=fold_ln,
            center_writing_weights=center_writing_weights,
            center_unembed=center_unembed,
            fold_value_biases=fold_value_biases,
            refactor_factored_attn_matrices=refactor_factored_attn_matrices,
            **kwargs,
        )

    def process_weights_(
        self,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        refactor_factored_attn_matrices: bool = False,
        fold_value_biases: bool = True,
    ) -> Any:
        """Apply TransformerLens's weight processing in place (where the architecture allows it).

        What was applied is recorded in ``cfg`` (``cfg.fold_ln`` ...).

        Args:
            fold_ln: Fold norms into the next linear maps.
            center_writing_weights: Centre residual-writing weights.
            center_unembed: Centre the unembedding.
            refactor_factored_attn_matrices: Refactor attention matrices.
            fold_value_biases: Fold value biases into ``b_O``.

        Returns:
            The model.
        """
        return self._process(
            None,
            fold_ln=fold_ln,
            center_writing_weights=center_writing_weights,
            center_unembed=center_unembed,
            fold_value_biases=fold_value_biases,
            refactor_factored_attn_matrices=refactor_factored_attn_matrices,
        )

    def _process(self, plan: ProcessingPlan | None, in_place: bool = False, **flags: bool) -> Any:
        """Run the requested steps with ``plan`` (default: the plan of the current config)."""
        if not any(flags.values()):
            return self
        model: Any = self
        processing.process_weights_(model, plan=plan, in_place=in_place, **flags)
        model.optimize_layout_()
        model.setup()
        return model


def _to_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise InputValidationError(f"unknown dtype {dtype!r}", "dtype")
    name = dtype.removeprefix("torch.")
    aliases = {
        "fp32": "float32",
        "fp16": "float16",
        "bf16": "bfloat16",
        "half": "float16",
        "float": "float32",
    }
    result = getattr(torch, aliases.get(name, name), None)
    if not isinstance(result, torch.dtype):
        raise InputValidationError(f"unknown dtype '{dtype}'", "dtype")
    return result


def _load_tokenizer(path: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - a model without a usable tokenizer still runs on tokens
        logger.warning("could not load the tokenizer from %s: %s", path, exc)
        return None

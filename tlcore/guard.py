"""The config guard: refuse an HF config that would make tlcore build a different model than HF.

tlcore builds a model from the HF config fields its spec reads. A field the spec does not read is
harmless exactly when HF's own model ignores it too, so the guard asks one question of every field
whose value differs from the config class's own default: *could this value change what HF
computes, while tlcore ignores it?* A field is accepted, with the reason recorded in
``cfg.extra["config_guard"]``, when

1. the spec reads it (through ``config:`` or trait expressions), or lists it in ``guard.handled``
   or ``guard.ignored`` (the spec author checked it);
2. HF's modelling code never reads it: the guard scans the source of the model class that
   transformers itself would build for this config (and the transformers modules it imports) for
   attribute reads of the config, mapping ``attribute_map`` aliases to the fields they name
   (:mod:`tlcore.hf_config_reads`).
   Legacy keys such as GPT-2's ``n_ctx``, remote-code pointers (``auto_map``) and tool metadata
   (``transformers.js_config``) fall here. The scan runs against the installed transformers, so
   the verdict follows the version actually used;
3. HF derives it from the other fields: rebuilding the config without it gives the same value
   (transformers 5.25 stores Falcon's ``num_key_value_heads``, computed from ``num_kv_heads``);
4. it has no effect on an inference forward pass (:data:`INFERENCE_NEUTRAL`: dropout rates,
   initialisation ranges, token ids, output flags, implementation selectors).

Everything else is refused with :class:`~tlcore.errors.UnsupportedConfigError`, naming the fields.
``guard.unsupported`` refuses named values even when the spec reads the field (a layout flag that
no trait builds).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tlcore.errors import UnsupportedConfigError
from tlcore.hf_config_reads import hf_read_fields
from tlcore.loading.fp8 import fp8_format
from tlcore.spec.schema import ArchitectureSpec

logger = logging.getLogger(__name__)

INFERENCE_NEUTRAL: dict[str, str] = {
    **dict.fromkeys(
        (
            "architectures",
            "model_type",
            "transformers_version",
            "name_or_path",
            "auto_map",
            "tokenizer_class",
            "task_specific_params",
            "finetuning_task",
            "prefix",
            "custom_pipelines",
        ),
        "metadata (tlcore picks the spec from model_type; a native model type makes HF ignore "
        "auto_map)",
    ),
    **dict.fromkeys(
        (
            "initializer_range",
            "init_std",
            "initializer_factor",
            "embedding_initializer_range",
        ),
        "initialisation only",
    ),
    **dict.fromkeys(
        (
            "router_aux_loss_coef",
            "output_router_logits",
            "router_jitter_noise",
            "router_z_loss_coef",
            "z_loss",
            "layerdrop",
            "gradient_checkpointing",
            "problem_type",
            "num_labels",
            "id2label",
            "label2id",
        ),
        "training only",
    ),
    **dict.fromkeys(
        (
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
            "sep_token_id",
            "decoder_start_token_id",
            "max_length",
            "forced_eos_token_id",
        ),
        "token ids and generation settings (tlcore reads the tokenizer)",
    ),
    **dict.fromkeys(
        (
            "use_cache",
            "output_attentions",
            "output_hidden_states",
            "return_dict",
            "use_return_dict",
            "torchscript",
            "chunk_size_feed_forward",
        ),
        "output format only",
    ),
    **dict.fromkeys(
        (
            "_attn_implementation",
            "attn_implementation",
            "_experts_implementation",
            "pretraining_tp",
            "dtype",
            "torch_dtype",
        ),
        "implementation or storage choice (tlcore's own dtype= and kernels decide)",
    ),
    "tie_word_embeddings": "the weight map reads the unembedding from the checkpoint, tied or not",
    "add_cross_attention": "only encoder-decoder use adds cross-attention layers",
    "summary_first_dropout": "training only",
}
"""Fields HF's modelling code reads that cannot change an inference forward pass, with the reason.

Dropout rates (any field named ``*dropout*`` or ``*_pdrop``) join them by name. GPT-2's
``summary_*`` fields configure the multiple-choice head of ``GPT2DoubleHeadsModel``, which shares
the modelling module but not the causal LM's forward pass.
"""

_NEUTRAL_PATTERNS = (re.compile(r".*dropout.*"), re.compile(r".*_pdrop$"), re.compile(r"^summary_"))

QUANTIZATION_METHODS_LOADED: frozenset[str] = frozenset({"mxfp4", "fp8"})
"""``quantization_config.quant_method`` values whose tensors the loader dequantises (``fp8``: the
block-wise settings :func:`tlcore.loading.fp8.fp8_format` reads)."""


@dataclass
class GuardVerdict:
    """What the guard concluded about each non-default HF field (``cfg.extra["config_guard"]``)."""

    read_by_spec: list[str] = field(default_factory=list)
    listed_by_spec: list[str] = field(default_factory=list)
    not_read_by_hf: list[str] = field(default_factory=list)
    derived_by_hf: list[str] = field(default_factory=list)
    inference_neutral: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """The verdict as plain lists (empty ones left out)."""
        return {k: v for k, v in self.__dict__.items() if v}


class RecordingMapping(Mapping[str, Any]):
    """A read-only mapping that records which keys were looked up (the fields a spec reads)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:  # noqa: D102 - Mapping.get, recorded
        self.read.add(key)
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def check_config_guard(spec: ArchitectureSpec, hf_config: Any, read: set[str]) -> GuardVerdict:
    """Refuse an HF config with a non-default field that HF uses and the spec does not.

    Args:
        spec: The spec being resolved.
        hf_config: A transformers ``PretrainedConfig``; a plain dict gets only the
            ``guard.unsupported`` check (there is no class to compare defaults or code with).
        read: HF fields the spec's expressions looked up.

    Returns:
        The verdict for every non-default field (nothing refused).

    Raises:
        UnsupportedConfigError: Naming every refused field and its value.
    """
    values = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    where = spec.source_file or spec.name
    for field_name, refused in spec.guard.unsupported.items():
        if field_name in values and values[field_name] in refused:
            raise UnsupportedConfigError(
                f"architecture '{spec.name}' does not support HF config "
                f"{field_name}={values[field_name]!r} ({where}: guard.unsupported); loading it "
                f"would build a different model than HF's."
            )
    verdict = GuardVerdict()
    if not hasattr(hf_config, "to_dict"):
        return verdict
    check_quantization(spec, values.get("quantization_config"))
    listed = set(spec.guard.handled) | set(spec.guard.ignored) | set(spec.guard.unsupported)
    hf_reads = hf_read_fields(type(hf_config))
    for key in sorted(non_default_fields(hf_config)):
        if key in read:
            verdict.read_by_spec.append(key)
        elif key in listed:
            verdict.listed_by_spec.append(key)
        elif key.startswith("_") or (hf_reads is not None and key not in hf_reads):
            verdict.not_read_by_hf.append(key)
        elif _is_neutral(key):
            verdict.inference_neutral.append(key)
        elif _derived_by_hf(hf_config, key):
            verdict.derived_by_hf.append(key)
        else:
            verdict.refused.append(key)
    if verdict.refused:
        details = ", ".join(f"{k}={values.get(k)!r}" for k in verdict.refused)
        raise UnsupportedConfigError(
            f"architecture '{spec.name}' does not handle HF config field(s) set to non-default "
            f"values that HF's {type(hf_config).__name__} model reads: {details}. tlcore refuses "
            f"rather than build a model that silently computes something else. If a field has "
            f"no effect on the forward pass, add it to the spec's guard.ignored list ({where}); "
            f"otherwise the spec needs a trait for it (docs/add_an_architecture.md)."
        )
    return verdict


def non_default_fields(hf_config: Any) -> set[str]:
    """The fields of ``hf_config`` whose values differ from its class's defaults.

    Args:
        hf_config: A transformers ``PretrainedConfig``.

    Returns:
        Field names (keys of ``to_dict()``) that the class's default instance lacks or sets
        differently.
    """
    values = hf_config.to_dict()
    config_class: type = type(hf_config)
    defaults = _class_defaults(config_class)
    if defaults is None:
        return set(hf_config.to_diff_dict())
    return {k for k, v in values.items() if k not in defaults or defaults[k] != v}


@functools.cache
def _class_defaults(cls: type) -> dict[str, Any] | None:
    try:
        return dict(cls().to_dict())
    except Exception:  # noqa: BLE001 - a class that needs arguments has no defaults to compare
        return None


def _is_neutral(key: str) -> bool:
    return key in INFERENCE_NEUTRAL or any(p.fullmatch(key) for p in _NEUTRAL_PATTERNS)


def _derived_by_hf(hf_config: Any, key: str) -> bool:
    """Whether the config class recomputes ``key``'s value from the other fields."""
    data = hf_config.to_dict()
    value = data.pop(key)
    data.pop("model_type", None)
    try:
        rebuilt = type(hf_config)(**data)
    except Exception:  # noqa: BLE001 - cannot rebuild without it: it is not derived
        return False
    return getattr(rebuilt, key, _MISSING) == value


_MISSING = object()


def check_quantization(spec: ArchitectureSpec, quantization: Any) -> None:
    """Refuse a ``quantization_config`` whose tensors the loader cannot dequantise.

    The guard calls it with the config's own entry; config resolution also calls it with a
    multimodal wrapper's entry, which sits beside (not inside) the text sub-config that the guard
    sees.

    Args:
        spec: The architecture spec (named in the error).
        quantization: The ``quantization_config`` value (None or empty: not quantised).

    Raises:
        UnsupportedConfigError: If ``quant_method`` is not one tlcore dequantises, or an
            ``fp8`` config asks for a setting it does not (the field is named).

    Example:
        >>> from tlcore.registry import get_registry
        >>> check_quantization(get_registry().get_spec("llama"), None)
    """
    if not quantization:
        return
    if hasattr(quantization, "to_dict"):  # a transformers QuantizationConfigMixin
        quantization = quantization.to_dict()
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method == "fp8":
        try:
            fp8_format(quantization)
        except UnsupportedConfigError as exc:
            raise UnsupportedConfigError(f"architecture '{spec.name}': {exc}") from None
    elif method not in QUANTIZATION_METHODS_LOADED:
        raise UnsupportedConfigError(
            f"architecture '{spec.name}': the checkpoint is quantised with "
            f"quant_method={method!r}, which tlcore cannot dequantise (it reads "
            f"{', '.join(sorted(QUANTIZATION_METHODS_LOADED))} and unquantised weights); load a "
            f"full-precision copy of the checkpoint instead."
        )

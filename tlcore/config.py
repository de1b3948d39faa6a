"""``HookedTransformerConfig``: TransformerLens's config fields, from a spec + an HF config."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tlcore.errors import SpecError, UnsupportedConfigError
from tlcore.spec.expressions import evaluate
from tlcore.spec.loader import resolve_trait
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import SLOT_KINDS_FROM, SLOTS, Trait

# HF config fields that never change the forward computation.
HF_FIELDS_WITHOUT_EFFECT: frozenset[str] = frozenset(
    {
        "architectures",
        "model_type",
        "transformers_version",
        "_name_or_path",
        "name_or_path",
        "dtype",
        "torch_dtype",
        "use_cache",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "initializer_range",
        "init_std",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "tie_word_embeddings",
        "attention_dropout",
        "hidden_dropout",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "summary_type",
        "summary_use_proj",
        "summary_activation",
        "summary_proj_to_labels",
        "summary_first_dropout",
        "dropout",
        "activation_dropout",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "classifier_dropout",
        "id2label",
        "label2id",
        "problem_type",
        "task_specific_params",
        "tokenizer_class",
        "_attn_implementation",
        "_experts_implementation",
        "attn_implementation",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "is_decoder",
        "add_cross_attention",
        "pretraining_tp",
        "max_length",
        "router_aux_loss_coef",
        "output_router_logits",
        "router_jitter_noise",
        "layerdrop",
        "keys_to_ignore_at_inference",
        "quantization_config",
        "rope_scaling_validated",
        "bos_token",
        "eos_token",
        "ffn_dropout",
        "embedding_dropout",
        "residual_dropout",
        "n_positions_cached",
        "_commit_hash",
        "gradient_checkpointing",
        "use_return_dict",
        "tf_legacy_loss",
        "pruned_heads",
        "torchscript",
        "cross_attention_hidden_size",
        "finetuning_task",
        "prefix",
        "suffix",
        "_output_attentions",
        "image_token_index",
        "vocab_size_padded",
        "max_window_layers_ignored",
        "attention_bias_ignored",
        "dtype_",
        "use_bfloat16",
        "layer_norm_epsilon_ignored",
        "mlp_only_layers_ignored",
    }
)


@dataclass
class HookedTransformerConfig:
    """The model config, with TransformerLens's field names.

    Built by :func:`resolve_config` from an architecture spec and an HF config; the resolved traits
    (``traits``) define behaviour, and the flat fields mirror TransformerLens for user code.
    """

    d_model: int
    n_layers: int
    n_ctx: int
    d_head: int
    n_heads: int
    d_vocab: int
    d_mlp: int | None = None
    n_key_value_heads: int | None = None
    d_vocab_out: int = -1
    act_fn: str | None = None
    eps: float = 1e-5
    model_name: str = "custom"
    original_architecture: str | None = None
    spec_name: str | None = None
    normalization_type: str | None = "LN"
    final_rms: bool = False
    positional_embedding_type: str = "standard"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_adjacent_pairs: bool = False
    parallel_attn_mlp: bool = False
    gated_mlp: bool = False
    num_experts: int | None = None
    experts_per_token: int | None = None
    attn_only: bool = False
    use_attn_scale: bool = True
    attn_scale: float = -1.0
    scale_attn_by_inverse_layer_idx: bool = False
    attn_scores_soft_cap: float = -1.0
    output_logits_soft_cap: float = -1.0
    use_qk_norm: bool = False
    use_local_attn: bool = False
    window_size: int | None = None
    attn_types: list[str] | None = None
    use_normalization_before_and_after: bool = False
    post_embedding_ln: bool = False
    tie_word_embeddings: bool = False
    default_prepend_bos: bool = True
    default_padding_side: str = "right"
    tokenizer_name: str | None = None
    tokenizer_prepends_bos: bool | None = None
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_hook_mlp_in: bool = False
    use_attn_in: bool = False
    use_hook_tokens: bool = False
    ungroup_grouped_query_attention: bool = False
    dtype: torch.dtype = torch.float32
    device: str | None = None
    n_devices: int = 1
    seed: int | None = None
    # What from_pretrained applied (weight processing is visible, not silent).
    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False
    traits: dict[str, Trait] = field(default_factory=dict, repr=False)
    hf_config: Any = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads
        if self.d_vocab_out == -1:
            self.d_vocab_out = self.d_vocab
        if self.n_heads % self.n_key_value_heads:
            raise SpecError(
                f"n_heads ({self.n_heads}) must be a multiple of n_key_value_heads "
                f"({self.n_key_value_heads})"
            )
        if self.d_mlp is None and not self.attn_only:
            self.d_mlp = 4 * self.d_model
        if not self.traits:
            from tlcore.config_traits import traits_from_fields

            self.traits = traits_from_fields(self)

    @property
    def is_grouped(self) -> bool:
        """Whether keys/values have fewer heads than queries (GQA or MQA)."""
        return self.n_key_value_heads != self.n_heads

    def trait(self, slot: str) -> Trait:
        """Return the resolved trait of a slot (``final_norm`` falls back to ``norm``).

        Args:
            slot: The slot name.

        Returns:
            The trait.
        """
        if slot not in self.traits and slot in SLOT_KINDS_FROM:
            return self.traits[SLOT_KINDS_FROM[slot]]
        return self.traits[slot]

    def to_dict(self) -> dict[str, Any]:
        """Return the TransformerLens-named fields as plain data (traits as dicts).

        Returns:
            A JSON-friendly dict.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("hf_config",):
                continue
            value = getattr(self, f.name)
            if f.name == "traits":
                value = {k: t.model_dump(mode="json") for k, t in value.items()}
            elif isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            out[f.name] = value
        return out


class _RecordingMapping(Mapping[str, Any]):
    """A read-only mapping that records which keys were looked up (for the config guard)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


_CFG_FIELDS = {f.name for f in dataclasses.fields(HookedTransformerConfig)}


def resolve_config(
    spec: ArchitectureSpec, hf_config: Any, *, check_guard: bool = True, **overrides: Any
) -> HookedTransformerConfig:
    """Resolve a spec against an HF config into a :class:`HookedTransformerConfig`.

    Args:
        spec: The architecture spec.
        hf_config: An HF ``PretrainedConfig`` (or a plain dict of its fields).
        check_guard: Refuse HF fields with non-default values that the spec does not handle.
        **overrides: Config fields to set after resolution (``dtype``, ``n_ctx``, ...).

    Returns:
        The config.

    Raises:
        SpecError: If the spec cannot be resolved (missing fields, bad types).
        UnsupportedConfigError: If the guard finds an unhandled non-default HF field.
    """
    from tlcore.registry import get_registry

    registry = get_registry()
    hf_dict = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    hf = _RecordingMapping(hf_dict)
    where = spec.source_file or f"<spec {spec.name}>"
    values: dict[str, Any] = {}
    for key, expr in spec.config.items():
        values[key] = evaluate(expr, hf, values, f"{where}: config.{key}")
    traits: dict[str, Trait] = {}
    for slot in SLOTS:
        if slot in spec.traits:
            traits[slot] = resolve_trait(
                spec.traits[slot],
                SLOT_KINDS_FROM.get(slot, slot),
                registry.trait_model,
                hf,
                values,
                f"{where}: traits.{slot}",
            )
    for slot in SLOTS:
        if slot in traits:
            traits[slot].apply_to_cfg(values)
    unknown = set(values) - _CFG_FIELDS
    extra = {k: values.pop(k) for k in unknown}
    values.setdefault("original_architecture", (hf_dict.get("architectures") or [None])[0])
    values["spec_name"] = spec.name
    values.update(overrides)
    if check_guard:
        check_config_guard(spec, hf_config, hf.read)
    try:
        cfg = HookedTransformerConfig(**values, traits=traits, hf_config=hf_config, extra=extra)
    except TypeError as exc:
        raise SpecError(f"{where}: config: {exc}") from exc
    return cfg


def check_config_guard(spec: ArchitectureSpec, hf_config: Any, read: set[str]) -> None:
    """Refuse an HF config with non-default fields that the spec neither reads nor lists.

    Args:
        spec: The spec.
        hf_config: The HF config object (``to_diff_dict`` gives its non-default fields).
        read: HF fields the spec's expressions looked up.

    Raises:
        UnsupportedConfigError: Naming the fields.
    """
    values = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    for field_name, refused in spec.guard.unsupported.items():
        if field_name in values and values[field_name] in refused:
            raise UnsupportedConfigError(
                f"architecture '{spec.name}' does not support HF config "
                f"{field_name}={values[field_name]!r} ({spec.source_file or spec.name}: "
                f"guard.unsupported); loading it would build a different model than HF's."
            )
    if not hasattr(hf_config, "to_diff_dict"):
        return
    changed = set(hf_config.to_diff_dict())
    allowed = read | set(spec.guard.handled) | set(spec.guard.ignored) | HF_FIELDS_WITHOUT_EFFECT
    allowed |= set(spec.guard.unsupported)
    unhandled = sorted(k for k in changed - allowed if not k.startswith("_"))
    if unhandled:
        details = ", ".join(f"{k}={getattr(hf_config, k, '?')!r}" for k in unhandled)
        raise UnsupportedConfigError(
            f"architecture '{spec.name}' does not handle HF config field(s) set to non-default "
            f"values: {details}. tlcore refuses rather than build a model that silently computes "
            f"something else. If a field has no effect on the forward pass, add it to the spec's "
            f"guard.ignored list ({spec.source_file or spec.name}); otherwise the spec needs a "
            f"trait for it."
        )

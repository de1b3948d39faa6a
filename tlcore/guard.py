"""The config guard: refuse an HF config whose non-default fields the spec does not handle.

tlcore builds a model from the fields a spec reads; a field the spec does not read but HF's model
does would make tlcore silently compute something else. The guard refuses such configs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tlcore.errors import UnsupportedConfigError
from tlcore.spec.schema import ArchitectureSpec

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


class RecordingMapping(Mapping[str, Any]):
    """A read-only mapping that records which keys were looked up (for the config guard)."""

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

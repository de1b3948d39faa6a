"""``HookedTransformerConfig``: TransformerLens's config fields (resolution: config_resolution)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from tlcore.config_checks import check_config_values
from tlcore.config_traits import traits_from_fields
from tlcore.errors import SpecError
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait


@dataclass
class HookedTransformerConfig:
    """The model config, with TransformerLens's field names.

    Built by :func:`~tlcore.config_resolution.resolve_config` from an architecture spec and an HF
    config; the resolved traits (``traits``) define behaviour, and the flat fields mirror
    TransformerLens for user code.
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
    spec_source: str | None = None  # the plugin that registered the spec (and what it replaces)
    spec_file: str | None = None
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
        check_config_values(self)  # before any default is derived or anything allocated
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

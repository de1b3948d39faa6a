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
    Written by hand (no ``traits``), it takes every field of TransformerLens 2.x's config with the
    same defaults and derivations (:mod:`tlcore.config_fields`), and its traits come from those
    fields (:mod:`tlcore.config_traits`).

    Example:
        >>> cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16,
        ...                               act_fn="relu", d_vocab=100, device="cpu")
        >>> cfg.n_heads, cfg.d_mlp, cfg.d_vocab_out, cfg.n_params
        (4, 256, 100, 98304)
        >>> round(cfg.initializer_range, 4)  # 0.8 / sqrt(d_model), as TransformerLens
        0.1
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_head: int
    n_heads: int = -1
    d_vocab: int = -1
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
    # TransformerLens 2.x fields with no other home in tlcore: initialisation, checkpoint labels,
    # rotary variants, attention direction, and fields of TransformerLens's other model classes.
    from_checkpoint: bool = False
    checkpoint_index: int | None = None
    checkpoint_label_type: str | None = None
    checkpoint_value: int | None = None
    init_mode: str = "gpt2"
    initializer_range: float = -1.0
    init_weights: bool = True
    attention_dir: str = "causal"
    n_params: int | None = None
    rotary_base_local: float | None = None
    use_NTK_by_parts_rope: bool = False
    NTK_by_parts_low_freq_factor: float = 1.0
    NTK_by_parts_high_freq_factor: float = 4.0
    NTK_by_parts_factor: float = 8.0
    NTK_original_ctx_len: int = 8192
    trust_remote_code: bool = False
    load_in_4bit: bool = False
    relative_attention_max_distance: int | None = None
    relative_attention_num_buckets: int | None = None
    decoder_start_token_id: int | None = None
    # What from_pretrained applied (weight processing is visible, not silent).
    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False
    traits: dict[str, Trait] = field(default_factory=dict, repr=False)
    hf_config: Any = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    # Fields whose value __post_init__ derived rather than received (to_dict writes some as unset).
    _derived_fields: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from tlcore.config_fields import derive_fields, derive_unset_heads

        derive_unset_heads(self)  # TransformerLens's n_heads=-1, before the values are checked
        check_config_values(self)  # before any default is derived or anything allocated
        derive_fields(self, hand_written=not self.traits)
        if self.n_key_value_heads is None:
            self._derived_fields.add("n_key_value_heads")
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
            # Fields that need a trait tlcore lacks leave ``traits`` empty: building raises then.
            self.traits = traits_from_fields(self, strict=False)
        elif any(isinstance(t, dict) for t in self.traits.values()):  # from to_dict / from_dict
            from tlcore.config_traits import traits_from_dicts

            self.traits = traits_from_dicts(self.traits)
        if self.rotary_dim is None and isinstance(
            getattr(self.traits.get("positional"), "dim", None), int
        ):
            self.rotary_dim = self.traits["positional"].dim  # type: ignore[attr-defined]

    @classmethod
    def unwrap(cls, config: dict[str, Any] | HookedTransformerConfig) -> HookedTransformerConfig:
        """Return ``config`` itself, or a config built from it when it is a dict (TransformerLens).

        Args:
            config: A config or a dict of its fields.

        Returns:
            The config.
        """
        return cls.from_dict(config) if isinstance(config, dict) else config

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> HookedTransformerConfig:
        """Build a config from a dict of fields: TransformerLens's ``cfg.to_dict()`` or tlcore's.

        Args:
            config_dict: Field values; ``dtype`` may be a ``torch.dtype`` or its name, ``traits``
                trait objects or their dicts (as :meth:`to_dict` writes them).

        Returns:
            The config.
        """
        return cls(**config_dict)

    def set_seed_everywhere(self, seed: int) -> None:
        """Seed Python's ``random``, NumPy and torch (CPU and every GPU), as TransformerLens.

        Args:
            seed: The seed.
        """
        from tlcore.config_fields import set_seed_everywhere

        set_seed_everywhere(seed)

    def is_layer_norm_activation(self) -> bool:
        """Whether ``act_fn`` normalises inside the MLP (a ``*_ln`` name such as ``solu_ln``)."""
        return self.act_fn is not None and self.act_fn.endswith("_ln")

    def __repr__(self) -> str:
        import pprint

        shown = {k: v for k, v in self.to_dict().items() if k not in ("traits", "extra")}
        return "HookedTransformerConfig:\n" + pprint.pformat(shown)

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

        Raises:
            UnsupportedConfigError: For a hand-written config whose fields need a trait tlcore
                does not have yet (the message names the field).
        """
        if not self.traits:  # a hand-written config that needs a trait tlcore lacks: say which
            self.traits = traits_from_fields(self)
        if slot not in self.traits and slot in SLOT_KINDS_FROM:
            return self.traits[SLOT_KINDS_FROM[slot]]
        return self.traits[slot]

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain data: TransformerLens's 69 and tlcore's (traits as dicts).

        :meth:`from_dict` reads it back to an equal config, and a dict from TransformerLens's own
        ``cfg.to_dict()`` reads in the same way. ``n_key_value_heads`` is None when it was not set
        (TransformerLens's convention for one K/V head per query head).

        Returns:
            A JSON-friendly dict.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "hf_config" or f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if f.name in self._derived_fields and f.name == "n_key_value_heads":
                value = None  # TransformerLens's layout: None means one K/V head per query head
            elif f.name == "traits":
                value = {k: t.model_dump(mode="json") for k, t in value.items()}
            elif isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            out[f.name] = value
        return out

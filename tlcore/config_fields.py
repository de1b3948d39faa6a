"""TransformerLens 2.x's config fields: their names, defaults' derivations and checks.

``HookedTransformerConfig`` accepts every field of TransformerLens 2.x's config
(``transformer_lens/HookedTransformerConfig.py``, v2.18.0, the last 2.x release) and fills the
unset ones as TransformerLens's ``__post_init__`` does: ``n_heads=-1`` is ``d_model // d_head``,
``d_mlp`` is ``4 * d_model`` (none in an attention-only model), ``initializer_range`` is
``0.8 / sqrt(d_model)`` for ``init_mode="gpt2"`` (else 1.0, a gain), ``attn_scale`` is
``sqrt(d_head)``, ``rotary_dim`` is ``d_head``, ``d_vocab_out`` is ``d_vocab``, ``n_params`` counts
the hidden weights, ``device`` is the best available one, and ``seed`` seeds Python, NumPy and
torch.
``d_vocab=-1`` stays unset until a tokenizer gives it (:class:`tlcore.HookedTransformer`).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch

from tlcore.errors import InvalidConfigError

logger = logging.getLogger(__name__)

TRANSFORMER_LENS_CONFIG_FIELDS: tuple[str, ...] = (
    "n_layers",
    "d_model",
    "n_ctx",
    "d_head",
    "model_name",
    "n_heads",
    "d_mlp",
    "act_fn",
    "d_vocab",
    "eps",
    "use_attn_result",
    "use_attn_scale",
    "attn_scale",
    "use_split_qkv_input",
    "use_hook_mlp_in",
    "use_attn_in",
    "use_qk_norm",
    "use_local_attn",
    "ungroup_grouped_query_attention",
    "original_architecture",
    "from_checkpoint",
    "checkpoint_index",
    "checkpoint_label_type",
    "checkpoint_value",
    "tokenizer_name",
    "window_size",
    "attn_types",
    "init_mode",
    "normalization_type",
    "device",
    "n_devices",
    "attention_dir",
    "attn_only",
    "seed",
    "initializer_range",
    "init_weights",
    "scale_attn_by_inverse_layer_idx",
    "positional_embedding_type",
    "final_rms",
    "d_vocab_out",
    "parallel_attn_mlp",
    "rotary_dim",
    "n_params",
    "use_hook_tokens",
    "gated_mlp",
    "default_prepend_bos",
    "dtype",
    "tokenizer_prepends_bos",
    "n_key_value_heads",
    "post_embedding_ln",
    "rotary_base",
    "rotary_base_local",
    "trust_remote_code",
    "rotary_adjacent_pairs",
    "load_in_4bit",
    "num_experts",
    "experts_per_token",
    "relative_attention_max_distance",
    "relative_attention_num_buckets",
    "decoder_start_token_id",
    "tie_word_embeddings",
    "use_normalization_before_and_after",
    "attn_scores_soft_cap",
    "output_logits_soft_cap",
    "use_NTK_by_parts_rope",
    "NTK_by_parts_low_freq_factor",
    "NTK_by_parts_high_freq_factor",
    "NTK_by_parts_factor",
    "NTK_original_ctx_len",
)
"""The 69 fields of TransformerLens 2.18's ``HookedTransformerConfig``, in its order."""

INIT_MODES: tuple[str, ...] = (
    "gpt2",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "muP",
)
"""TransformerLens's ``init_mode`` values (:mod:`tlcore.init` implements each)."""

TRANSFORMER_LENS_ACTIVATIONS: tuple[str, ...] = (
    "solu",
    "solu_ln",
    "gelu_new",
    "gelu_fast",
    "silu",
    "relu",
    "gelu",
    "gelu_pytorch_tanh",
    "xielu",
)
"""TransformerLens 2.18's ``SUPPORTED_ACTIVATIONS`` (tlcore knows a few more names)."""


def set_seed_everywhere(seed: int) -> None:
    """Seed torch (CPU and every GPU), Python's ``random`` and NumPy, as TransformerLens does.

    Args:
        seed: The seed.

    Example:
        >>> set_seed_everywhere(0); a = torch.rand(1).item(); b = random.random()
        >>> set_seed_everywhere(0); (a, b) == (torch.rand(1).item(), random.random())
        True
    """
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def to_torch_dtype(dtype: Any) -> torch.dtype:
    """Read a dtype as configs store it: a ``torch.dtype``, ``"float32"`` or ``"torch.float32"``.

    Args:
        dtype: The value.

    Returns:
        The ``torch.dtype``.

    Raises:
        InvalidConfigError: For a name that is not a torch dtype.

    Example:
        >>> to_torch_dtype("torch.bfloat16"), to_torch_dtype("float16")
        (torch.bfloat16, torch.float16)
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise InvalidConfigError(
            f"dtype {dtype!r} is not a torch dtype (e.g. 'float32', 'bfloat16')"
        )
    return value


def derive_unset_heads(cfg: Any) -> None:
    """``n_heads=-1`` (TransformerLens's "unset") becomes ``d_model // d_head``.

    Runs before the config's values are checked (:func:`tlcore.config_checks.check_config_values`),
    which then see a real head count; invalid sizes are left for that check to name.

    Args:
        cfg: The config, mutated in place.
    """
    if cfg.n_heads != -1 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (cfg.d_model, cfg.d_head)
    ):
        return
    cfg.n_heads = cfg.d_model // cfg.d_head
    if cfg.d_model % cfg.d_head:
        logger.warning(
            "d_model %d is not divisible by d_head %d; n_heads was inferred to be %d, rounding "
            "down the ratio.",
            cfg.d_model,
            cfg.d_head,
            cfg.n_heads,
        )


def derive_fields(cfg: Any, *, hand_written: bool) -> None:
    """Fill and check the fields TransformerLens's ``__post_init__`` fills and checks.

    Args:
        cfg: The config, mutated in place.
        hand_written: The config has no resolved traits (written by hand or read from a
            TransformerLens dict); its ``act_fn`` is then required and checked and its ``device``
            defaults to the best available one. A config resolved from a spec gets those from the
            spec and ``from_pretrained``.

    Raises:
        InvalidConfigError: Naming the field, for values TransformerLens refuses.
    """
    cfg.dtype = to_torch_dtype(cfg.dtype)
    if cfg.seed is not None:
        set_seed_everywhere(cfg.seed)
    if cfg.use_local_attn and (cfg.window_size is None or cfg.attn_types is None):
        raise InvalidConfigError("use_local_attn needs window_size and attn_types (one per layer)")
    if not cfg.attn_only:
        if cfg.d_mlp is None:
            cfg.d_mlp = 4 * cfg.d_model
        if hand_written:
            _check_act_fn(cfg.act_fn)
    if cfg.init_mode not in INIT_MODES:
        raise InvalidConfigError(f"init_mode {cfg.init_mode!r}: expected one of {list(INIT_MODES)}")
    if cfg.initializer_range < 0:
        # gpt2: roughly GPT-2's 0.02, proportional to 1/sqrt(d_model); other modes: a gain of 1.
        cfg.initializer_range = 0.8 / math.sqrt(cfg.d_model) if cfg.init_mode == "gpt2" else 1.0
    if cfg.d_vocab_out == -1:
        cfg.d_vocab_out = cfg.d_vocab
    if (cfg.num_experts is None) != (cfg.experts_per_token is None):
        raise InvalidConfigError("num_experts and experts_per_token are set together or not at all")
    cfg.n_params = count_hidden_params(cfg)
    if cfg.device is None and hand_written:
        from tlcore.utils.tokenize import get_device

        cfg.device = str(get_device())
    if cfg.n_devices > 1 and torch.cuda.device_count() < cfg.n_devices:
        raise InvalidConfigError(
            f"n_devices={cfg.n_devices}: only {torch.cuda.device_count()} CUDA devices are visible"
        )
    if cfg.use_attn_scale and cfg.attn_scale == -1.0:
        cfg.attn_scale = math.sqrt(cfg.d_head)
    if cfg.default_prepend_bos not in (True, False):
        raise InvalidConfigError(
            f"default_prepend_bos must be True or False, got {cfg.default_prepend_bos}"
        )
    if cfg.attention_dir not in ("causal", "bidirectional"):
        raise InvalidConfigError(
            f"attention_dir {cfg.attention_dir!r}: expected 'causal' or 'bidirectional'"
        )


def count_hidden_params(cfg: Any) -> int:
    """TransformerLens's ``n_params``: attention and MLP weight matrices (no embeddings, biases).

    Attention counts ``W_Q, W_K, W_V, W_O`` at full width (``4 * d_model * d_head * n_heads`` per
    layer, whatever ``n_key_value_heads`` is, as TransformerLens counts); an MLP counts ``W_in``,
    ``W_out`` and ``W_gate`` when gated; a mixture of experts counts each expert and its router
    row.

    Args:
        cfg: The config.

    Returns:
        The count.
    """
    n = cfg.n_layers * (cfg.d_model * cfg.d_head * cfg.n_heads * 4)
    if not cfg.attn_only:
        assert cfg.d_mlp is not None
        per_layer = cfg.d_model * cfg.d_mlp * (2 + cfg.gated_mlp)
        if cfg.num_experts:
            per_layer = (per_layer + cfg.d_model) * cfg.num_experts
        n += cfg.n_layers * per_layer
    return n


def _check_act_fn(act_fn: str | None) -> None:
    from tlcore.components.activations import ACTIVATIONS

    if act_fn is None:
        raise InvalidConfigError("act_fn must be set for a model with MLPs (attn_only=False)")
    known = set(ACTIVATIONS) | set(TRANSFORMER_LENS_ACTIVATIONS)
    if act_fn not in known:
        raise InvalidConfigError(f"act_fn {act_fn!r}: expected one of {sorted(known)}")


def vocab_size_from_tokenizer(tokenizer: Any) -> int:
    """TransformerLens's ``d_vocab`` for a tokenizer: its largest token id plus one.

    Args:
        tokenizer: A transformers tokenizer.

    Returns:
        The vocabulary size (added tokens included).
    """
    return max(tokenizer.get_vocab().values()) + 1


def tokenizer_for_config(cfg: Any, tokenizer: Any = None) -> Any:
    """The tokenizer a new model gets, and ``d_vocab=-1`` filled from it, as TransformerLens.

    A tokenizer passed in wins; otherwise ``cfg.tokenizer_name`` (a local folder or a hub id) is
    loaded with ``AutoTokenizer`` (``trust_remote_code`` from the config).

    Args:
        cfg: The config; ``d_vocab`` and ``d_vocab_out`` are set in place when they are -1.
        tokenizer: A tokenizer, or None.

    Returns:
        The tokenizer, or None when there is none.

    Raises:
        InvalidConfigError: If ``d_vocab`` is -1 and no tokenizer gives it.
    """
    if tokenizer is None and cfg.tokenizer_name is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                cfg.tokenizer_name, trust_remote_code=cfg.trust_remote_code
            )
        except Exception as exc:  # noqa: BLE001 - a model runs on token ids without one
            if cfg.d_vocab == -1:
                raise InvalidConfigError(
                    f"d_vocab=-1 and tokenizer_name {cfg.tokenizer_name!r} does not load: {exc}"
                ) from exc
            logger.warning("could not load the tokenizer %r: %s", cfg.tokenizer_name, exc)
    if cfg.d_vocab == -1:
        if tokenizer is None:
            raise InvalidConfigError(
                "d_vocab=-1 (unset) needs a tokenizer: pass tokenizer=, set tokenizer_name, or "
                "set d_vocab"
            )
        cfg.d_vocab = vocab_size_from_tokenizer(tokenizer)
        if cfg.d_vocab_out == -1:
            cfg.d_vocab_out = cfg.d_vocab
    return tokenizer

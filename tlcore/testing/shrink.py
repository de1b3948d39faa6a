"""Shrink a real checkpoint's ``config.json`` to a tiny model with the same structure.

A real config is a fact about a real model; its tiny copy keeps every field that selects behaviour
(norm and activation kinds, rotary type and scaling, biases, layouts, soft-caps, per-layer types,
query/key-value head grouping, head width) and only makes the model small: fewer layers (enough to
show every kind of layer), fewer heads (same grouping), fewer experts, a small vocabulary and
feed-forward width, and sliding windows short enough for a 12-token batch to cross them. HF then
builds the tiny model from the shrunken dict exactly as it would the real one, deriving whatever it
derives.

The head width stays, because rotary dimensions (``rotary_dim``, long-rope factor lists) are sized
by it; the residual width becomes ``n_heads × head_dim`` scaled by the real ratio between them.
"""

from __future__ import annotations

import math
from typing import Any

TINY_VOCAB = 512
TINY_WINDOW = 5
MAX_LAYERS = 6
MAX_EXPERTS = 4
MAX_ROUTED_SCALING = 2.5
TINY_SSM_WIDTH = 64

# Field names per canonical quantity, as real configs spell them.
_HIDDEN = ("hidden_size", "n_embd", "n_embed", "d_model")
_HEADS = ("num_attention_heads", "n_head", "num_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_FFN = ("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim")
_EXPERT_FFN = ("moe_intermediate_size", "shared_expert_intermediate_size")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_TOP_K = ("num_experts_per_tok", "experts_per_token", "num_experts_per_token")
_EXPERT_GROUPS = ("n_group", "num_expert_group")
_WINDOWS = ("sliding_window", "window_size", "sliding_window_size", "attention_chunk_size")
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def _first(data: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(data.get(n), int)), None)


def shrink_config_dict(data: dict[str, Any], model_type: str | None = None) -> dict[str, Any]:
    """Return a tiny copy of a real ``config.json`` dict with the same structure.

    Args:
        data: The real config dict (as in ``config.json``; not modified).
        model_type: Its model type (default: ``data["model_type"]``), for families whose fields
            need care (GPT-Neo's ``attention_types``).

    Returns:
        The shrunken dict, ready for ``AutoConfig.for_model(model_type, **d)``.

    Raises:
        ValueError: If the dict has no recognisable width, heads or layer count.

    Example:
        >>> real = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
        ...         "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 14336,
        ...         "vocab_size": 128256, "rms_norm_eps": 1e-5}
        >>> tiny = shrink_config_dict(real)
        >>> [tiny[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
        ...                    "num_hidden_layers", "vocab_size", "rms_norm_eps")]
        [512, 4, 2, 2, 512, 1e-05]
    """
    model_type = model_type or data.get("model_type")
    text = data.get("text_config")
    if isinstance(text, dict):
        wrapper = _shrink_wrapper(data, text)
        if _first(data, _HIDDEN) is None:
            return wrapper
        # transformers 4.5x wrote both layouts (flat text fields and a text_config); shrink both
        # the same way, or the tower transformers reads stays full size.
        towers = ("text_config", "vision_config")
        flat = shrink_config_dict({k: v for k, v in data.items() if k not in towers}, model_type)
        return {**flat, **{k: wrapper[k] for k in towers if k in wrapper}}
    out = dict(data)
    hidden_key, heads_key = _first(data, _HIDDEN), _first(data, _HEADS)
    layers_key = _first(data, _LAYERS)
    if hidden_key is None or layers_key is None:
        raise ValueError("config has no recognisable hidden size or layer count")
    hidden, layers = data[hidden_key], data[layers_key]
    if heads_key is None:  # no attention (Mamba): only the width shrinks
        if not isinstance(data.get("state_size"), int):
            raise ValueError("config has no recognisable head count")
        new_hidden, new_heads = TINY_SSM_WIDTH, 1
        out[hidden_key] = new_hidden
    else:
        new_hidden, new_heads = _shrink_heads(out, data, heads_key, hidden)
    _shrink_mixer_fields(out, data, new_hidden, new_heads)

    new_layers = _layers_needed(data, layers)
    out[layers_key] = new_layers
    _shrink_per_layer_fields(out, data, layers, new_layers, model_type)

    for key in _FFN + _EXPERT_FFN:
        if isinstance(data.get(key), int) and data[key] > 0:
            out[key] = 2 * new_hidden if key in _FFN else new_hidden
    if isinstance(data.get("n_inner"), int):
        out["n_inner"] = 2 * new_hidden
    experts_key = _first(data, _EXPERTS)
    if experts_key is not None:
        out[experts_key] = min(data[experts_key], MAX_EXPERTS)
        _shrink_expert_groups(out, data, experts_key)
        for key in _TOP_K:
            if isinstance(data.get(key), int):
                out[key] = min(data[key], out[experts_key], 2)
    scaling = data.get("routed_scaling_factor")
    if isinstance(scaling, (int, float)) and scaling > MAX_ROUTED_SCALING:
        # With random weights DeepSeek-V2's 16.0 inflates the residual stream to ~1e2, where fp32
        # noise passes the absolute tolerance; any factor != 1 still exercises the scaling.
        out["routed_scaling_factor"] = MAX_ROUTED_SCALING
    dense = data.get("first_k_dense_replace")
    if isinstance(dense, int) and dense >= new_layers:  # keep one MoE layer (DeepSeek)
        out["first_k_dense_replace"] = new_layers - 1

    out["vocab_size"] = TINY_VOCAB
    for key in _TOKEN_IDS:
        if isinstance(data.get(key), int) and data[key] >= TINY_VOCAB:
            out[key] = TINY_VOCAB - 1 - _TOKEN_IDS.index(key)
        elif isinstance(data.get(key), list):
            out[key] = [t if t < TINY_VOCAB else TINY_VOCAB - 1 for t in data[key]]
    for key in _WINDOWS:
        if isinstance(data.get(key), int) and data[key] > TINY_WINDOW:
            out[key] = TINY_WINDOW
    if isinstance(data.get("vision_config"), dict):  # a wrapper with the text fields at the top
        out["vision_config"] = _shrink_vision(data["vision_config"], new_hidden)
    return out


def _with_class_defaults(sub: dict[str, Any]) -> dict[str, Any]:
    """A nested config with its class's dimensions filled in where it leaves them out.

    LLaVA's ``text_config`` states only what differs from ``LlamaConfig``; Gemma 3's states its
    width and depth but not its heads. A quantity the sub-config leaves out takes the class
    default (the key-value heads come with the heads, since a class derives its default from its
    own head count); every field it does state stays as written.
    """
    if "model_type" not in sub:
        return sub
    if _first(sub, _HIDDEN) is None:
        groups = [_HIDDEN, _HEADS, _KV_HEADS, _LAYERS, _FFN]
    else:
        groups = [g for g in (_HEADS, _LAYERS, _FFN) if _first(sub, g) is None]
        if _HEADS in groups:
            groups.append(_KV_HEADS)
    if not groups:
        return sub
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(sub["model_type"]).to_dict()
    dims = {key for group in groups for key in group}
    return {**{k: v for k, v in defaults.items() if k in dims and v is not None}, **sub}


def _shrink_wrapper(data: dict[str, Any], text: dict[str, Any]) -> dict[str, Any]:
    """A multimodal wrapper (``text_config`` + ``vision_config``): both towers made tiny."""
    out = dict(data)
    out["text_config"] = shrink_config_dict(_with_class_defaults(text))
    hidden = out["text_config"][_first(out["text_config"], _HIDDEN) or "hidden_size"]
    if isinstance(data.get("vision_config"), dict):
        out["vision_config"] = _shrink_vision(data["vision_config"], hidden)
    if isinstance(data.get("vocab_size"), int):
        out["vocab_size"] = TINY_VOCAB
    return out


def _shrink_vision(vision: dict[str, Any], text_hidden: int) -> dict[str, Any]:
    """A one-block vision tower, 32 wide (text-only prompts never run it; it must only build)."""
    out = dict(vision)
    if "embed_dim" in vision:  # Qwen2-VL: embed_dim is the width, hidden_size the LM's
        out["embed_dim"], out["hidden_size"] = 32, text_hidden
    elif "hidden_size" in vision:
        out["hidden_size"] = 32
    if "out_hidden_size" in vision:  # Qwen2.5-VL's merger writes the LM's width
        out["out_hidden_size"] = text_hidden
    for key in ("num_attention_heads", "num_heads"):
        if key in vision:
            out[key] = 2
    if "head_dim" in vision:
        out["head_dim"] = 16
    for key in ("num_hidden_layers", "depth"):
        if key in vision:
            out[key] = 1
    if "fullatt_block_indexes" in vision:
        out["fullatt_block_indexes"] = [0]
    if "intermediate_size" in vision:
        out["intermediate_size"] = 64
    return out


def _shrink_expert_groups(out: dict[str, Any], data: dict[str, Any], experts_key: str) -> None:
    """Group-limited routing (DeepSeek): 2 groups of 2 experts, fewer groups kept than exist."""
    groups_key = _first(data, _EXPERT_GROUPS)
    if groups_key is None or data[groups_key] <= 1:
        return
    out[groups_key] = 2
    out[experts_key] = 4
    if isinstance(data.get("topk_group"), int):
        out["topk_group"] = 1 if data["topk_group"] < data[groups_key] else 2


def _shrink_heads(
    out: dict[str, Any], data: dict[str, Any], heads_key: str, hidden: int
) -> tuple[int, int]:
    """Fewer attention heads (same grouping and head width); returns ``(new_hidden, new_heads)``."""
    heads = data[heads_key]
    kv_key = _first(data, _KV_HEADS)
    kv = data[kv_key] if kv_key is not None else heads
    if data.get("multi_query") and not data.get("new_decoder_architecture"):
        kv = 1  # Falcon-7B: one key/value head, implied by multi_query
    new_kv = 1 if kv == 1 else min(kv, 2)
    new_heads = new_kv * (1 if kv == heads else 2)
    if kv_key is not None:
        out[kv_key] = new_kv
    out[heads_key] = new_heads
    head_dim = data.get("head_dim") or hidden // heads
    width_ratio = hidden / (heads * head_dim)
    new_hidden = int(round(new_heads * head_dim * width_ratio / 16)) * 16 or 16
    out[_first(data, _HIDDEN) or "hidden_size"] = new_hidden
    if "word_embed_proj_dim" in data:  # OPT-350m projects a narrower embedding in and out
        out["word_embed_proj_dim"] = max(16, new_hidden * data["word_embed_proj_dim"] // hidden)
    return new_hidden, new_heads


def _shrink_mixer_fields(
    out: dict[str, Any], data: dict[str, Any], new_hidden: int, new_heads: int
) -> None:
    """Sequence-mixer sizes other than attention heads (state-space and linear attention)."""
    if isinstance(data.get("time_step_rank"), int):  # Mamba's dt rank ("auto": ceil(width / 16))
        out["time_step_rank"] = math.ceil(new_hidden / 16)
    if isinstance(data.get("n_groups"), int):  # Mamba-2: B/C groups must divide the heads
        out["n_groups"] = math.gcd(data["n_groups"], new_heads)
    k_heads, v_heads = data.get("linear_num_key_heads"), data.get("linear_num_value_heads")
    if isinstance(k_heads, int) and isinstance(v_heads, int):  # Gated DeltaNet
        out["linear_num_key_heads"] = min(k_heads, 2)
        out["linear_num_value_heads"] = out["linear_num_key_heads"] * (v_heads // k_heads)


def _layers_needed(data: dict[str, Any], layers: int) -> int:
    """Enough layers to show each kind of layer once (Gemma 3: five sliding, then one global)."""
    kinds = data.get("layer_types")
    if isinstance(kinds, list) and kinds:
        seen: list[Any] = []
        for index, kind in enumerate(kinds):
            if kind not in seen:
                seen.append(kind)
                needed = index + 1
        return min(layers, max(2, needed), MAX_LAYERS)
    pattern = (
        data.get("sliding_window_pattern")
        or data.get("_sliding_window_pattern")
        or data.get("full_attention_interval")  # Qwen3-Next: the last of each group is full
    )
    if isinstance(pattern, int) and pattern > 1:
        return min(layers, pattern, MAX_LAYERS)
    return min(layers, 2)


def _shrink_per_layer_fields(
    out: dict[str, Any],
    data: dict[str, Any],
    layers: int,
    new_layers: int,
    model_type: str | None,
) -> None:
    for key, value in data.items():
        if isinstance(value, list) and len(value) == layers and layers > 1:
            out[key] = value[:new_layers]
    if model_type == "gpt_neo" and isinstance(data.get("attention_types"), list):
        # [[["global", "local"], 12]] → the same pattern, repeated to new_layers.
        pattern = data["attention_types"][0][0]
        out["attention_types"] = [[pattern, math.ceil(new_layers / len(pattern))]]
        out["num_layers"] = len(pattern) * math.ceil(new_layers / len(pattern))
        out.pop("attention_layers", None)
    if isinstance(data.get("max_window_layers"), int):
        out["max_window_layers"] = min(data["max_window_layers"], new_layers // 2)
    for key in ("mlp_only_layers",):
        if isinstance(data.get(key), list):
            out[key] = [i for i in data[key] if i < new_layers]


EMBEDDING_SCALE = 0.05
"""Token embeddings and the unembedding are drawn at this scale (real checkpoints: 0.02–0.05), so
tiny models' logits have real magnitudes (|logit| ≲ 30) instead of the hundreds that unit-variance
vocabulary matrices give under Gemma's √d_model embedding scale; fp32 noise then stays far below
the 1e-4 parity tolerance, which a mapping bug exceeds by orders of magnitude."""


def build_shrunken_hf_model(data: dict[str, Any], attn_implementation: str = "eager") -> Any:
    """Build HF's own model for the shrunken copy of a real config, seed-filled, in eval mode.

    Args:
        data: The real ``config.json`` dict.
        attn_implementation: HF attention implementation of the reference.

    Returns:
        A transformers ``PreTrainedModel`` (fp32).
    """
    import torch

    from tlcore.loading.resolve import hf_config_object
    from tlcore.testing.tiny import fill_seeded_, hf_model_from_config

    config = hf_config_object(shrink_config_dict(data))
    model = hf_model_from_config(
        config, attn_implementation=attn_implementation, dtype=torch.float32
    )
    fill_seeded_(model)
    vocab_matrices = {id(m.weight) for m in (model.get_input_embeddings(),) if m is not None}
    output = model.get_output_embeddings()
    if output is not None:
        vocab_matrices.add(id(output.weight))
    with torch.no_grad():
        for param in model.parameters():  # tied matrices are one parameter: scaled once
            if id(param) in vocab_matrices:
                param.mul_(EMBEDDING_SCALE)
    return model.eval()

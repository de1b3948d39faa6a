"""How llama.cpp architectures map onto HF ones, as data: tensor names, config keys, constants.

:class:`~tlcore.loading.gguf_source.GGUFSource` reads a GGUF file through these tables; adding an
architecture means adding a table, not code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GGUFArchitecture:
    """How one llama.cpp architecture maps onto an HF one.

    Attributes:
        hf_model_type: HF ``model_type``.
        hf_architecture: HF model class name for ``architectures``.
        tensor_names: llama.cpp tensor name template → HF state-dict name template, both without
            the ``.weight``/``.bias`` suffix; ``{i}`` is the layer index.
        rotary_permuted: llama.cpp templates whose rows llama.cpp reordered for its rotary layout →
            the HF config field holding how many heads those rows form.
        config_fields: GGUF metadata key (after the ``<architecture>.`` prefix) → HF config field.
        config_defaults: HF config fields llama.cpp leaves out when they hold its default.
        hf_constants: HF config fields that are fixed for this architecture.
    """

    hf_model_type: str
    hf_architecture: str
    tensor_names: dict[str, str]
    rotary_permuted: dict[str, str]
    config_fields: dict[str, str]
    config_defaults: dict[str, Any] = field(default_factory=dict)
    hf_constants: dict[str, Any] = field(default_factory=dict)


LLAMA = GGUFArchitecture(
    hf_model_type="llama",
    hf_architecture="LlamaForCausalLM",
    tensor_names={
        "token_embd": "model.embed_tokens",
        "blk.{i}.attn_norm": "model.layers.{i}.input_layernorm",
        "blk.{i}.attn_q": "model.layers.{i}.self_attn.q_proj",
        "blk.{i}.attn_k": "model.layers.{i}.self_attn.k_proj",
        "blk.{i}.attn_v": "model.layers.{i}.self_attn.v_proj",
        "blk.{i}.attn_output": "model.layers.{i}.self_attn.o_proj",
        "blk.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
        "blk.{i}.ffn_gate": "model.layers.{i}.mlp.gate_proj",
        "blk.{i}.ffn_up": "model.layers.{i}.mlp.up_proj",
        "blk.{i}.ffn_down": "model.layers.{i}.mlp.down_proj",
        "output_norm": "model.norm",
        "output": "lm_head",
    },
    rotary_permuted={
        "blk.{i}.attn_q": "num_attention_heads",
        "blk.{i}.attn_k": "num_key_value_heads",
    },
    config_fields={
        "embedding_length": "hidden_size",
        "feed_forward_length": "intermediate_size",
        "block_count": "num_hidden_layers",
        "attention.head_count": "num_attention_heads",
        "attention.head_count_kv": "num_key_value_heads",
        "attention.key_length": "head_dim",
        "attention.layer_norm_rms_epsilon": "rms_norm_eps",
        "rope.freq_base": "rope_theta",
        "context_length": "max_position_embeddings",
        "vocab_size": "vocab_size",
    },
    # llama.cpp's own defaults when a key is absent (llama-model.cpp).
    config_defaults={"rope_theta": 10000.0},
    hf_constants={"hidden_act": "silu", "dtype": "float32"},
)

#: llama.cpp ``general.architecture`` → its mapping onto HF.
GGUF_ARCHITECTURES: dict[str, GGUFArchitecture] = {"llama": LLAMA}

# tokenizer.ggml.* metadata key → HF config field.
SPECIAL_TOKEN_FIELDS = {
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "padding_token_id": "pad_token_id",
}

REQUIRED_CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "rms_norm_eps",
    "max_position_embeddings",
)

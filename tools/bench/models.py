"""The benchmark models (random weights): GPT-2-small-sized, a Llama-GQA of similar size, and a
Qwen3-MoE (8 experts, top-2) for the processed-load rows (``tasks``: the measurements a model is
in; TransformerLens 3.9 has no converter for it, so its ``tl`` config is absent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

BENCH_MODELS: dict[str, dict[str, Any]] = {
    "gpt2-small-random": {
        "model_type": "gpt2",
        "config": {
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "vocab_size": 50257,
            "n_positions": 1024,
        },
        "tl": {
            "d_model": 768,
            "n_layers": 12,
            "n_heads": 12,
            "d_head": 64,
            "d_mlp": 3072,
            "d_vocab": 50257,
            "n_ctx": 1024,
            "act_fn": "gelu_new",
            "normalization_type": "LN",
        },
    },
    "llama-gqa-random": {
        "model_type": "llama",
        "config": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 4,
            "intermediate_size": 2048,
            "vocab_size": 32000,
            "max_position_embeddings": 2048,
        },
        "tl": {
            "d_model": 768,
            "n_layers": 12,
            "n_heads": 12,
            "n_key_value_heads": 4,
            "d_head": 64,
            "d_mlp": 2048,
            "d_vocab": 32000,
            "n_ctx": 2048,
            "act_fn": "silu",
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_dim": 64,
            "gated_mlp": True,
            "final_rms": True,
        },
    },
    "qwen3-moe-random": {
        "model_type": "qwen3_moe",
        "config": {
            "hidden_size": 512,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 64,
            "intermediate_size": 1024,
            "moe_intermediate_size": 512,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "vocab_size": 32000,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
        "tasks": ["load"],
    },
}


def model_tasks(name: str, requested: list[str]) -> list[str]:
    """The requested measurements that ``name`` takes part in (all, unless it lists ``tasks``)."""
    allowed = BENCH_MODELS[name].get("tasks")
    return [t for t in requested if allowed is None or t in allowed]


def cache_root() -> Path:
    """Where benchmark checkpoints live (outside the repository)."""
    root = Path(os.environ.get("TLCORE_BENCH_DIR", Path.home() / ".cache" / "tlcore-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def checkpoint(name: str) -> Path:
    """Write (once) and return the random-weight checkpoint folder of a benchmark model."""
    folder = cache_root() / name
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = BENCH_MODELS[name]
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = AutoConfig.for_model(spec["model_type"], **spec["config"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(folder)
    word_tokenizer(int(spec["config"]["vocab_size"])).save_pretrained(folder)
    return folder


def word_tokenizer(vocab_size: int) -> Any:
    """An offline tokenizer covering the vocabulary: ``"t17"`` is token 17 (0 pads, 1 is BOS/EOS).

    Random-weight models need no real tokenizer, but TransformerLens's bridge and the text paths
    want one; this one is built locally, never downloaded.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="t2"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="t0", bos_token="t1", eos_token="t1", unk_token="t2"
    )


def weight_bytes(folder: Path) -> int:
    """Bytes of the checkpoint's weight files."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))

"""A random Llama checkpoint of a chosen size, written tensor by tensor (memory tests)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_random_llama(folder: Path, layers: int = 12, tied: bool = False) -> float:
    """Write a random Llama-GQA checkpoint (d_model 512, about 14 MB a layer, fp32).

    Memory tests need a checkpoint big enough to measure and quick to write: 12 layers make
    about 170 MB. Norm weights are not 1 and the embedding is not small, so processing changes
    every weight.

    Args:
        folder: Where to write ``config.json`` and ``model.safetensors``.
        layers: Number of blocks.
        tied: Tie the unembedding to the embedding (no ``lm_head.weight`` is written).

    Returns:
        The size of ``model.safetensors`` in MB.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    d, mlp, vocab = 512, 1536, 8000
    AutoConfig.for_model(
        "llama",
        hidden_size=d,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=mlp,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    ).save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * 0.05

    state = {
        "model.embed_tokens.weight": rand(vocab, d) * 20,
        "model.norm.weight": 1 + rand(d),
    }
    if not tied:
        state["lm_head.weight"] = rand(vocab, d)
    for i in range(layers):
        p = f"model.layers.{i}."
        state.update(
            {
                p + "self_attn.q_proj.weight": rand(d, d),
                p + "self_attn.k_proj.weight": rand(128, d),
                p + "self_attn.v_proj.weight": rand(128, d),
                p + "self_attn.o_proj.weight": rand(d, d),
                p + "mlp.gate_proj.weight": rand(mlp, d),
                p + "mlp.up_proj.weight": rand(mlp, d),
                p + "mlp.down_proj.weight": rand(d, mlp),
                p + "input_layernorm.weight": 1 + rand(d),
                p + "post_attention_layernorm.weight": 1 + rand(d),
            }
        )
    save_file(state, folder / "model.safetensors")
    return (folder / "model.safetensors").stat().st_size / 2**20

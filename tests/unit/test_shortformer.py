"""The shortformer position trait against an independent reference computation.

No HF architecture uses shortformer positions, so the reference is written here from the definition
(TransformerLens's convention): learned positional embeddings are added to the normalised query and
key inputs of every attention layer, never to values or the residual stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tlcore.config_resolution import resolve_config
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec
from tlcore.testing.tiny import tiny_hf_config


def shortformer_model() -> HookedTransformer:
    gpt2 = get_registry().get_spec("gpt2")
    traits = dict(gpt2.traits)
    traits["positional"] = {"kind": "shortformer"}
    spec = ArchitectureSpec.model_validate(
        {**gpt2.model_dump(by_alias=True), "name": "gpt2_shortformer", "traits": traits}
    )
    cfg = resolve_config(spec, tiny_hf_config(gpt2))
    model = HookedTransformer(cfg)
    model.init_weights(seed=3)
    with torch.no_grad():
        for name, param in model.named_parameters():  # make biases and norms non-trivial
            if name.endswith((".b", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out")):
                param.normal_(0, 0.1)
            elif name.endswith(".w"):
                param.normal_(1, 0.2)
        model.pos_embed.W_pos.normal_(0, 0.5)
    return model.optimize_layout_()


def reference_forward(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    cfg = model.cfg
    pos = model.pos_embed.W_pos[: tokens.shape[1]]
    x = model.embed.W_E[tokens]  # no positions in the residual stream
    n = tokens.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for block in model.blocks:
        a = F.layer_norm(x, (cfg.d_model,), block.ln1.w, block.ln1.b, cfg.eps)
        qk_in = a + pos
        attn = block.attn
        q = torch.einsum("bpm,hmd->bphd", qk_in, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpm,hmd->bphd", qk_in, attn.W_K) + attn.b_K
        v = torch.einsum("bpm,hmd->bphd", a, attn.W_V) + attn.b_V
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.d_head)
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        x = x + torch.einsum("bqhd,hdm->bqm", z, attn.W_O) + attn.b_O
        m = F.layer_norm(x, (cfg.d_model,), block.ln2.w, block.ln2.b, cfg.eps)
        mlp = block.mlp
        x = x + mlp.act_fn(m @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    x = F.layer_norm(x, (cfg.d_model,), model.ln_final.w, model.ln_final.b, cfg.eps)
    return x @ model.unembed.W_U + model.unembed.b_U


def test_shortformer_matches_reference() -> None:
    model = shortformer_model()
    assert model.cfg.positional_embedding_type == "shortformer"
    tokens = torch.randint(
        0, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ours = model(tokens)
        ref = reference_forward(model, tokens)
        _, cache = model.run_with_cache(tokens)
    assert (ours - ref).abs().max() < 1e-4
    # The residual stream carries no positions: resid_pre of layer 0 is the token embedding alone.
    assert torch.equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"])
    assert cache["hook_pos_embed"].shape == (2, 10, model.cfg.d_model)


def test_shortformer_differs_from_learned_absolute() -> None:
    model = shortformer_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        shortformer = model(tokens)
        model.pos_embed.adds_to_residual, model.pos_embed.adds_to_qk_input = True, False
        absolute = model(tokens)
    assert (shortformer - absolute).abs().max() > 1e-2

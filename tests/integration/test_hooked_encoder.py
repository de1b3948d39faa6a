"""HookedEncoder (BERT) against HF's BertForMaskedLM / BertModel, and TransformerLens 2.x's names.

Tiny random checkpoints go through ``save_pretrained`` and tlcore's real loader. The expected hook
and parameter names are TransformerLens 2.x's (``HookedEncoder``, ``BertBlock``, ``BertEmbed``,
``convert_bert_weights``), written out here from its source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tlcore import HookedTransformer
from tlcore.errors import InputValidationError, UnknownArchitectureError
from tlcore.hooked_encoder import HookedEncoder

N_LAYERS = 2


def _bert_config(**overrides):
    from transformers import BertConfig

    fields = dict(
        hidden_size=64, num_hidden_layers=N_LAYERS, num_attention_heads=4, intermediate_size=128,
        vocab_size=512, max_position_embeddings=64, type_vocab_size=2,
    )  # fmt: skip
    return BertConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def mlm(tmp_path_factory: pytest.TempPathFactory):
    """A tiny BertForMaskedLM (non-trivial norms and biases) and tlcore's load of it."""
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    hf = BertForMaskedLM(_bert_config()).eval()
    with torch.no_grad():  # HF initialises norms to identity and biases to zero: perturb them
        for name, param in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    folder = tmp_path_factory.mktemp("bert-mlm")
    hf.save_pretrained(folder)
    return hf, HookedEncoder.from_pretrained(str(folder), device="cpu")


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    tokens = torch.randint(0, 512, (2, 11))
    types = torch.cat([torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)], 1)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    return tokens, types, mask


def test_mlm_logits_and_every_layer_match_hf(mlm, batch):
    hf, model = mlm
    tokens, types, mask = batch
    with torch.no_grad():
        out = hf(
            input_ids=tokens, token_type_ids=types, attention_mask=mask, output_hidden_states=True
        )
        logits, cache = model.run_with_cache(
            tokens, token_type_ids=types, one_zero_attention_mask=mask
        )
    assert model.cfg.spec_name == "bert"
    assert (logits - out.logits).abs().max() < 1e-4
    assert (cache["hook_full_embed"] - out.hidden_states[0]).abs().max() < 1e-4
    for layer in range(N_LAYERS):
        ours = cache[f"blocks.{layer}.hook_normalized_resid_post"]
        assert (ours - out.hidden_states[layer + 1]).abs().max() < 1e-4, layer
    with pytest.raises(AssertionError):  # token types matter: dropping them changes the output
        torch.testing.assert_close(model(tokens, one_zero_attention_mask=mask), logits)


# TransformerLens 2.x's HookedEncoder hook points (BertEmbed, BertBlock, LayerNorm, Attention,
# MLP), for a model without split-qkv/attn-result flags.
TL_HOOKS = {
    "hook_full_embed", "embed.hook_embed", "embed.hook_pos_embed", "embed.hook_token_type_embed",
    "embed.ln.hook_scale", "embed.ln.hook_normalized", "mlm_head.ln.hook_scale",
    "mlm_head.ln.hook_normalized",
} | {
    f"blocks.{i}.{name}"
    for i in range(N_LAYERS)
    for name in (
        "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_normalized_resid_post",
        "hook_attn_out", "hook_mlp_out", "hook_mlp_in", "hook_q_input", "hook_k_input",
        "hook_v_input", "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale",
        "ln2.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
        "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_result", "mlp.hook_pre",
        "mlp.hook_post",
    )
}  # fmt: skip

# The state-dict names of TransformerLens's convert_bert_weights (BertForMaskedLM part).
TL_PARAMS = {
    "embed.embed.W_E", "embed.pos_embed.W_pos", "embed.token_type_embed.W_token_type",
    "embed.ln.w", "embed.ln.b", "mlm_head.W", "mlm_head.b", "mlm_head.ln.w", "mlm_head.ln.b",
    "unembed.W_U", "unembed.b_U",
} | {
    f"blocks.{i}.{name}"
    for i in range(N_LAYERS)
    for name in (
        "attn.W_Q", "attn.b_Q", "attn.W_K", "attn.b_K", "attn.W_V", "attn.b_V", "attn.W_O",
        "attn.b_O", "ln1.w", "ln1.b", "mlp.W_in", "mlp.b_in", "mlp.W_out", "mlp.b_out",
        "ln2.w", "ln2.b",
    )
}  # fmt: skip


def test_names_are_transformerlens_2x(mlm):
    _, model = mlm
    assert TL_HOOKS <= set(model.hook_dict)
    assert set(model.state_dict()) == TL_PARAMS


def test_block_hooks_hold_transformerlens_bert_block_values(mlm, batch):
    """resid_mid and resid_post are the sums before ln1/ln2, as in TransformerLens's BertBlock."""
    hf, model = mlm
    tokens, types, _ = batch
    _, cache = model.run_with_cache(tokens, token_type_ids=types)
    layer = hf.bert.encoder.layer[1]
    eps = hf.config.layer_norm_eps
    resid_mid = cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_attn_out"]
    torch.testing.assert_close(cache["blocks.1.hook_resid_mid"], resid_mid)
    ln1 = layer.attention.output.LayerNorm
    normed_mid = F.layer_norm(resid_mid, (64,), ln1.weight, ln1.bias, eps)
    resid_post = normed_mid + cache["blocks.1.hook_mlp_out"]
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], resid_post)
    ln2 = layer.output.LayerNorm
    torch.testing.assert_close(
        cache["blocks.1.hook_normalized_resid_post"],
        F.layer_norm(resid_post, (64,), ln2.weight, ln2.bias, eps),
    )


def test_attention_is_bidirectional_and_masks_padding(mlm, batch):
    _, model = mlm
    tokens, types, mask = batch
    _, cache = model.run_with_cache(tokens, token_type_ids=types, one_zero_attention_mask=mask)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern[0, :, 0, -1].min() > 0  # the first query sees the last key
    assert pattern[1, :, :, 8:].abs().max() == 0  # nobody attends to padding
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))


def test_hooks_edit_the_forward_pass(mlm, batch):
    _, model = mlm
    tokens, types, _ = batch
    clean = model(tokens, token_type_ids=types)

    def ablate(z, hook):
        z[:, :, 2] = 0.0
        return z

    ablated = model.run_with_hooks(
        tokens, token_type_ids=types, fwd_hooks=[("blocks.1.attn.hook_z", ablate)]
    )
    assert (ablated - clean).abs().max() > 1e-3
    torch.testing.assert_close(model(tokens, token_type_ids=types), clean)  # hooks removed


def test_bare_bert_model_loads_without_head(tmp_path: Path, batch):
    from transformers import BertModel

    torch.manual_seed(2)
    hf = BertModel(_bert_config()).eval()
    hf.save_pretrained(tmp_path)
    model = HookedEncoder.from_pretrained(str(tmp_path), device="cpu")
    assert model.mlm_head is None and model.unembed is None and model.pooler is not None
    tokens, types, mask = batch
    with torch.no_grad():
        out = hf(input_ids=tokens, token_type_ids=types, attention_mask=mask)
        ours = model(tokens, "embeddings", token_type_ids=types, one_zero_attention_mask=mask)
        pooled = model.pooler(ours)
    assert (ours - out.last_hidden_state).abs().max() < 1e-4
    assert (pooled - out.pooler_output).abs().max() < 1e-4
    with pytest.raises(InputValidationError, match="no masked-LM head"):
        model(tokens)


def test_config_written_by_hand_builds_a_working_encoder():
    model = HookedEncoder(
        {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_mlp": 64, "d_vocab": 100,
         "n_ctx": 16, "act_fn": "gelu", "device": "cpu"}
    )  # fmt: skip
    assert model.cfg.d_mlp == 64 and model.W_pos.shape == (16, 32)
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 100)
    with pytest.raises(InputValidationError, match="return_type"):
        model(torch.tensor([[1, 2, 3]]), return_type="loss")


def test_each_class_refuses_the_others_checkpoints(mlm, tmp_path: Path):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf, _ = mlm
    hf.save_pretrained(tmp_path / "bert")
    with pytest.raises(UnknownArchitectureError, match="tlcore.HookedEncoder.from_pretrained"):
        HookedTransformer.from_pretrained(str(tmp_path / "bert"), device="cpu")
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path / "gpt2"
    )
    with pytest.raises(UnknownArchitectureError, match="HookedTransformer"):
        HookedEncoder.from_pretrained(str(tmp_path / "gpt2"), device="cpu")

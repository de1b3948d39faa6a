"""HookedEncoderDecoder (T5) against HF's T5ForConditionalGeneration, and TransformerLens's names.

Two tiny random checkpoints through ``save_pretrained`` and tlcore's real loader: the original T5
(ReLU MLP, tied embeddings, logits scaled by d_model^-0.5) and the gated T5 v1.1 / FLAN shape
(gated-gelu, untied). Expected names are TransformerLens 2.x's (``HookedEncoderDecoder``,
``T5Block``, ``T5Attention``, ``convert_t5_weights``), written out from its source.
"""

from __future__ import annotations

import pytest
import torch

from tlcore.components.cross import relative_position_bucket
from tlcore.errors import InputValidationError
from tlcore.hooked_encoder_decoder import HookedEncoderDecoder

N_LAYERS = 2
VARIANTS = {"t5": {}, "t5_gated": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def t5(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        d_model=64, d_kv=16, d_ff=128, num_layers=N_LAYERS, num_heads=4, vocab_size=256,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        **VARIANTS[request.param],
    )  # fmt: skip
    hf = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # identity norms would hide a norm applied in the wrong place
        for name, param in hf.named_parameters():
            if "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.2)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return request.param, hf, HookedEncoderDecoder.from_pretrained(str(folder), device="cpu")


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    tokens = torch.randint(2, 256, (2, 21))  # longer than max_distance: the log buckets matter
    mask = torch.ones(2, 21, dtype=torch.long)
    mask[1, 15:] = 0
    return tokens, mask, torch.randint(2, 256, (2, 9))


def test_logits_and_every_layer_match_hf(t5, batch):
    name, hf, model = t5
    tokens, mask, decoder = batch
    with torch.no_grad():
        out = hf(
            input_ids=tokens, attention_mask=mask, decoder_input_ids=decoder,
            output_hidden_states=True,
        )  # fmt: skip
        logits, cache = model.run_with_cache(
            tokens, decoder_input=decoder, one_zero_attention_mask=mask
        )
    assert model.cfg.spec_name == name
    assert (logits - out.logits).abs().max() < 1e-4
    for stack, hidden in (
        ("encoder", out.encoder_hidden_states),
        ("decoder", out.decoder_hidden_states),
    ):
        final_ln = getattr(model, f"{stack}_final_ln")
        for layer in range(N_LAYERS):
            ours = cache[f"{stack}.{layer}.hook_resid_post"]
            if layer == N_LAYERS - 1:  # HF reports the last layer after the final norm
                ours = final_ln(ours)
            real = hidden[layer + 1][:, :15] if stack == "encoder" else hidden[layer + 1]
            ours = ours[:, :15] if stack == "encoder" else ours
            assert (ours - real).abs().max() < 1e-4, (stack, layer)


def test_decoder_is_causal_and_cross_attention_skips_padding(t5, batch):
    _, _, model = t5
    tokens, mask, decoder = batch
    _, cache = model.run_with_cache(tokens, decoder_input=decoder, one_zero_attention_mask=mask)
    self_pattern = cache["decoder.0.attn.hook_pattern"]
    assert torch.triu(self_pattern, diagonal=1).abs().max() == 0
    cross = cache["decoder.1.cross_attn.hook_pattern"]
    assert cross.shape == (2, 4, 9, 21)
    assert cross[1, :, :, 15:].abs().max() == 0 and cross[0, :, :, 15:].min() > 0
    encoder_pattern = cache["encoder.0.attn.hook_pattern"]
    assert encoder_pattern[0, :, 0, -1].min() > 0  # bidirectional
    # One relative-position table per stack, computed once per forward pass.
    assert cache["encoder.0.attn.rel_pos_hook"].shape == (1, 4, 21, 21)
    assert cache["decoder.0.attn.rel_pos_hook"].shape == (1, 4, 9, 9)


def test_patching_the_relative_bias_changes_the_logits(t5, batch):
    _, _, model = t5
    tokens, _, decoder = batch
    clean = model(tokens, decoder_input=decoder)

    def flatten(bias, hook):
        return torch.zeros_like(bias)

    patched = model.run_with_hooks(
        tokens, decoder_input=decoder, fwd_hooks=[("encoder.0.attn.rel_pos_hook", flatten)]
    )
    assert (patched - clean).abs().max() > 1e-3
    torch.testing.assert_close(model(tokens, decoder_input=decoder), clean)


# TransformerLens 2.x's names (HookedEncoderDecoder, T5Block, T5Attention, RMSNorm, MLP).
ATTN_HOOKS = (
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_z",
    "hook_attn_scores",
    "hook_pattern",
    "hook_result",
)
BLOCK_HOOKS = (
    "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_in", "hook_attn_out",
    "hook_mlp_in", "hook_mlp_out", "hook_q_input", "hook_k_input", "hook_v_input",
    "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_post", *(f"attn.{h}" for h in ATTN_HOOKS),
)  # fmt: skip
DECODER_HOOKS = (
    "hook_cross_attn_in", "hook_cross_attn_out", "hook_resid_mid_cross", "ln3.hook_scale",
    "ln3.hook_normalized", *(f"cross_attn.{h}" for h in ATTN_HOOKS),
)  # fmt: skip
TL_HOOKS = (
    {"hook_embed", "encoder.0.attn.rel_pos_hook", "decoder.0.attn.rel_pos_hook"}
    | {
        f"{s}_final_ln.{h}"
        for s in ("encoder", "decoder")
        for h in ("hook_scale", "hook_normalized")
    }
    | {f"{s}.{i}.{h}" for s in ("encoder", "decoder") for i in range(N_LAYERS) for h in BLOCK_HOOKS}
    | {f"decoder.{i}.{h}" for i in range(N_LAYERS) for h in DECODER_HOOKS}
)
PROJ = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
TL_PARAMS = (
    {"embed.W_E", "unembed.W_U", "unembed.b_U", "encoder_final_ln.w", "decoder_final_ln.w"}
    | {"encoder.0.attn.rel_pos_bias.weight", "decoder.0.attn.rel_pos_bias.weight"}
    | {f"{s}.{i}.attn.{p}" for s in ("encoder", "decoder") for i in range(N_LAYERS) for p in PROJ}
    | {f"decoder.{i}.cross_attn.{p}" for i in range(N_LAYERS) for p in PROJ}
    | {
        f"{s}.{i}.{n}.w"
        for s in ("encoder", "decoder")
        for i in range(N_LAYERS)
        for n in ("ln1", "ln2")
    }
    | {f"decoder.{i}.ln3.w" for i in range(N_LAYERS)}
)


def test_names_are_transformerlens_2x(t5):
    name, _, model = t5
    assert TL_HOOKS <= set(model.hook_dict)
    mlp = ("W_in", "b_in", "W_out", "b_out") + (("W_gate",) if name == "t5_gated" else ())
    expected = TL_PARAMS | {
        f"{s}.{i}.mlp.{p}" for s in ("encoder", "decoder") for i in range(N_LAYERS) for p in mlp
    }
    assert set(model.state_dict()) == expected


def test_greedy_generation_equals_hf(t5, batch):
    _, hf, model = t5
    tokens, _, _ = batch
    ours = model.generate(tokens[:1], max_new_tokens=6, do_sample=False, eos_token_id=1)
    theirs = hf.generate(
        tokens[:1], max_new_tokens=6, do_sample=False, decoder_start_token_id=0, eos_token_id=1
    )
    n = min(ours.shape[1], theirs.shape[1])
    assert torch.equal(ours[:, :n], theirs[:, :n])


def test_relative_buckets_follow_t5s_scheme():
    # Bidirectional, 32 buckets, max distance 128: 0..7 exact, then logarithmic, +16 for keys
    # after the query; distances at or beyond 128 share the last bucket of their side.
    rel = torch.tensor([0, -1, -7, -8, -127, -128, -1000, 1, 8, 1000])
    expected = [0, 1, 7, 8, 15, 15, 15, 17, 24, 31]
    assert relative_position_bucket(rel, True, 32, 128).tolist() == expected
    # Causal: later keys all fall in bucket 0.
    assert relative_position_bucket(torch.tensor([5, 1, 0, -3]), False, 32, 128).tolist() == [
        0, 0, 0, 3
    ]  # fmt: skip


def test_hooked_transformer_points_to_this_class(t5, tmp_path):
    from tlcore import HookedTransformer
    from tlcore.errors import UnknownArchitectureError

    _, hf, _ = t5
    hf.save_pretrained(tmp_path)
    with pytest.raises(UnknownArchitectureError, match="HookedEncoderDecoder.from_pretrained"):
        HookedTransformer.from_pretrained(str(tmp_path), device="cpu")


def test_weight_stacks_are_the_encoders(t5):
    _, hf, model = t5
    q = hf.encoder.block[1].layer[0].SelfAttention.q.weight  # [n_heads * d_head, d_model]
    assert model.W_Q.shape == (N_LAYERS, 4, 64, 16)
    torch.testing.assert_close(model.W_Q[1, 2], q[32:48].T)
    assert model.OV.shape == (N_LAYERS, 4, 64, 64)
    assert model.all_head_labels()[:2] == ["L0H0", "L0H1"]
    with pytest.raises(NotImplementedError, match="relative"):
        _ = model.W_pos


def test_token_input_needs_decoder_input(t5, batch):
    _, _, model = t5
    with pytest.raises(InputValidationError, match="decoder_input"):
        model(batch[0])

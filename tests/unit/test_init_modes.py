"""Initialisation statistics per init_mode, against TransformerLens's formulas.

TransformerLens 2.x ``HookedTransformer._init_weights_*``: gpt2 N(0, initializer_range²) with
initializer_range = 0.8/sqrt(d_model); xavier U(±g·sqrt(6/(fan_in+fan_out))) / N(0, g²·2/(fan_in+
fan_out)); kaiming (ReLU gain sqrt(2)) U(±g·sqrt(2)·sqrt(3/fan_in)) / N(0, 2g²/fan_in); muP
N(0, 1) for names containing "embed" (W_E, W_pos and W_U), else N(0, 1/fan_in). Fans use
TransformerLens's orientation: W_Q [head, d_model, d_head] has fan_in d_model, fan_out head·d_head.
"""

from __future__ import annotations

import math

import pytest
import torch

from tlcore import HookedTransformer

D_MODEL, D_HEAD, N_HEADS, D_MLP, D_VOCAB = 128, 32, 4, 512, 600
FANS = {  # (fan_in, fan_out) in TransformerLens's orientation
    "embed.W_E": (D_VOCAB, D_MODEL),
    "blocks.0.attn.W_Q": (D_MODEL, N_HEADS * D_HEAD),
    "blocks.0.attn.W_O": (D_HEAD, N_HEADS * D_MODEL),
    "blocks.0.mlp.W_in": (D_MODEL, D_MLP),
    "blocks.0.mlp.W_out": (D_MLP, D_MODEL),
    "unembed.W_U": (D_MODEL, D_VOCAB),
}


def model_for(init_mode: str, **extra: object) -> HookedTransformer:
    return HookedTransformer(
        dict(n_layers=1, d_model=D_MODEL, d_head=D_HEAD, n_ctx=256, d_mlp=D_MLP, d_vocab=D_VOCAB,
             act_fn="relu", init_mode=init_mode, seed=0, device="cpu", **extra)
    )  # fmt: skip


def expected(init_mode: str, name: str, gain: float) -> tuple[str, float]:
    """(distribution, std) TransformerLens's formula gives."""
    fan_in, fan_out = FANS[name]
    if init_mode == "gpt2":
        return "normal", gain
    if init_mode.startswith("xavier"):
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    elif init_mode.startswith("kaiming"):
        std = gain * math.sqrt(2.0) / math.sqrt(fan_in)
    else:  # muP
        std = 1.0 if "embed" in name else 1 / math.sqrt(fan_in)
    return ("uniform" if init_mode.endswith("uniform") else "normal"), std


@pytest.mark.parametrize(
    "init_mode",
    ["gpt2", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "muP"],
)
def test_weight_statistics_follow_transformer_lens_formulas(init_mode: str) -> None:
    model = model_for(init_mode)
    gain = model.cfg.initializer_range
    assert gain == (0.8 / math.sqrt(D_MODEL) if init_mode == "gpt2" else 1.0)
    params = dict(model.named_parameters())
    for name in FANS:
        dist, std = expected(init_mode, name, gain)
        w = params[name].detach()
        assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel()), name
        assert w.std().item() == pytest.approx(std, rel=0.05), name
        if dist == "uniform":  # U(-b, b) has std b/sqrt(3) and nothing beyond b
            bound = std * math.sqrt(3)
            assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound, name
        else:  # a normal sample of this size reaches past 3 std
            assert w.abs().max().item() > 3 * std, name
    assert torch.count_nonzero(model.blocks[0].attn.b_Q) == 0
    assert torch.all(model.blocks[0].ln1.w == 1) and torch.count_nonzero(model.blocks[0].ln1.b) == 0


def test_initializer_range_is_the_gpt2_std_and_the_xavier_gain() -> None:
    assert model_for("gpt2", initializer_range=0.05).W_in.std().item() == pytest.approx(
        0.05, rel=0.05
    )
    half = model_for("xavier_normal", initializer_range=0.5).W_in[0].std().item()
    assert half == pytest.approx(0.5 * math.sqrt(2 / (D_MODEL + D_MLP)), rel=0.05)


def test_seed_makes_init_reproducible_and_none_draws_from_the_global_generator() -> None:
    a, b = model_for("gpt2"), model_for("gpt2")
    assert torch.equal(a.W_E, b.W_E)
    torch.manual_seed(1)
    c = HookedTransformer(
        dict(n_layers=1, d_model=16, d_head=4, n_ctx=8, d_vocab=10, act_fn="relu")
    )
    d = HookedTransformer(
        dict(n_layers=1, d_model=16, d_head=4, n_ctx=8, d_vocab=10, act_fn="relu")
    )
    assert not torch.equal(c.W_E, d.W_E)
    c.init_weights(seed=3)
    d.init_weights(seed=3)
    assert torch.equal(c.W_E, d.W_E)

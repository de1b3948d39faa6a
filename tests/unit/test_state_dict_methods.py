"""TransformerLens's state-dict methods: its state dicts load, its processing steps run one by one.

A TransformerLens state dict carries buffers tlcore does not store (``attn.mask``,
``attn.IGNORE``, rotary tables); ``load_state_dict`` takes it as it is. The one-by-one steps,
chained on state dicts as TransformerLens's ``load_and_process_state_dict`` chains them, give the
same weights as ``process_weights_`` on the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tlcore import HookedTransformer, HookedTransformerConfig

DATA = Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2"
META = json.loads((DATA / "models.json").read_text())["models"]
TENSORS = load_file(str(DATA / "models.safetensors"))


def transformer_lens_state_dict(name: str) -> dict[str, torch.Tensor]:
    """TransformerLens 2.18's state dict of a recorded model: its parameters and its buffers."""
    state = {p: TENSORS[f"{name}/{p}"] for p in META[name]["parameters"]}
    kwargs = META[name]["kwargs"]
    n = kwargs["n_ctx"]
    for layer in range(kwargs["n_layers"]):
        state[f"blocks.{layer}.attn.mask"] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        state[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-1e5)
        if kwargs.get("positional_embedding_type") == "rotary":
            dim = kwargs.get("rotary_dim") or kwargs["d_head"]
            state[f"blocks.{layer}.attn.rotary_sin"] = torch.zeros(n, dim)
            state[f"blocks.{layer}.attn.rotary_cos"] = torch.ones(n, dim)
    return state


@pytest.mark.parametrize("name", ["gpt2_like", "llama_like", "alibi", "attn_only_built"])
def test_transformer_lens_state_dict_loads(name: str) -> None:
    kwargs = {**META[name]["kwargs"], "seed": 12345}  # other weights than TransformerLens's
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    model.load_state_dict(transformer_lens_state_dict(name))
    with torch.no_grad():
        logits = model(TENSORS["tokens"])
    torch.testing.assert_close(logits, TENSORS[f"{name}/logits"], atol=1e-5, rtol=1e-5)


def test_a_wrong_buffer_is_refused() -> None:
    model = HookedTransformer(HookedTransformerConfig(**META["gpt2_like"]["kwargs"]))
    state = transformer_lens_state_dict("gpt2_like")
    state["blocks.0.attn.mask"] = torch.ones(8, 8, dtype=torch.bool)  # not causal
    with pytest.raises(ValueError, match="mask"):
        model.load_state_dict(state)


def test_steps_one_by_one_equal_process_weights() -> None:
    kwargs = META["gpt2_like"]["kwargs"]
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    state = transformer_lens_state_dict("gpt2_like")
    model.load_state_dict(state)
    folded = model.fold_layer_norm(state)
    assert "blocks.0.ln1.w" not in folded and "ln_final.b" not in folded  # as TransformerLens
    chained = model.fold_value_biases(model.center_unembed(model.center_writing_weights(folded)))
    assert not model.cfg.fold_ln  # the model itself is untouched
    reference = HookedTransformer(HookedTransformerConfig(**kwargs))
    reference.load_and_process_state_dict(state)
    expected = reference.state_dict()
    assert set(chained) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(chained[key], value, atol=1e-6, rtol=1e-6, msg=key)
    with torch.no_grad():
        processed_logits = reference(TENSORS["tokens"])
    original = TENSORS["gpt2_like/logits"]  # same probabilities: center_unembed shifts logits
    torch.testing.assert_close(processed_logits.log_softmax(-1), original.log_softmax(-1),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_n_params_total_counts_every_parameter() -> None:
    kwargs = META["gpt2_like"]["kwargs"]
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    # Counted from TransformerLens's own parameter list of the same config.
    expected = sum(TENSORS[f"gpt2_like/{p}"].numel() for p in META["gpt2_like"]["parameters"])
    assert model.n_params_total == expected


def test_all_composition_scores_as_transformer_lens() -> None:
    model = HookedTransformer(HookedTransformerConfig(**META["gpt2_like"]["kwargs"]))
    scores = model.all_composition_scores("Q")
    assert scores.shape == (2, 2, 2, 2)
    assert not scores[1, :, 0].any() and not scores[0, :, 0].any()  # only earlier → later
    # Q-composition of L0H1 into L1H0: |W_QK^T W_OV| / (|W_QK| |W_OV|) (Frobenius norms).
    ov = (model.W_V[0, 1] @ model.W_O[0, 1]).double()
    qk = (model.W_Q[1, 0] @ model.W_K[1, 0].T).double()
    expected = (ov @ qk).norm() / (ov.norm() * qk.norm())
    torch.testing.assert_close(scores[0, 1, 1, 0].double(), expected, atol=1e-5, rtol=1e-4)


def test_cache_all_and_cache_some() -> None:
    model = HookedTransformer(HookedTransformerConfig(**META["gpt2_like"]["kwargs"]))
    everything: dict = {}
    model.cache_all(everything)
    some = model.cache_some({}, lambda name: name.endswith("hook_resid_post"))
    with torch.no_grad():
        model(TENSORS["tokens"])
    model.reset_hooks()
    _, cache = model.run_with_cache(TENSORS["tokens"])
    assert set(everything) == set(cache.keys())
    assert set(some) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}

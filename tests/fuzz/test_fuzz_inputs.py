"""Fuzzing forward, generate and hook inputs on a tiny model with learned positions.

Property: any tokens (dtype, shape, values), return type, mask, layer range and sampling
parameters give either a correct result (the same logits as the reference call with clean long
tokens) or a typed error naming the argument; valid inputs never raise.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tlcore import HookedTransformer
from tlcore.errors import InputValidationError
from tlcore.testing.fuzz import examples, outcome

pytestmark = pytest.mark.timeout(300)

VOCAB, N_CTX, LAYERS = 20, 8, 2
DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]
DTYPES += [torch.float16, torch.float32]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    return HookedTransformer(
        {
            "d_model": 16,
            "n_layers": LAYERS,
            "n_ctx": N_CTX,
            "d_head": 4,
            "n_heads": 4,
            "d_vocab": VOCAB,
            "act_fn": "gelu",
            "positional_embedding_type": "standard",
        }
    )


@st.composite
def token_tensors(draw) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, N_CTX + 2), min_size=0, max_size=3))
    n = 1
    for d in shape:
        n *= d
    low, high = draw(st.sampled_from([(0, VOCAB - 1), (-3, VOCAB + 3), (0, 1)]))
    values = draw(st.lists(st.integers(low, high), min_size=n, max_size=n))
    tensor = torch.tensor(values, dtype=torch.long).reshape(shape)
    if dtype == torch.bool:
        return tensor.ne(0)
    if dtype == torch.uint8 or dtype == torch.int8:
        return tensor.clamp(-128 if dtype == torch.int8 else 0, 127).to(dtype)
    return tensor.to(dtype)


def valid_tokens(tokens: torch.Tensor) -> bool:
    return (
        tokens.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)
        and tokens.dim() in (1, 2)
        and bool(((tokens >= 0) & (tokens < VOCAB)).all())
        and tokens.shape[-1] <= N_CTX
    )


@settings(max_examples=examples(400))
@given(
    tokens=token_tensors(),
    return_type=st.sampled_from(["logits", "loss", "both", None, "bogus", 3]),
    mask=st.sampled_from([None, "ones", "wrong", "list"]),
    start=st.sampled_from([None, None, None, 0, 1, -1, 5, 1.5]),
    stop=st.sampled_from([None, None, None, 1, 2, -1, 7, "2"]),
)
def test_fuzz_forward(model, tokens, return_type, mask, start, stop) -> None:
    attention_mask = None
    if mask == "ones" and tokens.dim() in (1, 2):
        rows = tokens[None] if tokens.dim() == 1 else tokens
        attention_mask = torch.ones(rows.shape, dtype=torch.long)
    elif mask == "wrong":
        attention_mask = torch.ones(3, 1)
    elif mask == "list":
        attention_mask = [[1]]
    kwargs = {"return_type": return_type, "attention_mask": attention_mask}
    kwargs |= {"stop_at_layer": stop}
    if start is not None:  # start_at_layer takes residual activations, not tokens
        resid = torch.zeros(1, max(1, tokens.shape[-1] if tokens.dim() else 1), 16)
        result, error = outcome(model, resid, start_at_layer=start, **kwargs)
    else:
        result, error = outcome(model, tokens, **kwargs)
    if error is not None:
        assert isinstance(error, InputValidationError), repr(error)
        assert (
            error.argument is not None
            and error.argument in str(error)
            or error.argument
            in (
                "input",
                "tokens",
            )
        ), str(error)
    simple = start is None and stop is None and mask in (None, "ones")
    if simple and return_type == "logits" and valid_tokens(tokens) and tokens.shape[-1] > 0:
        assert error is None, f"valid input refused: {error}"
        reference = model(tokens.long())
        assert torch.equal(result, reference)


@settings(max_examples=examples(120))
@given(
    tokens=token_tensors(),
    max_new_tokens=st.sampled_from([0, 1, 3, 8, -1, 2.0]),
    temperature=st.sampled_from([0.0, 1.0, 0.5, -1.0, float("nan"), float("inf")]),
    top_k=st.sampled_from([None, 1, 5, 0, -2, 1.5]),
    top_p=st.sampled_from([None, 0.5, 1.0, 0.0, 1.5]),
    use_cache=st.booleans(),
)
def test_fuzz_generate(model, tokens, max_new_tokens, temperature, top_k, top_p, use_cache) -> None:
    result, error = outcome(
        model.generate,
        tokens,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop_at_eos=False,
        verbose=False,
        use_past_kv_cache=use_cache,
    )
    if error is not None:
        assert isinstance(error, InputValidationError), repr(error)
    elif valid_tokens(tokens):
        assert tokens.shape[-1] > 0 and max_new_tokens >= 0
        batch = tokens[None] if tokens.dim() == 1 else tokens
        assert result.shape == (batch.shape[0], batch.shape[1] + max_new_tokens)
        assert bool(((result >= 0) & (result < VOCAB)).all())


returns = st.sampled_from(["same", "none", "narrow", "double", "list", "scalar", "wide"])


@settings(max_examples=examples(120))
@given(
    name=st.sampled_from(
        ["hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post",
         "blocks.0.attn.hook_result", "blocks.0.mlp.hook_post", "no.such.hook"]
    ),
    how=returns,
    path=st.sampled_from(["run_with_hooks", "hooks", "add_hook", "run_with_cache"]),
)  # fmt: skip
def test_fuzz_hooks(model, name, how, path) -> None:
    def hook(x, hook):
        return {
            "same": x.clone(),
            "none": None,
            "narrow": x[..., :1],
            "double": x.double(),
            "list": [1],
            "scalar": torch.tensor(1.0),
            "wide": torch.cat([x, x], dim=-1),
        }[how]

    tokens = torch.tensor([[1, 2, 3]])

    def run():
        if path == "run_with_hooks":
            return model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
        if path == "hooks":
            with model.hooks(fwd_hooks=[(name, hook)]):
                return model(tokens)
        if path == "run_with_cache":
            return model.run_with_cache(tokens, names_filter=name)[0]
        try:
            model.add_hook(name, hook)
            return model(tokens)
        finally:
            model.reset_hooks()

    result, error = outcome(run)
    assert not any(hp.has_hooks for hp in model.hook_points())
    assert model.context_level == 0
    if error is None:
        assert result.shape == (1, 3, VOCAB)
    if how in ("same", "none") and name != "no.such.hook" and "hook_result" not in name:
        assert error is None, str(error)

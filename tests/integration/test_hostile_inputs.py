"""Hostile arguments and inputs: refused at the API boundary, as HF does, naming the argument.

One test per bad outcome from issue 13: negative token ids wrapped around, ``uint8``/``bool`` tokens
were taken as masks, prompts longer than ``n_ctx`` (also mid-``generate``) gave a raw
``IndexError``, an invalid ``return_type`` or a negative temperature was accepted,
``first_n_layers=-1`` built a model with ``n_layers == -1`` and ``n_ctx=0`` tokenised every prompt
to ``[]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcore import HookedTransformer
from tlcore.errors import (
    InputRangeError,
    InputTypeError,
    InputValidationError,
    InvalidConfigError,
)
from tlcore.utils import sample_logits

VOCAB, N_CTX = 512, 64  # gpt2's tiny test config


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoint):
    folder, _ = tiny_checkpoint("gpt2")
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


@pytest.fixture(scope="module")
def folder(tiny_checkpoint):
    return str(tiny_checkpoint("gpt2")[0])


def refused(error_type, argument, fn, *args, **kwargs) -> str:
    with pytest.raises(error_type) as info:
        fn(*args, **kwargs)
    assert info.value.argument == argument
    return str(info.value)


# -- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "error", "expected"),
    [
        (torch.tensor([[1, -1, 2]]), InputRangeError, "token id -1 at [0, 1] is out of range"),
        (torch.tensor([[1, VOCAB]]), InputRangeError, f"token id {VOCAB} at [0, 1]"),
        (torch.tensor([[1, 2]], dtype=torch.uint8), InputTypeError, "uint8"),
        (torch.tensor([[True, False]]), InputTypeError, "masks"),
        (torch.tensor([[1.0, 2.0]]), InputTypeError, "start_at_layer"),
        (torch.zeros(1, 2, 3, dtype=torch.long), InputValidationError, "[pos] or [batch, pos]"),
        (np.array([[1, 2, 3]]), InputTypeError, "got ndarray"),
    ],
)
def test_bad_tokens_are_refused_before_the_model_runs(gpt2, tokens, error, expected) -> None:
    message = refused(error, "input", gpt2, tokens)
    assert expected in message


def test_errors_are_still_what_transformerlens_code_catches(gpt2) -> None:
    with pytest.raises(IndexError):  # PyTorch's own type for an out-of-range id
        gpt2(torch.tensor([[VOCAB]]))
    with pytest.raises(ValueError):
        gpt2(torch.tensor([[VOCAB]]))
    with pytest.raises(TypeError):
        gpt2(torch.tensor([[1]], dtype=torch.uint8))


def test_every_integer_dtype_is_accepted(gpt2) -> None:
    reference = gpt2(torch.tensor([[3, 4, 5]]))
    for dtype in (torch.int8, torch.int16, torch.int32, torch.uint16):
        assert torch.equal(gpt2(torch.tensor([[3, 4, 5]], dtype=dtype)), reference)


def test_sequences_longer_than_learned_positions(gpt2) -> None:
    ok = torch.zeros(1, N_CTX, dtype=torch.long)
    assert gpt2(ok).shape == (1, N_CTX, VOCAB)
    message = refused(InputRangeError, "input", gpt2, torch.zeros(1, N_CTX + 1, dtype=torch.long))
    assert f"{N_CTX + 1} tokens long" in message and f"n_ctx={N_CTX}" in message


def test_generate_refuses_to_run_past_n_ctx_before_it_starts(gpt2) -> None:
    prompt = torch.zeros(1, N_CTX - 2, dtype=torch.long)
    for cache in (True, False):
        message = refused(
            InputRangeError,
            "max_new_tokens",
            gpt2.generate,
            prompt,
            max_new_tokens=5,
            stop_at_eos=False,
            verbose=False,
            use_past_kv_cache=cache,
        )
        assert "pass max_new_tokens <= 2" in message
    out = gpt2.generate(prompt, max_new_tokens=2, stop_at_eos=False, verbose=False)
    assert out.shape == (1, N_CTX)


def test_a_kv_cache_filled_past_n_ctx_is_refused_mid_sequence(gpt2) -> None:
    from tlcore import HookedTransformerKeyValueCache

    cache = HookedTransformerKeyValueCache.init_cache(gpt2.cfg, "cpu", 1)
    gpt2(torch.zeros(1, N_CTX, dtype=torch.long), past_kv_cache=cache)
    message = refused(InputRangeError, "input", gpt2, torch.zeros(1, 1, dtype=torch.long),
                      past_kv_cache=cache)  # fmt: skip
    assert f"{N_CTX + 1} tokens long" in message


def test_attention_mask_must_fit_the_input(gpt2) -> None:
    tokens = torch.tensor([[1, 2, 3]])
    message = refused(
        InputValidationError, "attention_mask", gpt2, tokens, attention_mask=torch.ones(1, 4)
    )
    assert "[1, 3]" in message
    refused(InputTypeError, "attention_mask", gpt2, tokens, attention_mask=[[1, 1, 1]])


# -- arguments ------------------------------------------------------------------------------------


def test_unknown_return_type(gpt2) -> None:
    message = refused(InputValidationError, "return_type", gpt2, torch.tensor([[1]]), "logit")
    assert "'logit'" in message and "'logits'" in message


@pytest.mark.parametrize(("name", "value"), [("start_at_layer", 1.5), ("stop_at_layer", 99)])
def test_layer_indices(gpt2, name, value) -> None:
    refused(InputValidationError, name, gpt2, torch.tensor([[1]]), **{name: value})


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"freq_penalty": float("inf")}, "freq_penalty"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 2.0}, "max_new_tokens"),
        ({"eos_token_id": VOCAB}, "eos_token_id"),
        ({"eos_token_id": -3}, "eos_token_id"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"return_type": "logits"}, "return_type"),
    ],
)
def test_generate_arguments(gpt2, kwargs, argument) -> None:
    args = {"max_new_tokens": 2, "verbose": False, "stop_at_eos": False, **kwargs}
    refused(InputValidationError, argument, gpt2.generate, torch.tensor([[1, 2]]), **args)
    del args["verbose"]
    if argument != "return_type":
        with pytest.raises(InputValidationError):
            list(gpt2.generate_stream(torch.tensor([[1, 2]]), **{**args, "return_type": "tokens"}))


def test_sample_logits_ranges() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    refused(InputRangeError, "temperature", sample_logits, logits, temperature=-0.5)
    refused(InputRangeError, "top_k", sample_logits, logits, top_k=-1)
    refused(InputRangeError, "top_p", sample_logits, logits, top_p=2.0)
    assert sample_logits(logits, temperature=0.0).tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "argument", "error"),
    [
        ({"first_n_layers": -1}, "first_n_layers", InputRangeError),
        ({"first_n_layers": 0}, "first_n_layers", InputRangeError),
        ({"first_n_layers": 3}, "first_n_layers", InputRangeError),  # the checkpoint has 2
        ({"first_n_layers": 1.0}, "first_n_layers", InputTypeError),
        ({"n_ctx": 0}, "n_ctx", InputRangeError),
        ({"n_ctx": -5}, "n_ctx", InputRangeError),
        ({"device": "not-a-device"}, "device", InputValidationError),
        ({"dtype": "float33"}, "dtype", InputValidationError),
        ({"dtype": 3}, "dtype", InputValidationError),
        ({"default_padding_side": "up"}, "default_padding_side", InputValidationError),
        ({"n_devices": 0}, "n_devices", InputValidationError),
        ({"fold_ln": "yes"}, "fold_ln", InputTypeError),
    ],
)
def test_from_pretrained_arguments(folder, kwargs, argument, error) -> None:
    refused(error, argument, HookedTransformer.from_pretrained, folder, **kwargs)


def test_from_pretrained_model_name_type() -> None:
    refused(InputTypeError, "model_name", HookedTransformer.from_pretrained, 3)
    refused(InputTypeError, "model_name", HookedTransformer.from_pretrained, None)


def test_first_n_layers_within_range_still_works(folder) -> None:
    model = HookedTransformer.from_pretrained_no_processing(folder, device="cpu", first_n_layers=1)
    assert model.cfg.n_layers == 1 and len(model.blocks) == 1


def test_hand_written_configs_are_checked() -> None:
    with pytest.raises(InvalidConfigError, match="n_ctx = 0"):
        HookedTransformer(
            {"d_model": 8, "n_layers": 1, "n_ctx": 0, "d_head": 4, "n_heads": 2, "d_vocab": 10}
        )

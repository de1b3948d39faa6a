"""Checks on ``generate``'s and the samplers' arguments, before anything runs.

Each refuses one input with a typed error naming the argument (see :mod:`tlcore.validation`).
"""

from __future__ import annotations

import math
from typing import Any

from tlcore.errors import InputRangeError, InputTypeError, InputValidationError
from tlcore.validation import is_int, max_positions


def check_sampling(
    temperature: Any = 1.0,
    top_k: Any = None,
    top_p: Any = None,
    freq_penalty: Any = 0.0,
) -> None:
    """Refuse sampling parameters out of range (HF's ``GenerationConfig`` rules, with TL's 0).

    Args:
        temperature: At least 0 and finite (0 is greedy, as in TransformerLens).
        top_k: None or a positive int.
        top_p: None or a number in ``(0, 1]``.
        freq_penalty: A finite number.

    Raises:
        InputTypeError: For a value of the wrong type.
        InputRangeError: For a value out of range.

    Example:
        >>> check_sampling(temperature=-1.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tlcore.errors.InputRangeError: temperature must be a finite number >= 0 ...
    """
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)):
        raise InputTypeError(f"temperature must be a number, got {temperature!r}", "temperature")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InputRangeError(
            f"temperature must be a finite number >= 0 (0 is greedy), got {temperature!r}",
            "temperature",
        )
    if top_k is not None:
        if not is_int(top_k):
            raise InputTypeError(f"top_k must be a positive int or None, got {top_k!r}", "top_k")
        if top_k <= 0:
            raise InputRangeError(f"top_k must be a positive int or None, got {top_k}", "top_k")
    if top_p is not None:
        if not (isinstance(top_p, (int, float)) and not isinstance(top_p, bool)):
            raise InputTypeError(
                f"top_p must be a number in (0, 1] or None, got {top_p!r}", "top_p"
            )
        if not 0.0 < top_p <= 1.0:
            raise InputRangeError(f"top_p must be in (0, 1], got {top_p!r}", "top_p")
    if not (isinstance(freq_penalty, (int, float)) and not isinstance(freq_penalty, bool)):
        raise InputTypeError(f"freq_penalty must be a number, got {freq_penalty!r}", "freq_penalty")
    if not math.isfinite(freq_penalty):
        raise InputRangeError(f"freq_penalty must be finite, got {freq_penalty!r}", "freq_penalty")


def check_generate_args(
    model: Any,
    max_new_tokens: Any,
    eos_token_id: Any,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    freq_penalty: Any,
    padding_side: Any,
) -> None:
    """Check ``generate``'s arguments before the prompt runs.

    Args:
        model: The model (for the vocabulary size).
        max_new_tokens: A non-negative int.
        eos_token_id: None, an id, or a non-empty list of ids, each in the vocabulary.
        temperature: See :func:`check_sampling`.
        top_k: See :func:`check_sampling`.
        top_p: See :func:`check_sampling`.
        freq_penalty: See :func:`check_sampling`.
        padding_side: None, ``"left"`` or ``"right"``.

    Raises:
        InputValidationError: Naming the argument (or a subclass).
    """
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise InputValidationError(
            f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}", "max_new_tokens"
        )
    check_sampling(temperature, top_k, top_p, freq_penalty)
    if padding_side not in (None, "left", "right"):
        raise InputValidationError(
            f"padding_side must be 'left', 'right' or None, got {padding_side!r}", "padding_side"
        )
    if eos_token_id is not None:
        ids = [eos_token_id] if not isinstance(eos_token_id, (list, tuple)) else eos_token_id
        vocab = int(model.cfg.d_vocab_out)
        if not ids:
            raise InputValidationError("eos_token_id is an empty list", "eos_token_id")
        for token in ids:
            if not is_int(token):
                raise InputTypeError(
                    f"eos_token_id must be an int or a list of ints, got {token!r}",
                    "eos_token_id",
                )
            if not 0 <= token < vocab:
                raise InputRangeError(
                    f"eos_token_id {token} is out of range [0, {vocab})", "eos_token_id"
                )


def check_generation_length(model: Any, prompt_len: int, max_new_tokens: int) -> None:
    """Refuse a generation that would run past a learned position table, before it starts.

    Args:
        model: The model.
        prompt_len: Positions in the prompt.
        max_new_tokens: Tokens to generate at most.

    Raises:
        InputValidationError: If the prompt is empty.
        InputRangeError: Naming ``max_new_tokens`` (or ``input`` if the prompt alone is too long).
    """
    if prompt_len == 0:
        raise InputValidationError(
            "input: the prompt is empty; generation needs at least one token (a BOS)", "input"
        )
    limit = max_positions(model)
    if limit is None or prompt_len + max_new_tokens <= limit:
        return
    if prompt_len > limit:
        raise InputRangeError(
            f"input: the prompt is {prompt_len} tokens, but this model's learned positions stop "
            f"at n_ctx={limit}",
            "input",
        )
    raise InputRangeError(
        f"max_new_tokens={max_new_tokens} after a {prompt_len}-token prompt needs "
        f"{prompt_len + max_new_tokens} positions, but this model's learned positions stop at "
        f"n_ctx={limit}; pass max_new_tokens <= {limit - prompt_len}",
        "max_new_tokens",
    )

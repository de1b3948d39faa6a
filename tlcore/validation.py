"""Checks on arguments and inputs at the API boundary, as HuggingFace makes them.

TransformerLens passes most arguments straight to PyTorch, so a negative token id reads the last
row of the embedding, ``uint8`` tokens are taken as a mask, a prompt longer than ``n_ctx`` fails
deep inside with an ``IndexError`` and a negative temperature samples the least likely token. Each
function here refuses one such input with a typed error naming the argument
(:class:`~tlcore.errors.InputValidationError` and its ``TypeError``/``IndexError`` subclasses),
before anything runs; ``error.argument`` holds the name.

The model's methods call these in one line each; they cost a few comparisons (and, for tokens
already on an accelerator, one reduction) per call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from tlcore.errors import (
    CheckpointMismatchError,
    InputRangeError,
    InputTypeError,
    InputValidationError,
)

RETURN_TYPES = ("logits", "loss", "both", None)
"""``forward``'s ``return_type`` values."""

_TOKEN_DTYPES = frozenset(
    {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64}
    if hasattr(torch, "uint16")
    else {torch.int8, torch.int16, torch.int32, torch.int64}
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_tokens(tokens: Any, d_vocab: int, argument: str = "input") -> torch.Tensor:
    """Check token ids and return them as ``[batch, pos]``.

    Args:
        tokens: A tensor of ids, ``[pos]`` or ``[batch, pos]``.
        d_vocab: The vocabulary size (ids must be in ``[0, d_vocab)``).
        argument: The argument's name, for messages.

    Returns:
        The tokens with a batch dimension.

    Raises:
        InputTypeError: If ``tokens`` is not a tensor, or its dtype is not an integer type
            (``bool`` and ``uint8`` tensors are masks, not token ids; floats are activations).
        InputValidationError: For another number of dimensions.
        InputRangeError: For an id below 0 or at least ``d_vocab`` (HF raises too; PyTorch would
            read the wrong row for a negative id). CUDA tensors are checked without a host
            synchronisation: a bad id raises a device-side assertion at the next synchronisation.

    Example:
        >>> check_tokens(torch.tensor([1, 2]), 10).shape
        torch.Size([1, 2])
        >>> check_tokens(torch.tensor([[1, -1]]), 10)
        Traceback (most recent call last):
        ...
        tlcore.errors.InputRangeError: input: token id -1 at [0, 1] is out of range [0, 10)
    """
    if not isinstance(tokens, torch.Tensor):
        raise InputTypeError(
            f"{argument}: expected a string, a list of strings or a tensor of token ids, got "
            f"{type(tokens).__name__}",
            argument,
        )
    if tokens.dtype not in _TOKEN_DTYPES:
        hint = (
            " (bool and uint8 tensors are masks; pass masks as attention_mask=)"
            if tokens.dtype in (torch.bool, torch.uint8)
            else " (residual activations go with start_at_layer=)"
            if tokens.is_floating_point()
            else ""
        )
        raise InputTypeError(
            f"{argument}: token ids must be an integer tensor (torch.long), got {tokens.dtype}"
            + hint,
            argument,
        )
    if tokens.dtype not in (torch.int64, torch.int32):
        tokens = tokens.long()  # embedding lookups take int32/int64 ids
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise InputValidationError(
            f"{argument}: token ids must be [pos] or [batch, pos], got shape {tuple(tokens.shape)}",
            argument,
        )
    if tokens.numel() and tokens.device.type == "cuda":
        # No host sync per forward: a device-side assertion, raised at the next sync (CPU tokens
        # are checked before they are moved, with the typed error below).
        valid = ((tokens >= 0) & (tokens < d_vocab)).all()
        torch._assert_async(valid, f"{argument}: a token id is out of range [0, {d_vocab})")
        return tokens
    if tokens.numel():
        low, high = torch.aminmax(tokens)
        if int(low) < 0 or int(high) >= d_vocab:
            bad = int(low) if int(low) < 0 else int(high)
            where = tuple(int(i) for i in (tokens == bad).nonzero()[0])
            raise InputRangeError(
                f"{argument}: token id {bad} at {list(where)} is out of range [0, {d_vocab})",
                argument,
            )
    return tokens


def check_embeddings(embeds: torch.Tensor, d_model: int, argument: str = "input") -> None:
    """Check token embeddings given instead of tokens (``generate``'s embeddings input).

    Args:
        embeds: A floating-point tensor.
        d_model: The model width.
        argument: The argument's name.

    Raises:
        InputValidationError: Unless the shape is ``[batch, pos, d_model]`` with ``pos >= 1``.
    """
    if embeds.dim() != 3 or embeds.shape[-1] != d_model or embeds.shape[1] == 0:
        raise InputValidationError(
            f"{argument}: embeddings input must be [batch, pos, d_model] = [batch, pos, "
            f"{d_model}] with pos >= 1, got {tuple(embeds.shape)}",
            argument,
        )


def check_return_type(return_type: Any, allowed: Sequence[Any] = RETURN_TYPES) -> None:
    """Refuse an unknown ``return_type``.

    Args:
        return_type: The value passed.
        allowed: The accepted values.

    Raises:
        InputValidationError: Listing the accepted values.
    """
    if return_type not in allowed:
        raise InputValidationError(
            f"return_type must be one of {list(allowed)}, got {return_type!r}", "return_type"
        )


def check_layer_range(start_at_layer: Any, stop_at_layer: Any, n_layers: int) -> None:
    """Refuse ``start_at_layer``/``stop_at_layer`` that are not block indices.

    Negative values count from the end, as Python slices do (TransformerLens's behaviour).

    Args:
        start_at_layer: The value passed.
        stop_at_layer: The value passed.
        n_layers: The model's block count.

    Raises:
        InputTypeError: For a non-integer.
        InputRangeError: For an index outside ``[-n_layers, n_layers]``.
    """
    for name, value in (("start_at_layer", start_at_layer), ("stop_at_layer", stop_at_layer)):
        if value is None:
            continue
        if not _is_int(value):
            raise InputTypeError(f"{name} must be an int or None, got {value!r}", name)
        if not -n_layers <= value <= n_layers:
            raise InputRangeError(f"{name}={value} is outside the model's {n_layers} blocks", name)


def check_attention_mask(mask: Any, batch: int, q_len: int, cached: bool) -> None:
    """Refuse an attention mask that does not fit the input.

    Args:
        mask: The ``attention_mask`` passed (or None).
        batch: The input's batch size.
        q_len: The input's number of (new) positions.
        cached: A KV cache is in use (then the mask covers the new positions only).

    Raises:
        InputTypeError: If it is not a tensor.
        InputValidationError: If its shape is not ``[batch, pos]``.
    """
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(
            f"attention_mask must be a tensor, got {type(mask).__name__}", "attention_mask"
        )
    if mask.dim() != 2 or mask.shape[0] != batch or (not cached and mask.shape[1] != q_len):
        raise InputValidationError(
            f"attention_mask has shape {tuple(mask.shape)}, expected [batch, pos] = "
            f"[{batch}, {q_len}] (1 for real tokens, 0 for padding)",
            "attention_mask",
        )


def max_positions(model: Any) -> int | None:
    """How many positions a model's learned position table holds (None: positions unbounded).

    Args:
        model: A ``HookedTransformer``.

    Returns:
        ``W_pos.shape[0]`` for learned positions (absolute or shortformer), else None.
    """
    table = getattr(getattr(model, "pos_embed", None), "W_pos", None)
    if isinstance(table, torch.Tensor) and table.dim() == 2:
        return int(table.shape[0])
    return None


def check_positions(
    model: Any, positions: torch.Tensor, k_len: int, argument: str = "input"
) -> None:
    """Refuse a sequence that runs past a learned position table.

    Rotary, ALiBi and position-free models have no table and no limit here (like HF).

    Args:
        model: The model.
        positions: The absolute position of each new token ``[batch, pos]``.
        k_len: Positions in the sequence so far, cache included.
        argument: The argument to name.

    Raises:
        InputRangeError: Naming the sequence length and ``n_ctx``.
    """
    limit = max_positions(model)
    if limit is None or k_len <= limit:
        return
    if positions.numel() and int(positions.max()) < limit:
        return  # left padding: positions count real tokens only
    raise InputRangeError(
        f"{argument}: the sequence is {k_len} tokens long, but this model's learned positions "
        f"stop at n_ctx={limit}; pass at most {limit} tokens (to_tokens(..., truncate=True) "
        f"keeps the first n_ctx)",
        argument,
    )


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
        if not _is_int(top_k):
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
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
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
            if not _is_int(token):
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


def check_from_pretrained_args(
    model_name: Any,
    hf_model: Any,
    first_n_layers: Any,
    n_ctx: Any,
    device: Any,
    n_devices: Any,
    default_padding_side: Any,
    flags: dict[str, Any],
) -> None:
    """Check ``from_pretrained``'s arguments before anything is read.

    Args:
        model_name: A name, a path, or None with ``hf_model``.
        hf_model: An HF model or None.
        first_n_layers: None or a positive int (checked against the model's depth later, by
            :func:`check_first_n_layers`).
        n_ctx: None or a positive int.
        device: None, a ``torch.device`` or a string torch accepts.
        n_devices: A positive int.
        default_padding_side: ``"left"`` or ``"right"``.
        flags: The boolean processing flags by name (``fold_ln``, ...).

    Raises:
        InputValidationError: Naming the argument (or a subclass).
    """
    if hf_model is None and not isinstance(model_name, (str, os.PathLike)):
        raise InputTypeError(
            f"model_name must be a name, a path or a hub id (or pass hf_model=), got "
            f"{type(model_name).__name__}",
            "model_name",
        )
    if isinstance(model_name, str) and not model_name.strip() and hf_model is None:
        raise InputValidationError("model_name is empty", "model_name")
    for name, value in (("first_n_layers", first_n_layers), ("n_ctx", n_ctx)):
        if value is None:
            continue
        if not _is_int(value):
            raise InputTypeError(f"{name} must be a positive int or None, got {value!r}", name)
        if value < 1:
            raise InputRangeError(f"{name} must be at least 1, got {value}", name)
    if not _is_int(n_devices) or n_devices < 1:
        raise InputValidationError(
            f"n_devices must be a positive int, got {n_devices!r}", "n_devices"
        )
    if default_padding_side not in ("left", "right"):
        raise InputValidationError(
            f"default_padding_side must be 'left' or 'right', got {default_padding_side!r}",
            "default_padding_side",
        )
    if device is not None and not isinstance(device, torch.device):
        try:
            torch.device(device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise InputValidationError(
                f"device {device!r} is not a torch device: {exc}", "device"
            ) from exc
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InputTypeError(f"{name} must be True or False, got {value!r}", name)


def check_first_n_layers(first_n_layers: int | None, n_layers: int) -> None:
    """Refuse ``first_n_layers`` beyond the checkpoint's depth.

    Args:
        first_n_layers: The argument (already known to be None or a positive int).
        n_layers: The checkpoint's block count.

    Raises:
        InputRangeError: If it is larger.
    """
    if first_n_layers is not None and first_n_layers > n_layers:
        raise InputRangeError(
            f"first_n_layers={first_n_layers}, but the checkpoint has {n_layers} blocks",
            "first_n_layers",
        )


def check_unembedding_present(spec: Any, keys: set[str], hf_config: Any, where: str) -> None:
    """Refuse an untied checkpoint that has no unembedding of its own.

    HF builds such a model with a randomly initialised ``lm_head`` (and a warning); tlcore's weight
    map would instead fall back to the embedding matrix, silently tying what the config says is
    untied. Both are wrong models, so this refuses.

    Args:
        spec: The architecture spec.
        keys: The checkpoint's tensor names.
        hf_config: The HF config (object or dict).
        where: The checkpoint, for messages.

    Raises:
        CheckpointMismatchError: Naming the missing tensor.
    """
    tied = (
        hf_config.get("tie_word_embeddings")
        if isinstance(hf_config, dict)
        else getattr(hf_config, "tie_word_embeddings", None)
    )
    if tied is not False:
        return

    def chosen(target: str) -> list[str] | None:
        # The loader's choice for a non-layer rule: the first source whose keys all exist.
        for rule in spec.weights:
            if target in rule.to:
                for source in rule.sources():
                    if all(key in keys for key in source.from_):
                        return list(source.from_)
                return None
        return None

    embedding, unembedding = chosen("embed.W_E"), chosen("unembed.W_U")
    if embedding and unembedding and set(unembedding) <= set(embedding):
        rule = next(r for r in spec.weights if "unembed.W_U" in r.to)
        raise CheckpointMismatchError(
            f"{where}: the config says the unembedding is untied (tie_word_embeddings=false) "
            f"but the checkpoint has no {' or '.join(rule.from_)} and the embedding would be "
            f"used in its place; HF would initialise it randomly instead. Add the tensor, or set "
            f"tie_word_embeddings to true in config.json if the model really shares its embedding"
        )

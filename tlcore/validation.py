"""Checks on arguments and inputs at the API boundary, as HuggingFace makes them.

TransformerLens passes most arguments straight to PyTorch, so a negative token id reads the last
row of the embedding, ``uint8`` tokens are taken as a mask, a prompt longer than ``n_ctx`` fails
deep inside with an ``IndexError`` and a negative temperature samples the least likely token. Each
function here refuses one such input with a typed error naming the argument
(:class:`~tlcore.errors.InputValidationError` and its ``TypeError``/``IndexError`` subclasses),
before anything runs; ``error.argument`` holds the name.

Generation's checks are in :mod:`tlcore.generation_checks`, ``from_pretrained``'s in
:mod:`tlcore.loading_checks`. The model's methods call these in one line each; they cost a few
comparisons per call (none that waits for an accelerator).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tlcore.errors import (
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


def is_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` and not a ``bool`` (``True`` is no layer index)."""
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
        if not is_int(value):
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

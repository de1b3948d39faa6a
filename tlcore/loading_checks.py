"""Checks on ``from_pretrained``'s arguments and on the checkpoint it reads, before loading.

Each refuses one input with a typed error naming the argument or tensor (see
:mod:`tlcore.validation`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from tlcore.errors import (
    CheckpointMismatchError,
    InputRangeError,
    InputTypeError,
    InputValidationError,
)
from tlcore.validation import is_int


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
        if not is_int(value):
            raise InputTypeError(f"{name} must be a positive int or None, got {value!r}", name)
        if value < 1:
            raise InputRangeError(f"{name} must be at least 1, got {value}", name)
    if not is_int(n_devices) or n_devices < 1:
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

"""Which hooks can be harvested, how far the model must run, and one batch's activations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tlcore.errors import HookNameError

# Activations that are not [batch, pos, ...]: attention patterns are [batch, head, q, k]; MoE
# expert hooks and q/k-norm internals flatten batch and position together.
_NOT_POSITION_MAJOR = ("hook_pattern", "hook_attn_scores")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_BEFORE_BLOCKS = ("hook_embed", "hook_pos_embed", "hook_tokens")


def check_hooks(model: Any, hooks: Sequence[str]) -> list[str]:
    """Validate hook names against the model (close matches in the error).

    Args:
        model: A ``HookedTransformer``.
        hooks: Hook names.

    Returns:
        The names, de-duplicated in order.

    Raises:
        HookNameError: For an unknown name, or one whose activation has no position axis.
        ValueError: For an empty list.
    """
    names = list(dict.fromkeys(hooks))
    if not names:
        raise ValueError("name at least one hook to harvest (e.g. blocks.0.hook_resid_post)")
    for name in names:
        model._hook_point(name)  # raises HookNameError with close matches
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _NOT_POSITION_MAJOR or leaf.startswith("hook_expert") or ".experts." in name:
            raise HookNameError(
                f"'{name}' has no [batch, pos, ...] activation to store per token; harvest "
                "per-token hooks (resid, attn/mlp out, hook_z, mlp.hook_post, ...)"
            )
    return names


def stop_layer(hooks: Sequence[str], n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still computes every hook: one past the last block named.

    Args:
        hooks: Hook names.
        n_layers: The model's block count.

    Returns:
        The block index to stop before, or None when a hook sits after the blocks (final norm,
        unembed): then the whole model runs.

    Example:
        >>> stop_layer(["blocks.1.hook_resid_post", "blocks.3.attn.hook_z"], 12)
        4
        >>> stop_layer(["hook_embed"], 12)
        0
        >>> stop_layer(["ln_final.hook_normalized"], 12) is None
        True
    """
    last = 0
    for name in hooks:
        match = _BLOCK.match(name)
        if match:
            last = max(last, int(match.group(1)) + 1)
        elif name not in _BEFORE_BLOCKS:
            return None
    return min(last, n_layers)


@torch.no_grad()
def batch_activations(
    model: Any, tokens: torch.Tensor, hooks: Sequence[str], stop_at: int | None
) -> dict[str, torch.Tensor]:
    """Run one batch and return each hook's activation flattened to ``[batch, pos, d_in]``.

    This is exactly ``model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop_at)``
    (the path SAELens uses), so nothing after the last needed block is computed.

    Args:
        model: A ``HookedTransformer``.
        tokens: ``[batch, pos]`` token ids.
        hooks: Hook names (checked by :func:`check_hooks`).
        stop_at: From :func:`stop_layer`.

    Returns:
        Activations by hook name, on the model's device, in the model's dtype.

    Raises:
        HookNameError: When a hook's activation does not start with ``[batch, pos]``.
    """
    _, cache = model.run_with_cache(
        tokens, names_filter=list(hooks), stop_at_layer=stop_at, return_cache_object=False
    )
    out = {}
    for name in hooks:
        act = cache[name]
        if tuple(act.shape[:2]) != tuple(tokens.shape):
            raise HookNameError(
                f"'{name}' gives {tuple(act.shape)}, not [batch, pos, ...] for tokens "
                f"{tuple(tokens.shape)}: it cannot be stored per token"
            )
        out[name] = act.reshape(*tokens.shape, -1)
    return out


def to_numpy(act: torch.Tensor, dtype: str) -> np.ndarray:
    """Move an activation to the CPU as a numpy array of the storage dtype.

    Args:
        act: Any float tensor.
        dtype: ``"float32"``, ``"float16"`` or ``"float64"``.

    Returns:
        The array.
    """
    return act.to(device="cpu", dtype=getattr(torch, dtype)).numpy()

"""Random initialisation as TransformerLens's ``HookedTransformer.init_weights`` does it.

``cfg.init_mode`` picks the rule for every weight matrix (TransformerLens initialises parameters
whose name contains ``W_``); biases start at zero and norm weights at one (zero for Gemma's
``1 + w`` norms), as TransformerLens's components create them.

- ``gpt2``: ``N(0, initializer_range²)``; ``initializer_range`` defaults to ``0.8 / sqrt(d_model)``.
- ``xavier_uniform``: ``U(±g·sqrt(6 / (fan_in + fan_out)))``, gain ``g = initializer_range``
  (default 1.0).
- ``xavier_normal``: ``N(0, (g·sqrt(2 / (fan_in + fan_out)))²)``.
- ``kaiming_uniform``: ``U(±g·sqrt(2)·sqrt(3 / fan_in))`` (ReLU's gain sqrt(2)).
- ``kaiming_normal``: ``N(0, (g·sqrt(2) / sqrt(fan_in))²)``.
- ``muP``: ``N(0, s²)`` with ``s = 1`` for names containing ``embed`` (``W_E``, ``W_pos`` and, as
  TransformerLens's name test has it, ``W_U``), else ``s = 1 / sqrt(fan_in)``.

Fans use TransformerLens's orientation (:func:`tlcore.utils.calc_fan_in_and_fan_out`). With
``cfg.seed`` set, torch's global generator is seeded first; weights are drawn from it in
TransformerLens's parameter order, each into a fresh contiguous tensor, so a hand-written model
gets exactly TransformerLens's weights for the same config and seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from tlcore.errors import InvalidConfigError
from tlcore.utils.initialization import (
    calc_fan_in_and_fan_out,
    init_kaiming_normal_,
    init_kaiming_uniform_,
    init_xavier_normal_,
    init_xavier_uniform_,
)

if TYPE_CHECKING:
    from tlcore.config import HookedTransformerConfig

# TransformerLens registers attention weights as W_Q, W_O (in its abstract base), then W_K, W_V,
# and a gated MLP's as W_in, W_out, W_gate; within a module, weights are drawn in this order.
_TL_ORDER = {"W_Q": 0, "W_O": 1, "W_K": 2, "_W_K": 2, "W_V": 3, "_W_V": 3}
_TL_ORDER_MLP = {"W_in": 0, "W_out": 1, "W_gate": 2}

Initializer = Callable[[str, torch.Tensor], None]


def weight_initializer(cfg: HookedTransformerConfig) -> Initializer:
    """The rule ``cfg.init_mode`` applies to one weight matrix.

    Args:
        cfg: The config (``init_mode``, ``initializer_range``).

    Returns:
        ``fn(name, tensor)`` that fills a contiguous ``tensor`` in place from torch's global
        generator.

    Raises:
        InvalidConfigError: For an unknown ``init_mode``.
    """
    mode, gain = cfg.init_mode, cfg.initializer_range
    if mode == "gpt2":
        return lambda name, t: _ignore(nn.init.normal_(t, std=gain))
    if mode == "xavier_uniform":
        return lambda name, t: _ignore(init_xavier_uniform_(t, gain=gain))
    if mode == "xavier_normal":
        return lambda name, t: _ignore(init_xavier_normal_(t, gain=gain))
    if mode == "kaiming_uniform":
        return lambda name, t: _ignore(init_kaiming_uniform_(t, gain=gain, nonlinearity="relu"))
    if mode == "kaiming_normal":
        return lambda name, t: _ignore(init_kaiming_normal_(t, gain=gain, nonlinearity="relu"))
    if mode == "muP":
        return _init_mup
    raise InvalidConfigError(f"init_mode {mode!r}: expected gpt2, xavier_*, kaiming_* or muP")


def _ignore(_: torch.Tensor) -> None:
    return None


def _init_mup(name: str, tensor: torch.Tensor) -> None:
    fan_in, _ = calc_fan_in_and_fan_out(tensor)
    # TransformerLens tests "embed" before "unembed", so W_U gets scale 1 too.
    scale = 1.0 if "embed" in name else 1 / math.sqrt(fan_in)
    nn.init.normal_(tensor, std=scale)


def weights_in_transformer_lens_order(
    model: nn.Module,
) -> Iterator[tuple[str, nn.Parameter]]:
    """The weight matrices of ``model`` in the order TransformerLens initialises them.

    Modules come in ``named_parameters`` order (the same module tree as TransformerLens);
    within a module, attention and MLP weights follow TransformerLens's registration order.

    Args:
        model: The model.

    Yields:
        ``(name, parameter)`` for every parameter that is a weight matrix.
    """
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if _is_weight(name, param):
            groups.setdefault(name.rpartition(".")[0], []).append((name, param))
    for members in groups.values():
        yield from sorted(members, key=_rank_in_module)


def _rank_in_module(item: tuple[str, nn.Parameter]) -> int:
    leaf = item[0].rpartition(".")[2]
    return _TL_ORDER.get(leaf, _TL_ORDER_MLP.get(leaf, 0))


def _is_weight(name: str, param: torch.Tensor) -> bool:
    leaf = name.rpartition(".")[2]
    if leaf in ("w", "b", "bias") or leaf.lstrip("_").startswith("b_"):
        return False
    return "W_" in name or param.dim() >= 2


def init_weights(model: nn.Module, cfg: HookedTransformerConfig, seed: int | None = None) -> None:
    """Initialise every parameter of ``model`` as TransformerLens's ``init_weights`` does.

    Args:
        model: A freshly built model (meta parameters are skipped).
        cfg: Its config (``init_mode``, ``initializer_range``, ``seed``).
        seed: Seed torch's global generator with this instead of ``cfg.seed``.
    """
    seed = seed if seed is not None else cfg.seed
    if seed is not None:
        torch.manual_seed(seed)
    fill = weight_initializer(cfg)
    draws_w_pos = bool(getattr(cfg.trait("positional"), "transformer_lens_draws_w_pos", False))
    with torch.no_grad():
        weights = set()
        for name, param in weights_in_transformer_lens_order(model):
            weights.add(name)
            if param.is_meta:
                continue
            fresh = torch.empty(param.shape, dtype=param.dtype, device=param.device)
            fill(name, fresh)
            param.copy_(fresh)
            if name == "embed.W_E" and draws_w_pos:
                # TransformerLens 2.x gives ALiBi models an unused pos_embed.W_pos and draws it
                # next; draw (and drop) it too, so the later weights match for the same seed.
                fill("pos_embed.W_pos", torch.empty(cfg.n_ctx, cfg.d_model, dtype=param.dtype))
        for name, param in model.named_parameters():
            if name in weights or param.is_meta:
                continue
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            if getattr(owner, "keeps_own_init", False):  # xIELU's alphas, as TransformerLens
                continue
            if leaf == "w":  # norm weights: the identity (0 for 1+w norms)
                param.fill_(0.0 if getattr(owner, "offset", False) else 1.0)
            else:  # biases, attention sinks
                param.zero_()

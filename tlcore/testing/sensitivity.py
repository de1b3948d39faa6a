"""Sensitivity tests: break one feature of a loaded model, and parity must fail.

A passing parity test proves little if its test config never exercises the feature it claims to
(a window longer than the sequence, a rotary width equal to the head): each family's sensitivity
tests break one feature at a time on a correct model and require the comparison to notice. The
breakers shared by several families live here; :func:`assert_detects` runs one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tlcore.parity.compare import compare_model
from tlcore.testing.cases import ParityCases

Breaker = Callable[[Any], None]
"""``breaker(model)`` changes one feature of a loaded model in place."""


def logits_diff(model: Any, hf_model: Any, tokens: torch.Tensor) -> float:
    """Max abs difference between tlcore's and HF's logits on ``tokens``.

    Returns:
        The difference, a float.
    """
    with torch.no_grad():
        return float((model(tokens) - hf_model(tokens).logits).abs().max())


def copy_trait(module: Any, **update: Any) -> None:
    """Replace a component's trait by a copy with ``update`` applied (its forward reads it)."""
    module.trait = module.trait.model_copy(update=update)


def assert_detects(
    cases: ParityCases, name: str, variant: str | None, breaker: Breaker, atol: float = 1e-4
) -> None:
    """Check the case passes parity, break ``breaker``'s feature, and require parity to fail.

    The passing comparison is the case's shared one (``cases.run``); only the broken model is
    compared again.

    Args:
        cases: The session's cases.
        name: Spec name.
        variant: Test variant.
        breaker: Breaks one feature of the loaded model.
        atol: Tolerance of the comparison.

    Raises:
        AssertionError: If the case fails before the break, or passes after it.
    """
    baseline = cases.run(name, variant).result
    assert baseline.ok, baseline.message
    model, hf_model, tokens = cases.load(name, variant)
    breaker(model)
    result = compare_model(model, hf_model, tokens, atol=atol, spec_name=name, variant=variant)
    assert not result.ok, (
        f"{breaker.__name__} left {name}/{variant} matching HF: the test config misses it"
    )


def no_windows(model: Any) -> None:
    """Every layer attends globally."""
    for block in model.blocks:
        block.attn.window = None


def windows_everywhere(model: Any) -> None:
    """Every layer uses the config's sliding window."""
    for block in model.blocks:
        block.attn.window = model.cfg.window_size


def head_dim_scale(model: Any) -> None:
    """Scores scaled by ``1/sqrt(d_head)`` whatever the spec says."""
    for block in model.blocks:
        block.attn.scale = model.cfg.d_head**-0.5


def rotate_half(model: Any) -> None:
    """Rotary in the rotate-half style."""
    copy_trait(model.pos_embed, style="half")


def full_rotary(model: Any) -> None:
    """Rotary over the whole head."""
    model.pos_embed.dim = model.cfg.d_head


def zero_q_bias(model: Any) -> None:
    """Query biases zeroed."""
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_Q.zero_()


def no_qk_norm(model: Any) -> None:
    """Queries and keys not normalised."""
    for block in model.blocks:
        block.attn.q_norm = block.attn.k_norm = None


def no_logit_scale(model: Any) -> None:
    """Logits not scaled."""
    copy_trait(model.unembed, logit_scale=1.0)


def no_embed_scale(model: Any) -> None:
    """Embeddings not scaled."""
    model.embed.scale = None

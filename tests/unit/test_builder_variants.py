"""Builder variants of hand-written configs that TransformerLens's recorded models do not cover.

``positional_embedding_type="none"`` (tlcore's addition) gives a model with no positional
information: in a one-layer model, the output at a position depends on the multiset of the tokens
up to it, not on their order.
"""

from __future__ import annotations

import pytest
import torch

from tlcore import HookedTransformer, HookedTransformerConfig


def test_no_positions_model_cannot_see_order() -> None:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=4, n_ctx=8, d_vocab=11, act_fn="relu",
        positional_embedding_type="none", seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    assert not any("pos" in name for name, _ in model.named_parameters())
    tokens = torch.tensor([[3, 1, 4, 1, 5, 9]])
    shuffled = torch.tensor([[1, 4, 3, 5, 1, 9]])  # same first five tokens, other order
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        other = model(shuffled)
    assert "hook_pos_embed" not in cache
    torch.testing.assert_close(logits[0, -1], other[0, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[0, 1], other[0, 1])  # different prefixes differ


def test_standard_positions_do_see_order() -> None:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=4, n_ctx=8, d_vocab=11, act_fn="relu", seed=0
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        a = model(torch.tensor([[3, 1, 4, 1, 5, 9]]))[0, -1]
        b = model(torch.tensor([[1, 4, 3, 5, 1, 9]]))[0, -1]
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    "fields",
    [{"attn_only": True}, {"act_fn": "solu_ln"}, {"act_fn": "xielu"},
     {"act_fn": "relu", "positional_embedding_type": "none"}],
)  # fmt: skip
def test_variants_round_trip_through_to_dict(fields: dict) -> None:
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=4, d_head=4, d_vocab=10, **fields)
    again = HookedTransformerConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.traits == cfg.traits
    built = HookedTransformer(again)
    assert hasattr(built.blocks[0], "mlp") != bool(fields.get("attn_only"))

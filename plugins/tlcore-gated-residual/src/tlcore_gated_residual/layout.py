"""The ``block/gated_residual`` trait: each branch enters the residual stream through a gate.

``x + g_attn ⊙ [post](attn(ln1 x))``, then ``x + g_mlp ⊙ [post](mlp(ln2 x))``, where ``g_attn`` and
``g_mlp`` are learned per-channel vectors ``[d_model]`` and the optional post-norms
(``post_norms: true``) sit before the gates. No built-in layout gates its branches.

The trait declares this wiring as data (:meth:`GatedResidualTrait.wiring`): the gates are
:class:`~tlcore.components.wiring.ChannelGate` maps from each output hook to the residual stream.
That declaration is all tlcore's cache analysis (``decompose_resid``, ``logit_attrs``, head and
neuron stacks), weight processing (``fold_ln`` folds ``ln1``/``ln2``; centring is refused, since a
gate does not keep a centred write centred) and the parity tool's probes need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from tlcore.components.block import BlockTrait, Resid, TransformerBlock
from tlcore.components.context import ForwardContext
from tlcore.components.wiring import BlockWiring, Branch, ChannelGate


class GatedResidualTrait(BlockTrait):
    """Pre-norm branches whose outputs are gated per channel before the residual add."""

    kind: Literal["gated_residual"] = "gated_residual"
    post_norms: bool = False
    """Also normalise each branch output (``ln1_post``/``ln2_post``) before its gate."""

    def wiring(self) -> BlockWiring:  # noqa: D102
        attn_post = "ln1_post" if self.post_norms else None
        mlp_post = "ln2_post" if self.post_norms else None
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", "ln1", attn_post, (ChannelGate("attn_gate"),)),
                Branch("mlp", "hook_resid_mid", "ln2", mlp_post, (ChannelGate("mlp_gate"),)),
            )
        )


class GatedResidualBlock(TransformerBlock):
    """The gated layout; ``attn_gate`` and ``mlp_gate`` are ``[d_model]`` parameters.

    Args:
        trait: The layout.
        attn: The attention module.
        mlp: The MLP module.
        make_norm: Builds a block norm.
    """

    def __init__(
        self,
        trait: GatedResidualTrait,
        cfg: Any,
        layer: int,
        attn: nn.Module,
        mlp: nn.Module,
        make_norm: Callable[[], nn.Module | None],
    ) -> None:
        super().__init__(trait, cfg, layer, attn, mlp, make_norm)
        self.attn_gate = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        self.mlp_gate = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(
            self._norm("ln1_post", self._attention(resid_pre, ctx, "ln1"))
        )
        resid_mid = self.hook_resid_mid(resid_pre + self.attn_gate * attn_out)
        mlp_out = self.hook_mlp_out(self._norm("ln2_post", self._mlp(resid_mid, "ln2")))
        return self.hook_resid_post(resid_mid + self.mlp_gate * mlp_out)


def make_gated_residual_block(
    trait: GatedResidualTrait,
    cfg: Any,
    layer: int,
    attn: nn.Module,
    mlp: nn.Module,
    make_norm: Callable[[], nn.Module | None],
) -> GatedResidualBlock:
    """Component factory for ``block/gated_residual`` (the ``block`` slot's factory signature).

    Returns:
        The module.
    """
    return GatedResidualBlock(trait, cfg, layer, attn, mlp, make_norm)

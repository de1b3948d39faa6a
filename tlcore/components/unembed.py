"""Unembedding: ``logits = x @ W_U + b_U``, then an optional scale and final soft-cap."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.layout import LinearLayout
from tlcore.components.residual_io import Reader, ResidualIO
from tlcore.spec.traits import Trait


class UnembedTrait(Trait):
    """Unembedding parameters.

    ``bias``: the checkpoint has an lm_head bias (else ``b_U`` is zeros). ``logit_scale`` multiplies
    logits (Cohere 0.0625; Granite ``1/logits_scaling``); ``softcap`` is Gemma 2's final soft-cap.
    """

    slot = "unembed"
    linear_io = True
    kind: Literal["linear"] = "linear"
    bias: bool = False
    logit_scale: float = 1.0
    softcap: float | None = None

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        if self.softcap is not None:
            cfg.setdefault("output_logits_soft_cap", self.softcap)

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        if self.softcap is None:
            return {}
        return {
            "center_unembed": (
                f"the final logit soft-cap ({self.softcap}) is not shift-invariant, so centring "
                f"W_U would change the log-probs (TransformerLens refuses too)"
            )
        }


class Unembed(LinearLayout, ResidualIO):
    """``W_U [d_model, d_vocab_out]``, ``b_U [d_vocab_out]``.

    Args:
        cfg: The model config (``d_model``, ``d_vocab_out``, ``dtype``).
    """

    def __init__(self, trait: UnembedTrait, cfg: Any) -> None:
        super().__init__()
        self.trait = trait
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))

    linear_layouts = {"W_U": "matrix"}

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        return [Reader(self, "W_U", "b_U", 0)]

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_vocab_out"]:
        """Compute logits.

        Args:
            x: Final normalised residual.

        Returns:
            Logits.
        """
        logits = F.linear(x, self.W_U.T, self.b_U)
        if self.trait.logit_scale != 1.0:
            logits = logits * self.trait.logit_scale
        if self.trait.softcap is not None:
            logits = self.trait.softcap * torch.tanh(logits / self.trait.softcap)
        return logits


def make_unembed(trait: UnembedTrait, cfg: Any) -> Unembed:
    """Component factory for ``unembed/linear``.

    Returns:
        The module.
    """
    return Unembed(trait, cfg)

"""Token embedding: ``W_E[tokens]``, optionally scaled (Gemma, Granite) and normed (BLOOM)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from pydantic import Field
from torch import nn

from tlcore.spec.traits import Trait


class TokenEmbeddingTrait(Trait):
    """Token embedding parameters."""

    slot = "embedding"
    kind: Literal["token"] = "token"
    scale: float | None = None
    """Multiply embeddings by this (Gemma: √d_model; Granite: ``embedding_multiplier``)."""
    scale_in_param_dtype: bool = False
    """Round the scale to the parameter dtype first (Gemma stores it as a buffer of that dtype)."""
    norm: Any = Field(default=None, json_schema_extra={"trait_slot": "norm"})
    """A norm applied to the embeddings (BLOOM's ``word_embeddings_layernorm``)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("post_embedding_ln", self.norm is not None)


class Embed(nn.Module):
    """``W_E [d_vocab, d_model]`` lookup.

    Args:
        trait: Embedding parameters.
        cfg: The model config.
    """

    def __init__(self, trait: TokenEmbeddingTrait, cfg: Any) -> None:
        super().__init__()
        from tlcore.components.norms import build_norm

        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))
        self.scale = trait.scale
        self.scale_in_param_dtype = trait.scale_in_param_dtype
        self.ln = build_norm(trait.norm, cfg.d_model, cfg.dtype) if trait.norm else None

    def forward(
        self, tokens: Int[torch.Tensor, "batch pos"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Embed tokens.

        Args:
            tokens: Token ids.

        Returns:
            Embeddings.
        """
        x = self.W_E[tokens]
        if self.scale is not None:
            scale = (
                torch.tensor(self.scale, dtype=x.dtype) if self.scale_in_param_dtype else self.scale
            )
            x = x * scale
        return self.ln(x) if self.ln is not None else x


def make_embed(trait: TokenEmbeddingTrait, cfg: Any) -> Embed:
    """Component factory for ``embedding/token``.

    Args:
        trait: Parameters.
        cfg: Model config.

    Returns:
        The module.
    """
    return Embed(trait, cfg)

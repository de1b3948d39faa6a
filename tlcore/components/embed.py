"""Token embedding: ``W_E[tokens]``, optionally scaled (Gemma, Granite) and normed (BLOOM)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from pydantic import Field
from torch import nn

from tlcore.components.norms import NormFactory
from tlcore.components.residual_io import ResidualIO, Writer
from tlcore.errors import SpecError
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


class Embed(nn.Module, ResidualIO):
    """``W_E [d_vocab, d_model]`` lookup.

    Args:
        trait: Embedding parameters.
        cfg: The model config (``d_vocab``, ``d_model``, ``dtype``).
        norm_factory: Builds the embedding norm (needed when ``trait.norm`` is set).
    """

    def __init__(
        self, trait: TokenEmbeddingTrait, cfg: Any, norm_factory: NormFactory | None = None
    ) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))
        self.scale = trait.scale
        self.scale_in_param_dtype = trait.scale_in_param_dtype
        self.ln = None
        if trait.norm is not None:
            if norm_factory is None:
                raise SpecError("an embedding norm needs the builder's norm_factory")
            self.ln = norm_factory(trait.norm, cfg.d_model)

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [Writer(self, "W_E")]

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


def make_embed(
    trait: TokenEmbeddingTrait, cfg: Any, norm_factory: NormFactory | None = None
) -> Embed:
    """Component factory for ``embedding/token`` (arguments as :class:`Embed`).

    Returns:
        The module.
    """
    return Embed(trait, cfg, norm_factory)

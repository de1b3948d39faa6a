"""Encoder traits (BERT-style), with TransformerLens 2.x's ``HookedEncoder`` names and hooks.

Three kinds, used by :class:`tlcore.hooked_encoder.HookedEncoder`:

``embedding/token_typed``
    Token + position + token-type embeddings summed, then a norm (``embed.embed.W_E``,
    ``embed.pos_embed.W_pos``, ``embed.token_type_embed.W_token_type``, ``embed.ln``); hooks
    ``embed.hook_embed``, ``embed.hook_pos_embed``, ``embed.hook_token_type_embed``. The position
    module is the model's ``positional`` component, attached as ``embed.pos_embed`` by the model.
``block/post_norm_encoder``
    TransformerLens's ``BertBlock``: ``resid_mid = resid_pre + attn``, ``resid_post = ln1(resid_mid)
    + mlp(ln1(resid_mid))``, output ``ln2(resid_post)`` at ``hook_normalized_resid_post``. Unlike
    ``post_norm`` (whose ``hook_resid_mid``/``hook_resid_post`` are after the norms), the two
    residual hooks hold the sums before each norm, as in TransformerLens.
``head/mlm``
    The masked-LM transform before the unembedding: ``ln(act(x @ W + b))`` (``mlm_head.W``,
    ``mlm_head.b``, ``mlm_head.ln``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from pydantic import Field
from torch import nn

from tlcore.components.activations import get_activation
from tlcore.components.block import BlockTrait, TransformerBlock
from tlcore.components.context import ForwardContext
from tlcore.components.embed import Embed, TokenEmbeddingTrait
from tlcore.components.norms import NormFactory
from tlcore.components.positions import PositionalEncoding
from tlcore.components.residual_io import ResidualIO, Writer
from tlcore.components.wiring import BlockWiring, Branch
from tlcore.errors import SpecError
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait

Resid = Float[torch.Tensor, "batch pos d_model"]


# --------------------------------------------------------------------------- embedding/token_typed
class TokenTypedEmbeddingTrait(Trait):
    """Token, position and token-type (segment) embeddings summed, then normalised (BERT)."""

    slot = "embedding"
    kind: Literal["token_typed"] = "token_typed"
    token_types: int = 2
    """Rows of ``W_token_type`` (HF ``type_vocab_size``)."""
    norm: Any = Field(default=None, json_schema_extra={"trait_slot": "norm"})
    """The norm after the sum (BERT's ``embeddings.LayerNorm``)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("post_embedding_ln", self.norm is not None)


class TokenTypeEmbed(nn.Module, ResidualIO):
    """``W_token_type [token_types, d_model]`` lookup (TransformerLens's ``TokenTypeEmbed``)."""

    def __init__(self, n_types: int, d_model: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.W_token_type = nn.Parameter(torch.empty(n_types, d_model, dtype=dtype))

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [Writer(self, "W_token_type")]

    def forward(
        self, token_type_ids: Int[torch.Tensor, "batch pos"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Look up the embedding of each token's segment.

        Returns:
            ``W_token_type[token_type_ids]``.
        """
        return self.W_token_type[token_type_ids]


class TokenTypedEmbed(nn.Module):
    """TransformerLens's ``BertEmbed``: ``ln(embed(tokens) + pos_embed(positions) + types)``.

    Args:
        trait: The embedding parameters.
        cfg: The model config (``d_vocab``, ``d_model``, ``dtype``).
        norm_factory: Builds the norm after the sum.
    """

    def __init__(
        self, trait: TokenTypedEmbeddingTrait, cfg: Any, norm_factory: NormFactory | None = None
    ) -> None:
        super().__init__()
        self.embed = Embed(TokenEmbeddingTrait(), cfg)
        self.pos_embed: PositionalEncoding | None = None  # the model attaches its positional one
        self.token_type_embed = TokenTypeEmbed(trait.token_types, cfg.d_model, cfg.dtype)
        self.ln: nn.Module | None = None
        if trait.norm is not None:
            if norm_factory is None:
                raise SpecError("a token_typed embedding norm needs the builder's norm_factory")
            self.ln = norm_factory(trait.norm, cfg.d_model)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.hook_token_type_embed = HookPoint()

    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        """The token embedding matrix."""
        return self.embed.W_E

    def forward(
        self,
        tokens: Int[torch.Tensor, "batch pos"],
        token_type_ids: Int[torch.Tensor, "batch pos"] | None = None,
        positions: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Embed tokens, positions and segments, and normalise the sum.

        Args:
            tokens: Token ids.
            token_type_ids: Segment ids (default: all 0, one segment).
            positions: Absolute positions (default: ``0..pos-1`` in every row, as HF's BERT).

        Returns:
            The embedding that enters block 0.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(tokens)
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)[None].expand_as(tokens)
        x = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None and self.pos_embed.adds_to_residual:
            x = x + self.hook_pos_embed(self.pos_embed.embed(positions))
        x = x + self.hook_token_type_embed(self.token_type_embed(token_type_ids))
        return self.ln(x) if self.ln is not None else x


def make_token_typed_embed(
    trait: TokenTypedEmbeddingTrait, cfg: Any, norm_factory: NormFactory | None = None
) -> TokenTypedEmbed:
    """Component factory for ``embedding/token_typed`` (arguments as :class:`TokenTypedEmbed`).

    Returns:
        The module.
    """
    return TokenTypedEmbed(trait, cfg, norm_factory)


# ------------------------------------------------------------------ block/post_norm_encoder
class PostNormEncoderTrait(BlockTrait):
    """TransformerLens's ``BertBlock``: the norms follow each add; residual hooks before them."""

    kind: Literal["post_norm_encoder"] = "post_norm_encoder"
    output_hook: ClassVar[str] = "hook_normalized_resid_post"

    def wiring(self) -> BlockWiring:  # noqa: D102
        return BlockWiring(
            (Branch("attn", "hook_resid_pre"), Branch("mlp", "hook_resid_mid", norm="ln1")),
            stream_norms=("ln1", "ln2"),
        )


class PostNormEncoderBlock(TransformerBlock):
    """``resid_mid = x + attn x``; ``resid_post = ln1(resid_mid) + mlp(ln1(resid_mid))``.

    The block returns ``ln2(resid_post)`` through ``hook_normalized_resid_post``, TransformerLens's
    extra hook for this layout.
    """

    def __init__(
        self,
        trait: BlockTrait,
        cfg: Any,
        layer: int,
        attn: nn.Module,
        mlp: nn.Module,
        make_norm: Callable[[], nn.Module | None],
    ) -> None:
        super().__init__(trait, cfg, layer, attn, mlp, make_norm)
        self.hook_normalized_resid_post = HookPoint()

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map the block input to ``ln2(resid_post)``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._attention(resid_pre, ctx, None))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if self.cfg.use_hook_mlp_in else resid_mid
        normalized_mid = self._norm("ln1", mlp_in)
        mlp_out = self.hook_mlp_out(self.mlp(normalized_mid))
        resid_post = self.hook_resid_post(normalized_mid + mlp_out)
        return self.hook_normalized_resid_post(self._norm("ln2", resid_post))


def make_post_norm_encoder_block(
    trait: PostNormEncoderTrait,
    cfg: Any,
    layer: int,
    attn: nn.Module,
    mlp: nn.Module,
    make_norm: Callable[[], nn.Module | None],
) -> PostNormEncoderBlock:
    """Component factory for ``block/post_norm_encoder``.

    Returns:
        The module.
    """
    return PostNormEncoderBlock(trait, cfg, layer, attn, mlp, make_norm)


# --------------------------------------------------------------------------- head/mlm
class MLMHeadTrait(Trait):
    """The masked-LM transform between the last block and the unembedding: ``ln(act(x W + b))``."""

    slot = "head"
    kind: Literal["mlm"] = "mlm"
    act: str | None = None
    """Activation (default: the config's ``act_fn``)."""
    norm: Any = Field(default=None, json_schema_extra={"trait_slot": "norm"})
    """The norm after the activation."""


class MLMHead(nn.Module):
    """TransformerLens's ``BertMLMHead``: ``W [d_model, d_model]``, ``b``, activation, ``ln``.

    Args:
        trait: The head parameters.
        cfg: The model config.
        norm_factory: Builds ``ln``.
    """

    def __init__(
        self, trait: MLMHeadTrait, cfg: Any, norm_factory: NormFactory | None = None
    ) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, cfg.d_model, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        act = trait.act or cfg.act_fn
        if act is None:
            raise SpecError("head/mlm: no activation (set 'act' or config 'act_fn')")
        self.act_fn = get_activation(act)
        self.ln: nn.Module | None = None
        if trait.norm is not None:
            if norm_factory is None:
                raise SpecError("head/mlm with a norm needs the builder's norm_factory")
            self.ln = norm_factory(trait.norm, cfg.d_model)

    def forward(self, resid: Resid) -> Resid:
        """Transform the final residual stream for the unembedding.

        Returns:
            ``ln(act(resid @ W + b))``.
        """
        x = self.act_fn(F.linear(resid, self.W.T, self.b))
        return self.ln(x) if self.ln is not None else x


def make_mlm_head(
    trait: MLMHeadTrait, cfg: Any, norm_factory: NormFactory | None = None
) -> MLMHead:
    """Component factory for ``head/mlm`` (arguments as :class:`MLMHead`).

    Returns:
        The module.
    """
    return MLMHead(trait, cfg, norm_factory)


class Pooler(nn.Module):
    """TransformerLens's ``BertPooler``: ``tanh(x[:, 0] @ W + b)`` at ``hook_pooler_out``.

    Args:
        cfg: The model config (``d_model``, ``dtype``).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, cfg.d_model, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_pooler_out = HookPoint()

    def forward(self, resid: Resid) -> Float[torch.Tensor, "batch d_model"]:
        """Pool the first token's final residual.

        Returns:
            The pooled vector per sequence.
        """
        return self.hook_pooler_out(torch.tanh(F.linear(resid[:, 0], self.W.T, self.b)))


class NSPHead(nn.Module):
    """TransformerLens's ``BertNSPHead``: ``pooled @ W + b`` (``W [d_model, 2]``), ``hook_nsp_out``.

    Args:
        cfg: The model config (``d_model``, ``dtype``).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, 2, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(2, dtype=cfg.dtype))
        self.hook_nsp_out = HookPoint()

    def forward(
        self, pooled: Float[torch.Tensor, "batch d_model"]
    ) -> Float[torch.Tensor, "batch 2"]:
        """Score "sentence B follows sentence A" (index 0) against "random" (index 1).

        Returns:
            The two logits per sequence.
        """
        return self.hook_nsp_out(F.linear(pooled, self.W.T, self.b))


TRAITS: list[tuple[str, type[Trait], Callable[..., Any]]] = [
    ("embedding", TokenTypedEmbeddingTrait, make_token_typed_embed),
    ("block", PostNormEncoderTrait, make_post_norm_encoder_block),
    ("head", MLMHeadTrait, make_mlm_head),
]
"""The encoder kinds, registered by the built-in plugin with the others."""

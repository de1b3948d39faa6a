"""``HookedEncoder``: TransformerLens 2.x's BERT-style encoder on tlcore's spec engine.

The model is resolved and built as a decoder is: an encoder spec (``specs/encoders/bert.yaml``) and
the checkpoint's HF config become a :class:`~tlcore.plan.ModelPlan`, the generic builder makes the
embedding, blocks and unembedding from the plan's trait kinds (``embedding/token_typed``,
``block/post_norm_encoder``, bidirectional ``attention``), the ``head`` slot makes the masked-LM
transform, and the loader streams the checkpoint through the spec's weight map. Names follow
TransformerLens 2.x (``embed.embed.W_E``, ``blocks.0.hook_normalized_resid_post``, ``mlm_head.W``,
``unembed.W_U``), so its hooks, caches and state dicts carry over::

    model = HookedEncoder.from_pretrained("path/to/bert")
    logits, cache = model.run_with_cache(tokens, one_zero_attention_mask=mask)

A checkpoint without a masked-LM head (a bare ``BertModel`` such as a sentence encoder) loads
without ``mlm_head``/``unembed``; ``return_type="embeddings"`` gives its final hidden states.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from tlcore.build import build_modules
from tlcore.components.context import ForwardContext
from tlcore.components.encoder import NSPHead, Pooler, TokenTypedEmbed
from tlcore.config import HookedTransformerConfig
from tlcore.config_checks import spec_errors_named
from tlcore.encoder_loading import EncoderLoadingMixin, init_weights_, plan_from_tl_fields
from tlcore.errors import InputValidationError, SpecError
from tlcore.hooks import HookedRootModule, HookPoint
from tlcore.model_flags import FlagsMixin
from tlcore.model_weights import WeightsMixin
from tlcore.plan import ModelPlan
from tlcore.validation import check_tokens

logger = logging.getLogger(__name__)

EncoderReturnType = Literal["logits", "predictions", "embeddings"] | None
HEADS = ("mlm_head", "pooler", "nsp_head")
"""The optional output modules; a checkpoint may hold any of them (``unembed`` goes with
``mlm_head``)."""


class HookedEncoder(EncoderLoadingMixin, WeightsMixin, FlagsMixin, HookedRootModule):
    """A BERT-style encoder with a hook point at every TransformerLens 2.x activation name.

    Args:
        cfg: A model plan resolved from an encoder spec, or TransformerLens's config fields (a
            ``HookedTransformerConfig`` or a dict: ``d_model``, ``n_layers``, ``n_heads``,
            ``d_mlp``, ``d_vocab``, ``n_ctx``, ``act_fn``...), resolved through the BERT spec.
        tokenizer: A transformers tokenizer, or None.
        move_to_device: Move the model to ``cfg.device`` after building.
        heads: Which of ``mlm_head``, ``pooler`` and ``nsp_head`` to build (default: all).
        init_weights: Randomly initialise the parameters.
    """

    HEADS = HEADS

    def __init__(
        self,
        cfg: ModelPlan | HookedTransformerConfig | dict[str, Any],
        tokenizer: Any = None,
        move_to_device: bool = True,
        heads: tuple[str, ...] = HEADS,
        init_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        plan = cfg if isinstance(cfg, ModelPlan) else plan_from_tl_fields(cfg, "bert")
        self.plan = plan
        self.cfg = cfg = plan.cfg
        with spec_errors_named(cfg):
            modules = build_modules(plan)
            head = self._make_head(plan) if "mlm_head" in heads else None
        if not isinstance(modules.embed, TokenTypedEmbed):
            raise SpecError(
                f"HookedEncoder needs the embedding kind 'token_typed' (spec '{cfg.spec_name}' has "
                f"'{cfg.trait('embedding').kind}')"
            )
        self.embed = modules.embed
        self.embed.pos_embed = modules.pos_embed  # TransformerLens's embed.pos_embed.W_pos
        self.hook_full_embed = HookPoint()
        self.blocks = modules.blocks
        self.mlm_head = head
        self.unembed = modules.unembed if head is not None else None
        self.pooler = Pooler(cfg) if "pooler" in heads or "nsp_head" in heads else None
        self.nsp_head = NSPHead(cfg) if "nsp_head" in heads else None
        self.tokenizer = tokenizer
        if init_weights:
            init_weights_(self, cfg.seed)
        if move_to_device and cfg.device is not None and not self._on_meta():
            self.to(cfg.device)
        self.setup()

    @staticmethod
    def _make_head(plan: ModelPlan) -> nn.Module | None:
        if "head" not in plan.cfg.traits:
            return None
        trait = plan.cfg.trait("head")
        cfg = plan.cfg

        def norm_factory(norm: Any, d: int | tuple[int, ...]) -> nn.Module | None:
            return plan.component("norm", norm.kind)(norm, d, cfg.dtype)

        module: nn.Module = plan.component("head", trait.kind)(trait, cfg, norm_factory)
        return module

    def _on_meta(self) -> bool:
        return any(p.is_meta for p in self.parameters())

    # -- tokens ----------------------------------------------------------------------------------
    def to_tokens(
        self, input: str | list[str], move_to_device: bool = True, truncate: bool = True
    ) -> tuple[
        Int[torch.Tensor, "batch pos"],
        Int[torch.Tensor, "batch pos"],
        Int[torch.Tensor, "batch pos"],
    ]:
        """Tokenise text (padding to the longest): tokens, token-type ids and the attention mask.

        Args:
            input: A text or a list of texts (a pair of sentences as ``"A [SEP] B"`` text).
            move_to_device: Put the tensors on the model's device.
            truncate: Cut sequences longer than ``n_ctx``.

        Returns:
            ``(tokens, token_type_ids, attention_mask)``.

        Raises:
            InputValidationError: Without a tokenizer.
        """
        if self.tokenizer is None:
            raise InputValidationError("to_tokens needs a tokenizer (pass tokenizer=)", "input")
        enc = self.tokenizer(
            input,
            return_tensors="pt",
            padding=True,
            truncation=truncate,
            max_length=self.cfg.n_ctx if truncate else None,
        )
        tokens = enc["input_ids"]
        types = enc.get("token_type_ids")
        types = torch.zeros_like(tokens) if types is None else types
        mask = enc["attention_mask"]
        if move_to_device:
            device = self.embed.W_E.device
            tokens, types, mask = tokens.to(device), types.to(device), mask.to(device)
        return tokens, types, mask

    # -- forward ---------------------------------------------------------------------------------
    def encoder_output(
        self,
        tokens: Int[torch.Tensor, "batch pos"],
        token_type_ids: Int[torch.Tensor, "batch pos"] | None = None,
        one_zero_attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Embed and run every block: the final residual stream (BERT's last hidden state).

        Args:
            tokens: Token ids ``[batch, pos]``.
            token_type_ids: Segment ids (default: all 0).
            one_zero_attention_mask: 1 for tokens to attend to, 0 for padding (default: all 1).

        Returns:
            ``[batch, pos, d_model]``.
        """
        tokens = check_tokens(tokens, self.cfg.d_vocab).to(self.embed.W_E.device)
        batch, n = tokens.shape
        if n > self.cfg.n_ctx:
            raise InputValidationError(
                f"{n} tokens exceed the model's n_ctx={self.cfg.n_ctx} positions", "tokens"
            )
        ctx = self._context(tokens, one_zero_attention_mask)
        if token_type_ids is not None:
            token_type_ids = token_type_ids.to(tokens.device)
        resid = self.hook_full_embed(self.embed(tokens, token_type_ids, ctx.positions))
        for block in self.blocks:
            resid = block(resid, ctx)
        return resid

    def _context(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> ForwardContext:
        batch, n = tokens.shape
        positions = torch.arange(n, device=tokens.device)[None].expand(batch, n)
        if mask is not None:
            if tuple(mask.shape) != (batch, n):
                raise InputValidationError(
                    f"one_zero_attention_mask has shape {tuple(mask.shape)}, tokens {(batch, n)}",
                    "one_zero_attention_mask",
                )
            mask = mask.to(tokens.device)
            mask = None if bool(mask.all()) else mask
        return ForwardContext(positions, positions, mask, causal=False)

    def forward(
        self,
        input: str | list[str] | Int[torch.Tensor, "batch pos"],
        return_type: EncoderReturnType = "logits",
        token_type_ids: Int[torch.Tensor, "batch pos"] | None = None,
        one_zero_attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Any:
        """Run the encoder and its masked-LM head.

        Args:
            input: Text, texts, or tokens ``[batch, pos]``.
            return_type: ``"logits"`` ``[batch, pos, d_vocab]``, ``"predictions"`` (the decoded
                top token at each ``[MASK]``), ``"embeddings"`` (the final residual stream, no head
                needed) or None.
            token_type_ids: Segment ids (from the tokenizer for text input).
            one_zero_attention_mask: Padding mask (from the tokenizer for text input).

        Returns:
            What ``return_type`` names.

        Raises:
            InputValidationError: For an unknown ``return_type``, text without a tokenizer, or
                logits from a checkpoint without a masked-LM head.
        """
        if return_type not in ("logits", "predictions", "embeddings", None):
            raise InputValidationError(
                f"return_type must be 'logits', 'predictions', 'embeddings' or None, "
                f"got {return_type!r}",
                "return_type",
            )
        if isinstance(input, (str, list)):
            tokens, types, mask = self.to_tokens(input)
            token_type_ids = types if token_type_ids is None else token_type_ids
            one_zero_attention_mask = (
                mask if one_zero_attention_mask is None else one_zero_attention_mask
            )
        else:
            tokens = input
        resid = self.encoder_output(tokens, token_type_ids, one_zero_attention_mask)
        if return_type == "embeddings":
            return resid
        if self.mlm_head is None or self.unembed is None:
            if return_type is None:
                return None
            raise InputValidationError(
                "this checkpoint has no masked-LM head (a bare encoder): use "
                "return_type='embeddings' or encoder_output()",
                "return_type",
            )
        logits = self.unembed(self.mlm_head(resid))
        if return_type == "predictions":
            return self._predictions(tokens, logits)
        return logits if return_type == "logits" else None

    def _predictions(self, tokens: torch.Tensor, logits: torch.Tensor) -> str | list[str]:
        if self.tokenizer is None or self.tokenizer.mask_token_id is None:
            raise InputValidationError(
                "return_type='predictions' needs a tokenizer with a mask token", "return_type"
            )
        at_masks = logits[tokens.to(logits.device) == self.tokenizer.mask_token_id]
        predictions = self.tokenizer.decode(at_masks.argmax(dim=-1))
        if " " in predictions:  # several masks: one entry each, as TransformerLens
            return [f"Prediction {i}: {p}" for i, p in enumerate(predictions.split(" "))]
        return str(predictions)

    # -- weights ---------------------------------------------------------------------------------
    @property
    def W_pos(self) -> Float[torch.Tensor, "n_ctx d_model"]:
        """The learned positional embedding."""
        return self.embed.pos_embed.W_pos

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        """The unembedding (the masked-LM decoder)."""
        if self.unembed is None:
            raise AttributeError("this checkpoint has no masked-LM head, so no W_U")
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[torch.Tensor, " d_vocab"]:
        """The unembedding bias."""
        if self.unembed is None:
            raise AttributeError("this checkpoint has no masked-LM head, so no b_U")
        return self.unembed.b_U


__all__ = ["HEADS", "HookedEncoder"]

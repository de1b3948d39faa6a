"""``HookedTransformer``: TransformerLens 2.x's model API on tlcore's spec-driven engine.

Load a checkpoint, run it, cache any activation and edit activations with hooks::

    model = HookedTransformer.from_pretrained_no_processing("path/to/checkpoint")
    logits, cache = model.run_with_cache(tokens)

``from_pretrained`` applies TransformerLens's default weight processing (fold LayerNorm, centre
writing weights and the unembedding, fold value biases), which changes logits by a per-position
constant; ``from_pretrained_no_processing`` gives HuggingFace's logits. ``model.cfg`` records what
was applied.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import nn

from tlcore.build import build_modules
from tlcore.components.context import ForwardContext
from tlcore.config import HookedTransformerConfig
from tlcore.config_checks import spec_errors_named
from tlcore.config_fields import tokenizer_for_config
from tlcore.errors import InputValidationError
from tlcore.hooks import HookedRootModule, HookPoint
from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.model_flags import FlagsMixin
from tlcore.model_generate import GenerateMixin
from tlcore.model_loading import LoadingMixin
from tlcore.model_state import StateDictMixin
from tlcore.model_tokens import TokenizerMixin
from tlcore.model_weights import WeightsMixin
from tlcore.plan import ModelPlan, plan_for_config
from tlcore.utils.losses import lm_cross_entropy_loss
from tlcore.validation import (
    check_attention_mask,
    check_layer_range,
    check_positions,
    check_return_type,
    check_tokens,
)

logger = logging.getLogger(__name__)

USE_DEFAULT_VALUE = None
ReturnType = Literal["logits", "loss", "both"] | None


class Output(NamedTuple):
    """``return_type="both"``: logits and loss."""

    logits: Float[torch.Tensor, "batch pos d_vocab"]
    loss: torch.Tensor


class HookedTransformer(
    TokenizerMixin,
    GenerateMixin,
    WeightsMixin,
    LoadingMixin,
    StateDictMixin,
    FlagsMixin,
    HookedRootModule,
):
    """A decoder-only transformer with a hook point at every TransformerLens activation name.

    Args:
        cfg: A model plan (:func:`tlcore.plan.resolve_plan`), a resolved config, or a config
            written by hand with TransformerLens's fields (a ``HookedTransformerConfig`` or a
            dict), whose traits are derived from those fields.
        tokenizer: A transformers tokenizer, or None.
        move_to_device: Move the model to ``cfg.device`` after building.
        default_padding_side: ``"right"`` or ``"left"``.
        init_weights: Randomly initialise parameters (set False when weights are loaded next;
            ``cfg.init_weights=False`` also skips it, as in TransformerLens).
    """

    def __init__(
        self,
        cfg: ModelPlan | HookedTransformerConfig | dict[str, Any],
        tokenizer: Any = None,
        move_to_device: bool = True,
        default_padding_side: Literal["left", "right"] | None = None,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        plan = cfg if isinstance(cfg, ModelPlan) else plan_for_config(cfg)
        self.plan = plan
        self.cfg = cfg = plan.cfg
        if default_padding_side is not None:
            cfg.default_padding_side = default_padding_side
        tokenizer = tokenizer_for_config(cfg, tokenizer)  # loads tokenizer_name; fills d_vocab=-1
        with spec_errors_named(cfg):  # a component's error names the spec file
            modules = build_modules(plan)
        self.embed = modules.embed
        self.hook_embed = HookPoint()
        self.pos_embed = modules.pos_embed
        self.hook_pos_embed = HookPoint()
        self.hook_tokens = HookPoint()
        self.blocks = modules.blocks
        self.ln_final: nn.Module | None = modules.ln_final
        self.unembed = modules.unembed
        self.tokenizer = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer, default_padding_side=cfg.default_padding_side)  # type: ignore[arg-type]
        if init_weights and cfg.init_weights:
            self.init_weights()
        if move_to_device and cfg.device is not None and not self._on_meta():
            self.to(cfg.device)
        self.setup()

    def _on_meta(self) -> bool:
        return any(p.is_meta for p in self.parameters())

    # -- construction --------------------------------------------------------------------------
    def init_weights(self, seed: int | None = None) -> None:
        """Randomly initialise as TransformerLens does, by ``cfg.init_mode`` (:mod:`tlcore.init`).

        Args:
            seed: Seed torch's global generator with this (default: ``cfg.seed``; None draws
                from it as it is, as TransformerLens does).
        """
        from tlcore.init import init_weights

        init_weights(self, self.cfg, seed)
        self.optimize_layout_()

    def optimize_layout_(self) -> HookedTransformer:
        """Re-stride projection weights so matmuls run HF's kernels with no copy (values unchanged).

        Returns:
            The model.
        """
        for module in self.modules():
            relayout = getattr(module, "optimize_layout_", None)
            if module is not self and callable(relayout):
                relayout()
        return self

    # -- forward ---------------------------------------------------------------------------------
    def input_to_embed(
        self,
        input: str | list[str] | Int[torch.Tensor, "batch pos"] | Int[torch.Tensor, " pos"],
        prepend_bos: bool | None = USE_DEFAULT_VALUE,
        padding_side: Literal["left", "right"] | None = USE_DEFAULT_VALUE,
        attention_mask: torch.Tensor | None = None,
        past_kv_cache: HookedTransformerKeyValueCache | None = None,
    ) -> tuple[
        Float[torch.Tensor, "batch pos d_model"],
        Int[torch.Tensor, "batch pos"],
        Float[torch.Tensor, "batch pos d_model"] | None,
        Int[torch.Tensor, "batch k_pos"] | None,
    ]:
        """Tokenise (if needed) and embed, as TransformerLens's ``input_to_embed``.

        ``model(residual, start_at_layer=0, ...)`` continues from here (pass ``tokens``,
        ``shortformer_pos_embed`` and ``attention_mask`` on where they matter).

        Args:
            input: Text, a list of texts, or tokens.
            prepend_bos: Override the default BOS handling.
            padding_side: Override the default padding side.
            attention_mask: 1 for real tokens, 0 for padding.
            past_kv_cache: KV cache when generating (the mask returned then covers its positions).

        Returns:
            ``(residual, tokens, shortformer_pos_embed, attention_mask)``: the positional
            embeddings only for shortformer models, the mask only when one was given, made from
            padded texts, or kept by the KV cache (None otherwise).
        """
        resid, tokens, ctx = self._embed(
            input, prepend_bos, padding_side, attention_mask, past_kv_cache
        )
        return resid, tokens, ctx.shortformer_pos_embed, ctx.attention_mask

    def _embed(
        self,
        input: str | list[str] | torch.Tensor,
        prepend_bos: bool | None,
        padding_side: Literal["left", "right"] | None,
        attention_mask: torch.Tensor | None,
        past_kv_cache: HookedTransformerKeyValueCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor, ForwardContext]:
        """``input_to_embed`` with the forward context: ``(residual, tokens, ctx)``."""
        if isinstance(input, (str, list)):
            tokens, mask = self._tokens_and_mask(input, prepend_bos, padding_side)
            attention_mask = mask if attention_mask is None else attention_mask
        else:
            tokens = check_tokens(input, self.cfg.d_vocab)  # ids in range, integral, [batch, pos]
        tokens = tokens.to(self._device())
        if self.cfg.use_hook_tokens:
            tokens = self.hook_tokens(tokens)
        ctx = self._context(
            tokens.shape[0], tokens.shape[1], attention_mask, past_kv_cache, tokens.device
        )
        resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed.adds_to_residual:
            resid = resid + self.hook_pos_embed(self.pos_embed.embed(ctx.positions))
        elif self.pos_embed.adds_to_qk_input:
            ctx.shortformer_pos_embed = self.hook_pos_embed(self.pos_embed.embed(ctx.positions))
        return resid, tokens, ctx

    def _device(self) -> torch.device:
        return self.embed.W_E.device

    def _context(
        self,
        batch: int,
        q_len: int,
        attention_mask: torch.Tensor | None,
        past_kv_cache: HookedTransformerKeyValueCache | None,
        device: torch.device,
    ) -> ForwardContext:
        check_attention_mask(attention_mask, batch, q_len, past_kv_cache is not None)
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        if past_kv_cache is not None:
            new = (
                attention_mask
                if attention_mask is not None
                else torch.ones(batch, q_len, dtype=torch.int, device=device)
            )
            full = past_kv_cache.append_attention_mask(new)
        else:
            full = attention_mask  # type: ignore[assignment]
        k_len = full.shape[1] if full is not None else q_len
        if full is not None and not bool(full.all()):
            key_positions = (full.cumsum(-1) - 1).clamp(min=0).to(torch.long)
            key_mask = full
        else:
            key_positions = torch.arange(k_len, device=device)[None].expand(batch, k_len)
            key_mask = None
        positions = key_positions[:, k_len - q_len :]
        check_positions(self, positions, k_len)  # learned positions stop at n_ctx
        causal = bool(getattr(self.cfg.traits.get("attention"), "causal", True))
        return ForwardContext(
            positions, key_positions, key_mask, past_kv_cache, causal=causal, attention_mask=full
        )

    def forward(
        self,
        input: str
        | list[str]
        | Int[torch.Tensor, "batch pos"]
        | Float[torch.Tensor, "batch pos d_model"],
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = USE_DEFAULT_VALUE,
        padding_side: Literal["left", "right"] | None = USE_DEFAULT_VALUE,
        start_at_layer: int | None = None,
        tokens: Int[torch.Tensor, "batch pos"] | None = None,
        shortformer_pos_embed: Float[torch.Tensor, "batch pos d_model"] | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        past_kv_cache: HookedTransformerKeyValueCache | None = None,
    ) -> Any:
        """Run the model.

        Args:
            input: Text, texts, tokens ``[batch, pos]`` (or ``[pos]``), or, with ``start_at_layer``,
                the residual stream entering that layer.
            return_type: ``"logits"``, ``"loss"``, ``"both"`` (an :class:`Output`) or None.
            loss_per_token: Return per-token losses ``[batch, pos-1]``.
            prepend_bos: Override the default BOS handling for text input.
            padding_side: Override the default padding side for text input.
            start_at_layer: Start at this block, with ``input`` as its ``resid_pre``.
            tokens: Tokens for the loss (and the padding mask) when ``start_at_layer`` is set.
            shortformer_pos_embed: Positional embeddings for shortformer models with
                ``start_at_layer``.
            attention_mask: 1 for real tokens, 0 for padding.
            stop_at_layer: Stop before this block (exclusive) and return its ``resid_pre``.
            past_kv_cache: KV cache for generation.

        Returns:
            Logits ``[batch, pos, d_vocab]``, a loss, an :class:`Output`, None, or (with
            ``stop_at_layer``) the residual stream.
        """
        check_return_type(return_type)
        check_layer_range(start_at_layer, stop_at_layer, self.cfg.n_layers)
        if start_at_layer is None:
            resid, tokens, ctx = self._embed(
                input, prepend_bos, padding_side, attention_mask, past_kv_cache
            )
        else:
            resid = input  # type: ignore[assignment]
            ctx = self._context(
                resid.shape[0], resid.shape[1], attention_mask, past_kv_cache, resid.device
            )
            if self.pos_embed.adds_to_qk_input:
                ctx.shortformer_pos_embed = (
                    shortformer_pos_embed
                    if shortformer_pos_embed is not None
                    else self.pos_embed.embed(ctx.positions)
                )
        start = start_at_layer or 0
        for block in self.blocks[start:stop_at_layer]:
            resid = block(resid, ctx)
        if stop_at_layer is not None:
            return resid
        if self.ln_final is not None:
            resid = self.ln_final(resid)
        logits = self.unembed(resid)
        if return_type is None:
            return None
        if return_type == "logits":
            return logits
        if tokens is None:
            raise InputValidationError(
                "return_type='loss' needs tokens (pass tokens= with start_at_layer)", "tokens"
            )
        loss = lm_cross_entropy_loss(
            logits, tokens, attention_mask=attention_mask, per_token=loss_per_token
        )
        if return_type == "loss":
            return loss
        return Output(logits, loss)

    def loss_fn(
        self,
        logits: Float[torch.Tensor, "batch pos d_vocab"],
        tokens: Int[torch.Tensor, "batch pos"],
        attention_mask: torch.Tensor | None = None,
        per_token: bool = False,
    ) -> torch.Tensor:
        """Next-token cross-entropy loss.

        Args:
            attention_mask: Padding mask.
            per_token: Return per-token losses.

        Returns:
            The loss.
        """
        return lm_cross_entropy_loss(
            logits, tokens, attention_mask=attention_mask, per_token=per_token
        )

    # -- devices ---------------------------------------------------------------------------------
    def move_model_modules_to_device(self) -> None:
        """Move every module to ``cfg.device``."""
        if self.cfg.device is not None:
            self.to(self.cfg.device)

    def cuda(self, device: int | torch.device | None = None) -> HookedTransformer:  # type: ignore[override]
        """Move to CUDA.

        Args:
            device: CUDA device.

        Returns:
            The model.
        """
        self.cfg.device = str(torch.device("cuda" if device is None else device))
        return super().cuda(device)

    def cpu(self) -> HookedTransformer:
        """Move to the CPU.

        Returns:
            The model.
        """
        self.cfg.device = "cpu"
        return super().cpu()

    def mps(self) -> HookedTransformer:
        """Move to Apple's MPS device (TransformerLens's ``mps``).

        Returns:
            The model.
        """
        return self.to("mps")

    def to(self, *args: Any, **kwargs: Any) -> HookedTransformer:  # type: ignore[override]
        """Move/cast like ``nn.Module.to``, keeping ``cfg.device``/``cfg.dtype`` in step.

        Args:
            *args: As ``nn.Module.to``.
            **kwargs: As ``nn.Module.to``.

        Returns:
            The model.
        """
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self.cfg.device = str(device)
        if dtype is not None:
            self.cfg.dtype = dtype
        return super().to(*args, **kwargs)

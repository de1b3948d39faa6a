"""``HookedEncoderDecoder``: TransformerLens 2.x's T5-style model on tlcore's spec engine.

An encoder spec (``specs/encoders/t5.yaml``) and the checkpoint's HF config resolve into a
:class:`~tlcore.plan.ModelPlan`. The generic builder makes the shared embedding, the encoder stack
(``block``/``attention``/``mlp`` slots), its final norm and the unembedding; the decoder stack
takes its blocks from the ``decoder_block`` slot (``pre_norm_cross``), self-attention and MLP from
the same slots as the encoder, and cross-attention from the ``cross_attention`` slot. Each stack
has its own positional component (T5's relative buckets), registered as block 0's
``attn.rel_pos_bias`` as in TransformerLens. Names follow TransformerLens 2.x
(``encoder.0.hook_resid_post``, ``decoder.1.cross_attn.hook_pattern``,
``decoder.0.hook_resid_mid_cross``, ``encoder_final_ln``, ``decoder_final_ln``)::

    model = HookedEncoderDecoder.from_pretrained("path/to/t5")
    logits, cache = model.run_with_cache(tokens, decoder_input=decoder_tokens)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import nn

from tlcore.build import build_modules
from tlcore.components.context import ForwardContext
from tlcore.components.cross import CrossContext
from tlcore.config import HookedTransformerConfig
from tlcore.config_checks import spec_errors_named
from tlcore.encoder_loading import EncoderLoadingMixin, init_weights_, plan_from_tl_fields
from tlcore.errors import InputValidationError
from tlcore.hooks import HookedRootModule, HookPoint
from tlcore.model_flags import FlagsMixin
from tlcore.model_weights import WeightsMixin
from tlcore.plan import ModelPlan
from tlcore.utils.sampling import sample_logits
from tlcore.validation import check_tokens

logger = logging.getLogger(__name__)


class HookedEncoderDecoder(EncoderLoadingMixin, WeightsMixin, FlagsMixin, HookedRootModule):
    """A T5-style encoder-decoder with a hook point at every TransformerLens 2.x activation name.

    Args:
        cfg: A model plan resolved from an encoder-decoder spec, or TransformerLens's config
            fields (a dict or ``HookedTransformerConfig``), resolved through the T5 spec.
        tokenizer: A transformers tokenizer, or None.
        move_to_device: Move the model to ``cfg.device`` after building.
        heads: Unused (encoder-decoders have no optional output modules).
        init_weights: Randomly initialise the parameters.
    """

    def __init__(
        self,
        cfg: ModelPlan | HookedTransformerConfig | dict[str, Any],
        tokenizer: Any = None,
        move_to_device: bool = True,
        heads: tuple[str, ...] = (),
        init_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        plan = cfg if isinstance(cfg, ModelPlan) else plan_from_tl_fields(cfg, "t5")
        self.plan = plan
        self.cfg = cfg = plan.cfg
        with spec_errors_named(cfg):
            modules = build_modules(plan)
            decoder, decoder_positional = self._decoder_stack(plan)
        self.embed: Any = modules.embed
        self.hook_embed = HookPoint()
        self.encoder = modules.blocks
        self.encoder_final_ln = modules.ln_final
        self.decoder = decoder
        self.decoder_final_ln = self._norm(plan, "final_norm")
        self.unembed: Any = modules.unembed
        for stack, positional in (
            (self.encoder, modules.pos_embed),
            (self.decoder, decoder_positional),
        ):
            if len(stack) and any(True for _ in positional.parameters()):
                attn: Any = stack[0].attn
                attn.rel_pos_bias = positional  # TransformerLens's encoder.0.attn.rel_pos_bias
                attn.rel_pos_hook = HookPoint()
                use_hook = getattr(positional, "use_hook", None)
                if callable(use_hook):
                    use_hook(attn.rel_pos_hook)
        self.tokenizer = tokenizer
        if init_weights:
            init_weights_(self, cfg.seed)
        if (
            move_to_device
            and cfg.device is not None
            and not any(p.is_meta for p in self.parameters())
        ):
            self.to(cfg.device)
        self.setup()

    @staticmethod
    def _norm(plan: ModelPlan, slot: str) -> nn.Module | None:
        trait = plan.cfg.trait(slot)
        module: nn.Module | None = plan.component(slot, trait.kind)(
            trait, plan.cfg.d_model, plan.cfg.dtype
        )
        return module

    @staticmethod
    def _decoder_stack(plan: ModelPlan) -> tuple[nn.ModuleList, nn.Module]:
        """The decoder blocks (self-attention, cross-attention, MLP) and their positional module."""
        cfg = plan.cfg

        def make(slot: str, *args: object) -> Any:
            trait = cfg.trait(slot)
            return plan.component(slot, trait.kind)(trait, *args)

        def norm_factory(trait: Any, d: int | tuple[int, ...]) -> nn.Module | None:
            module: nn.Module | None = plan.component("norm", trait.kind)(trait, d, cfg.dtype)
            return module

        def make_norm() -> nn.Module | None:
            return norm_factory(cfg.trait("norm"), cfg.d_model)

        positional = make("positional", cfg)
        blocks = []
        for layer in range(cfg.n_layers):
            attn = make("attention", cfg, layer, positional, norm_factory)
            cross = make("cross_attention", cfg, layer, None, norm_factory)
            mlp = make("mlp", cfg, layer)
            blocks.append(make("decoder_block", cfg, layer, attn, mlp, make_norm, cross))
        return nn.ModuleList(blocks), positional

    # -- tokens ----------------------------------------------------------------------------------
    def to_tokens(
        self, input: str | list[str], move_to_device: bool = True, truncate: bool = True
    ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
        """Tokenise text (padding to the longest): tokens and the attention mask.

        Args:
            input: A text or a list of texts.
            move_to_device: Put the tensors on the model's device.
            truncate: Cut sequences longer than ``n_ctx``.

        Returns:
            ``(tokens, attention_mask)``.

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
        tokens, mask = enc["input_ids"], enc["attention_mask"]
        if move_to_device:
            tokens, mask = tokens.to(self._device()), mask.to(self._device())
        return tokens, mask

    def _device(self) -> torch.device:
        return self.embed.W_E.device

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        input: str | list[str] | Int[torch.Tensor, "batch pos"],
        decoder_input: Int[torch.Tensor, "batch decoder_pos"] | None = None,
        return_type: Literal["logits"] | None = "logits",
        one_zero_attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> Float[torch.Tensor, "batch decoder_pos d_vocab"] | None:
        """Encode ``input`` and decode ``decoder_input`` against it.

        Args:
            input: Text, texts, or encoder tokens ``[batch, pos]``.
            decoder_input: Decoder tokens ``[batch, decoder_pos]`` (for text input, default: one
                pad token per row, T5's decoder start).
            return_type: ``"logits"`` or None.
            one_zero_attention_mask: Encoder padding mask (from the tokenizer for text input).

        Returns:
            Decoder logits ``[batch, decoder_pos, d_vocab]``, or None.

        Raises:
            InputValidationError: Without ``decoder_input`` for token input, or for an unknown
                ``return_type``.
        """
        if return_type not in ("logits", None):
            raise InputValidationError(
                f"return_type must be 'logits' or None, got {return_type!r}", "return_type"
            )
        if isinstance(input, (str, list)):
            tokens, mask = self.to_tokens(input)
            one_zero_attention_mask = (
                mask if one_zero_attention_mask is None else one_zero_attention_mask
            )
            if decoder_input is None:
                start = getattr(self.tokenizer, "pad_token_id", None) or 0
                decoder_input = torch.full((tokens.shape[0], 1), start, device=tokens.device)
        else:
            tokens = input
        if decoder_input is None:
            raise InputValidationError(
                "token input needs decoder_input (the decoder's tokens so far)", "decoder_input"
            )
        tokens = check_tokens(tokens, self.cfg.d_vocab).to(self._device())
        decoder_input = check_tokens(decoder_input, self.cfg.d_vocab).to(self._device())
        enc_ctx = self._context(tokens, one_zero_attention_mask, causal=False)
        resid = self.hook_embed(self.embed(tokens))
        for block in self.encoder:
            resid = block(resid, enc_ctx)
        encoder_resid = self.encoder_final_ln(resid) if self.encoder_final_ln is not None else resid
        dec_ctx = self._context(decoder_input, None, causal=True)
        cross = ForwardContext(dec_ctx.positions, enc_ctx.positions, enc_ctx.key_mask, causal=False)
        ctx = CrossContext(
            dec_ctx.positions, dec_ctx.key_positions, causal=True,
            encoder_resid=encoder_resid, cross=cross,
        )  # fmt: skip
        dec = self.embed(decoder_input)
        for block in self.decoder:
            dec = block(dec, ctx)
        if self.decoder_final_ln is not None:
            dec = self.decoder_final_ln(dec)
        logits: torch.Tensor = self.unembed(dec)  # T5's d_model^-0.5 is the unembed logit_scale
        return logits if return_type == "logits" else None

    def _context(
        self, tokens: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> ForwardContext:
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
        return ForwardContext(positions, positions, mask, causal=causal)

    # -- generation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        input: str | Int[torch.Tensor, "batch pos"] = "",
        one_zero_attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        return_type: Literal["input", "str", "tokens"] = "input",
        verbose: bool = False,
    ) -> Int[torch.Tensor, "batch new_tokens"] | str:
        """Decode up to ``max_new_tokens`` tokens (TransformerLens's loop: no KV cache).

        Args:
            input: Text or encoder tokens ``[batch, pos]``.
            one_zero_attention_mask: Encoder padding mask for token input.
            max_new_tokens: Tokens to generate.
            stop_at_eos: Stop once every row has produced ``eos_token_id``.
            eos_token_id: Default: the tokenizer's.
            do_sample: Sample (else greedy).
            top_k: Keep the k most likely tokens when sampling.
            top_p: Nucleus sampling threshold.
            temperature: Sampling temperature.
            freq_penalty: Penalise tokens already generated.
            return_type: ``"str"`` decodes; ``"tokens"`` (or ``"input"`` with token input) gives
                the decoder tokens, starting with the decoder start token.
            verbose: Unused (kept for TransformerLens's signature).

        Returns:
            The decoder tokens or the decoded text.
        """
        if isinstance(input, str):
            tokens, one_zero_attention_mask = self.to_tokens(input)
            return_type = "str" if return_type == "input" else return_type
        else:
            tokens = input.to(self._device())
            return_type = "tokens" if return_type == "input" else return_type
        if eos_token_id is None and self.tokenizer is not None:
            eos_token_id = self.tokenizer.eos_token_id
        start = getattr(self.tokenizer, "pad_token_id", None) or 0
        decoder = torch.full((tokens.shape[0], 1), start, dtype=torch.long, device=tokens.device)
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            logits = self.forward(tokens, decoder, one_zero_attention_mask=one_zero_attention_mask)
            assert logits is not None
            last = logits[:, -1, :]
            if do_sample:
                nxt = sample_logits(last, top_k, top_p, temperature, freq_penalty, decoder)
            else:
                nxt = last.argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
                finished = finished | (nxt == eos_token_id)
            decoder = torch.cat([decoder, nxt[:, None]], dim=1)
            if stop_at_eos and eos_token_id is not None and bool(finished.all()):
                break
        if return_type == "str":
            if self.tokenizer is None:
                raise InputValidationError("return_type='str' needs a tokenizer", "return_type")
            return str(self.tokenizer.decode(decoder[0], skip_special_tokens=True))
        return decoder

    # -- weights ---------------------------------------------------------------------------------
    def _stack(self, module: str, name: str) -> torch.Tensor:
        """Stack a parameter over the encoder's blocks (TransformerLens's ``W_Q``... stacks)."""
        return torch.stack([getattr(getattr(b, module), name) for b in self.encoder], dim=0)

    @property
    def W_pos(self) -> Float[torch.Tensor, "n_ctx d_model"]:
        """Not defined: T5's positions are relative biases (``encoder.0.attn.rel_pos_bias``)."""
        raise NotImplementedError(
            "T5 has no positional embedding matrix: its positions are relative attention biases "
            "(encoder.0.attn.rel_pos_bias.weight)"
        )

"""Generation's internals: preparing the prompt, stop tokens, and the cached step loop.

:class:`~tlcore.model_generate.GenerateMixin` builds ``generate`` and ``generate_stream`` on
these; they run one forward over the prompt, then one token per step with the KV cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.errors import InputValidationError, TokenizerRequiredError
from tlcore.generation_checks import check_generation_length
from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.utils.losses import get_attention_mask
from tlcore.utils.sampling import sample_logits
from tlcore.validation import check_embeddings, check_tokens

logger = logging.getLogger(__name__)

GenerateInput = (
    str
    | list[str]
    | Int[torch.Tensor, "batch pos"]
    | Int[torch.Tensor, " pos"]
    | Float[torch.Tensor, "batch pos d_model"]
)


@dataclass
class _Prompt:
    """A prompt made ready for generation."""

    kind: Literal["str", "list", "tokens", "embeds"]
    tokens: torch.Tensor | None  # [batch, pos]; None for embeddings input
    embeds: torch.Tensor | None  # [batch, pos, d_model]; only for embeddings input
    mask: torch.Tensor | None  # [batch, pos], 1 = real token; None when nothing is padded

    @property
    def batch(self) -> int:
        source = self.tokens if self.tokens is not None else self.embeds
        assert source is not None
        return source.shape[0]


class GenerationSteps:
    """The step machinery behind ``generate``; expects the model's forward and tokens."""

    cfg: Any
    tokenizer: Any

    def _generation_prompt(
        self,
        input: GenerateInput,
        prepend_bos: bool | None,
        padding_side: str | None,
        attention_mask: torch.Tensor | None = None,
    ) -> _Prompt:
        device = self._device()  # type: ignore[attr-defined]
        if isinstance(input, (str, list)):
            if isinstance(input, list) and len(input) > 1 and padding_side == "right":
                logger.info("generate left-pads a batch of texts (each row must end at its prompt)")
            tokens, mask = self._tokens_and_mask(input, prepend_bos, "left")  # type: ignore[attr-defined]
            if tokens.shape[1] == 0:
                raise InputValidationError(
                    "the prompt is empty: pass prepend_bos=True or some text", "input"
                )
            return _Prompt(
                "str" if isinstance(input, str) else "list",
                tokens.to(device),
                None,
                mask.to(device) if not bool(mask.all()) else None,
            )
        if isinstance(input, torch.Tensor) and input.is_floating_point():
            check_embeddings(input, self.cfg.d_model)
            return _Prompt("embeds", None, input.to(device), None)
        tokens = check_tokens(input, self.cfg.d_vocab).to(device)
        mask = None
        side = padding_side or self.cfg.default_padding_side
        if attention_mask is not None:
            mask = attention_mask.to(device=device, dtype=torch.long)
            if mask.shape != tokens.shape:
                raise InputValidationError(
                    f"attention_mask {tuple(mask.shape)} must match tokens {tuple(tokens.shape)}",
                    "attention_mask",
                )
            if not bool(mask[:, -1].all()):
                raise InputValidationError(
                    "attention_mask: generate needs left padding (each row's last "
                    "position must be a real token)",
                    "attention_mask",
                )
            mask = None if bool(mask.all()) else mask
        elif self.tokenizer is not None and side == "left":
            bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
            tokenizer = _PaddingView(self.tokenizer, side)
            mask = get_attention_mask(tokenizer, tokens, bos)  # type: ignore[arg-type]
            mask = None if bool(mask.all()) else mask
        return _Prompt("tokens", tokens, None, mask)

    def _stop_tokens(
        self, stop_at_eos: bool, eos_token_id: int | Sequence[int] | None
    ) -> tuple[list[int], int]:
        """The ids that end a row, and the id that pads a finished row."""
        if not stop_at_eos:
            return [], 0
        tokenizer_eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        if eos_token_id is None:
            if tokenizer_eos is None:
                raise TokenizerRequiredError(
                    "stop_at_eos=True needs eos_token_id= or a tokenizer with an EOS token"
                )
            eos_token_id = tokenizer_eos
        if isinstance(eos_token_id, int):
            return [eos_token_id], eos_token_id
        stops = [int(t) for t in eos_token_id]
        return stops, tokenizer_eos if tokenizer_eos is not None else stops[0]

    def _generation_steps(
        self,
        prompt: _Prompt,
        max_new_tokens: int,
        stop_at_eos: bool,
        eos_token_id: int | Sequence[int] | None,
        do_sample: bool,
        top_k: int | None,
        top_p: float | None,
        temperature: float,
        freq_penalty: float,
        use_past_kv_cache: bool,
    ) -> Iterator[torch.Tensor]:
        """Yield each step's new tokens ``[batch]`` (EOS-padded once a row has finished)."""
        stop_tokens, eos_pad = self._stop_tokens(stop_at_eos, eos_token_id)
        source = prompt.tokens if prompt.tokens is not None else prompt.embeds
        check_generation_length(self, source.shape[1], max_new_tokens)  # type: ignore[union-attr]
        device = self._device()  # type: ignore[attr-defined]
        batch = prompt.batch
        stop_ids = torch.tensor(stop_tokens, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        source = prompt.tokens if prompt.tokens is not None else prompt.embeds
        assert source is not None
        # Room for the prompt and every new token: each step writes its keys in place.
        cache = (
            HookedTransformerKeyValueCache.init_cache(
                self.cfg, device, batch, capacity=source.shape[1] + max_new_tokens
            )
            if use_past_kv_cache
            else None
        )
        # Token counts for the frequency penalty: the prompt's real tokens, then each new one.
        counts = None
        if do_sample and freq_penalty > 0:
            counts = torch.zeros(batch, self.cfg.d_vocab_out, device=device)
            if prompt.tokens is not None:
                weight = prompt.mask if prompt.mask is not None else torch.ones_like(prompt.tokens)
                counts.scatter_add_(1, prompt.tokens, weight.to(counts.dtype))
        self.eval()  # type: ignore[attr-defined]
        tokens, embeds, mask = prompt.tokens, prompt.embeds, prompt.mask
        latest: torch.Tensor | None = None
        for _ in range(max_new_tokens):
            if latest is None or cache is None:  # the whole sequence (first step, or no cache)
                logits = self._generation_forward(tokens, embeds, mask, cache)
            else:  # only the newest token; everything before it is in the cache
                new_embeds = None if embeds is None else self.embed(latest[:, None])  # type: ignore[attr-defined]
                new_tokens = None if embeds is not None else latest[:, None]
                logits = self._generation_forward(new_tokens, new_embeds, None, cache)
            final_logits = logits[:, -1, :]
            if do_sample:
                if counts is not None and temperature != 0.0:
                    # sample_logits' own order (temperature, then penalty), on masked counts.
                    final_logits = final_logits / temperature - freq_penalty * counts
                    sampled = sample_logits(final_logits, top_k=top_k, top_p=top_p)
                else:
                    sampled = sample_logits(
                        final_logits, top_k=top_k, top_p=top_p, temperature=temperature
                    )
            else:
                sampled = final_logits.argmax(-1)
            sampled = sampled.to(device)
            if stop_at_eos:  # torch.where, not boolean indexing: no device sync
                sampled = torch.where(finished, torch.full_like(sampled, eos_pad), sampled)
                finished |= torch.isin(sampled, stop_ids)
            if counts is not None:
                counts.scatter_add_(1, sampled[:, None], torch.ones(batch, 1, device=device))
            latest = sampled
            yield sampled
            if stop_at_eos and bool(finished.all()):
                break
            if cache is None:  # the uncached path re-runs everything, so keep the whole sequence
                if embeds is not None:
                    embeds = torch.cat([embeds, self.embed(sampled[:, None])], dim=1)  # type: ignore[attr-defined]
                else:
                    assert tokens is not None
                    tokens = torch.cat([tokens, sampled[:, None]], dim=1)
                if mask is not None:
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)

    def _generation_forward(
        self,
        tokens: torch.Tensor | None,
        embeds: torch.Tensor | None,
        mask: torch.Tensor | None,
        cache: HookedTransformerKeyValueCache | None,
    ) -> Float[torch.Tensor, "batch 1 d_vocab"]:
        """Run the blocks on new positions; return the logits of the last position only."""
        n_layers = self.cfg.n_layers
        if embeds is None:
            resid = self(tokens, past_kv_cache=cache, attention_mask=mask, stop_at_layer=n_layers)  # type: ignore[operator]
        else:
            # Embeddings input: add position embeddings as input_to_embed would.
            past = cache.previous_attention_mask.shape[1] if cache is not None else 0
            resid = self.hook_embed(embeds)  # type: ignore[attr-defined]
            pos_embed = self.pos_embed  # type: ignore[attr-defined]
            if pos_embed.adds_to_residual:
                positions = torch.arange(past, past + embeds.shape[1], device=embeds.device)
                positions = positions[None].expand(embeds.shape[0], -1)
                resid = resid + self.hook_pos_embed(pos_embed.embed(positions))  # type: ignore[attr-defined]
            resid = self(resid, start_at_layer=0, past_kv_cache=cache, stop_at_layer=n_layers)  # type: ignore[operator]
        # Only the last position is sampled from: skip the rest of the unembedding (a long
        # prompt's full logits cost pos x d_vocab memory and time, as HF's logits_to_keep=1 avoids).
        last = resid[:, -1:]
        if self.ln_final is not None:  # type: ignore[attr-defined]
            last = self.ln_final(last)  # type: ignore[attr-defined]
        return self.unembed(last)  # type: ignore[attr-defined]


class _PaddingView:
    """A tokenizer's pad/BOS ids with a chosen padding side, for ``get_attention_mask``."""

    def __init__(self, tokenizer: Any, padding_side: str) -> None:
        self.pad_token_id = tokenizer.pad_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.padding_side = padding_side


def generation_progress(
    steps: Iterator[torch.Tensor], total: int, verbose: bool
) -> Iterator[torch.Tensor]:
    """``steps`` with a labelled progress bar when ``verbose``.

    Args:
        steps: The generated tokens, one step at a time.
        total: The number of steps at most.
        verbose: Draw the bar.

    Returns:
        The same steps.
    """
    if not verbose:
        return steps
    from tqdm.auto import tqdm

    return iter(tqdm(steps, total=total, desc="generate", unit="token"))

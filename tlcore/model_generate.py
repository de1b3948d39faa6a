"""Text generation: TransformerLens 2.x's ``generate`` and ``generate_stream``.

The prompt runs once; each later step feeds only the newest token, reusing keys and values from a
:class:`~tlcore.kv_cache.HookedTransformerKeyValueCache` (``use_past_kv_cache=True``, the default).
Hooks fire on every step as in any forward pass, except that the final norm and the unembedding
run on the last position only (the only one sampled from).

Batches of prompts are left-padded, with padding masked and positions counted from each row's
first real token, so every row generates what it would alone (greedy decoding is token-identical
to HuggingFace's ``generate(do_sample=False)`` on the same weights).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.errors import InputValidationError
from tlcore.generation_checks import check_generate_args
from tlcore.generation_steps import GenerateInput, GenerationSteps, generation_progress
from tlcore.validation import check_return_type

logger = logging.getLogger(__name__)

ReturnType = Literal["input", "str", "tokens", "embeds"]
_RETURN_TYPES = ("input", "str", "tokens", "embeds")


class GenerateMixin(GenerationSteps):
    """``generate`` and ``generate_stream``; expects ``HookedTransformer``'s forward and tokens."""

    cfg: Any
    tokenizer: Any

    # no_grad, not inference_mode: inference tensors could not be fed back into a forward pass
    # with autograd (model.run_with_cache(model.generate(...)) would fail).
    @torch.no_grad()
    def generate(
        self,
        input: GenerateInput = "",
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        use_past_kv_cache: bool = True,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        return_type: ReturnType = "input",
        verbose: bool = True,
        attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> (
        str
        | list[str]
        | Int[torch.Tensor, "batch new_pos"]
        | Float[torch.Tensor, "batch new_pos d_model"]
    ):
        r"""Generate tokens after a prompt, sampling (or greedy) until EOS or ``max_new_tokens``.

        When some rows of a batch finish (emit EOS) before others, they keep being padded with
        EOS while the rest continue; generation stops early once every row has finished.

        Args:
            input: A text, a list of texts (left-padded), tokens ``[batch, pos]`` or ``[pos]``
                (with a tokenizer whose padding side is left, leading pad tokens are masked), or
                token embeddings ``[batch, pos, d_model]`` (what ``model.embed`` returns; position
                embeddings are added here).
            max_new_tokens: How many tokens to generate at most.
            stop_at_eos: Stop a row when it emits an EOS token.
            eos_token_id: The EOS id, or several (any of them stops a row); default the
                tokenizer's EOS.
            do_sample: Sample (with ``top_k``/``top_p``/``temperature``/``freq_penalty``, as
                :func:`tlcore.utils.sample_logits`); False takes the argmax (greedy).
            top_k: Sample among the k most likely tokens.
            top_p: Sample from the smallest set of tokens with probability at least ``top_p``.
            temperature: Softmax temperature (0 is greedy).
            freq_penalty: Subtract this times each token's count so far (prompt included,
                padding excluded) from its logit.
            use_past_kv_cache: Reuse keys and values across steps (same tokens, much faster).
            prepend_bos: For text input (default ``cfg.default_prepend_bos``).
            padding_side: For tokens input: ``"left"`` masks leading pad tokens. Texts are always
                left-padded, since every row must end at its last real token.
            return_type: ``"str"``, ``"tokens"`` (prompt + new tokens ``[batch, pos + new]``),
                ``"embeds"`` (token embeddings of prompt + new tokens) or ``"input"``: text for
                text input (a string per text, special tokens removed), tokens for tokens,
                embeddings for embeddings.
            verbose: Show a progress bar.
            attention_mask: For tokens input, ``[batch, pos]`` with 0 on padding (left padding
                only: every row must end at its last real token), as HF's ``generate`` takes it;
                overrides the mask derived from ``padding_side``. Not in TransformerLens.

        Returns:
            The prompt with its continuation, in the form ``return_type`` asks for. For embeddings
            input, ``"tokens"`` gives the new tokens only.

        Raises:
            TokenizerRequiredError: For text input or ``return_type="str"`` without a tokenizer,
                or ``stop_at_eos`` with neither a tokenizer nor ``eos_token_id``.
            ValueError: For an unknown ``return_type`` or input shape.

        Example:
            With ``model`` SmolLM2-135M-Instruct (``from_pretrained("smollm2-135m-instruct")``):

            >>> prompt = "The capital of France is"
            >>> model.generate(prompt, max_new_tokens=3, do_sample=False, verbose=False)
            'The capital of France is Paris.\n'
        """
        check_return_type(return_type, _RETURN_TYPES)
        check_generate_args(
            self,
            max_new_tokens,
            eos_token_id,
            temperature,
            top_k,
            top_p,
            freq_penalty,
            padding_side,
        )
        prompt = self._generation_prompt(input, prepend_bos, padding_side, attention_mask)
        if return_type == "input":
            return_type = {"str": "str", "list": "str", "tokens": "tokens", "embeds": "embeds"}[
                prompt.kind
            ]  # type: ignore[assignment]
        if return_type == "str":
            self._require_tokenizer("return_type='str'")  # type: ignore[attr-defined]
        new: list[torch.Tensor] = []
        steps = self._generation_steps(
            prompt,
            max_new_tokens,
            stop_at_eos,
            eos_token_id,
            do_sample,
            top_k,
            top_p,
            temperature,
            freq_penalty,
            use_past_kv_cache,
        )
        for sampled in generation_progress(steps, max_new_tokens, verbose):
            new.append(sampled[:, None])
        generated = (
            torch.cat(new, dim=1)
            if new
            else torch.zeros(prompt.batch, 0, dtype=torch.long, device=self._device())  # type: ignore[attr-defined]
        )
        if return_type == "embeds":
            start = prompt.embeds if prompt.embeds is not None else self.embed(prompt.tokens)  # type: ignore[attr-defined]
            return torch.cat([start, self.embed(generated)], dim=1)  # type: ignore[attr-defined]
        tokens = (
            generated if prompt.tokens is None else torch.cat([prompt.tokens, generated], dim=1)
        )
        if return_type == "tokens":
            return tokens
        texts = self.tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=True)
        return texts[0] if prompt.kind in ("str", "tokens", "embeds") and len(texts) == 1 else texts

    @torch.no_grad()
    def generate_stream(
        self,
        input: GenerateInput = "",
        max_new_tokens: int = 10,
        max_tokens_per_yield: int = 1,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        use_past_kv_cache: bool = True,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        return_type: Literal["input", "str", "tokens"] = "input",
    ) -> Iterator[str | list[str] | Int[torch.Tensor, "batch new"]]:
        """Generate like :meth:`generate`, yielding the new tokens as they come.

        Joining the chunks gives exactly :meth:`generate`'s continuation (same arguments and
        random state). Text chunks never split a multi-byte character: undecodable bytes wait
        for the next chunk.

        Args:
            input: As :meth:`generate`.
            max_new_tokens: As :meth:`generate`.
            max_tokens_per_yield: Yield after this many new tokens (and at the end).
            stop_at_eos: As :meth:`generate`.
            eos_token_id: As :meth:`generate`.
            do_sample: As :meth:`generate`.
            top_k: As :meth:`generate`.
            top_p: As :meth:`generate`.
            temperature: As :meth:`generate`.
            freq_penalty: As :meth:`generate`.
            use_past_kv_cache: As :meth:`generate`.
            prepend_bos: As :meth:`generate`.
            padding_side: As :meth:`generate`.
            return_type: ``"tokens"`` yields ``[batch, n]`` new token ids; ``"str"`` yields the
                new text (a string, or a list per row for a list of texts); ``"input"`` picks
                text for text input, else tokens.

        Yields:
            Chunks of the continuation (the prompt is not repeated).

        Raises:
            ValueError: For an unknown ``return_type`` or ``max_tokens_per_yield < 1``.
        """
        check_return_type(return_type, ("input", "str", "tokens"))
        check_generate_args(
            self,
            max_new_tokens,
            eos_token_id,
            temperature,
            top_k,
            top_p,
            freq_penalty,
            padding_side,
        )
        if not isinstance(max_tokens_per_yield, int) or max_tokens_per_yield < 1:
            raise InputValidationError(
                f"max_tokens_per_yield must be at least 1, got {max_tokens_per_yield}",
                "max_tokens_per_yield",
            )
        prompt = self._generation_prompt(input, prepend_bos, padding_side)
        as_text = return_type == "str" or (
            return_type == "input" and prompt.kind in ("str", "list")
        )
        if as_text:
            self._require_tokenizer("return_type='str'")  # type: ignore[attr-defined]
        steps = self._generation_steps(
            prompt,
            max_new_tokens,
            stop_at_eos,
            eos_token_id,
            do_sample,
            top_k,
            top_p,
            temperature,
            freq_penalty,
            use_past_kv_cache,
        )
        generated: list[list[int]] = [[] for _ in range(prompt.batch)]
        emitted = [""] * prompt.batch  # text already yielded, per row
        pending: list[torch.Tensor] = []

        def flush(final: bool) -> Any:
            chunk = torch.cat(pending, dim=1)
            pending.clear()
            if not as_text:
                return chunk
            texts = []
            for row, ids in enumerate(chunk.tolist()):
                generated[row].extend(ids)
                text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                if not final:  # hold back a partial UTF-8 sequence until its last byte arrives
                    text = text.rstrip("\ufffd")
                texts.append(text[len(emitted[row]) :])
                emitted[row] = text
            return texts if prompt.kind == "list" else texts[0]

        for sampled in steps:
            pending.append(sampled[:, None])
            if len(pending) == max_tokens_per_yield:
                yield flush(final=False)
        if pending:
            yield flush(final=True)

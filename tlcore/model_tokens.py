"""Tokenisation methods of ``HookedTransformer`` (TransformerLens 2.x names and defaults).

BOS handling never doubles: text is tokenised without the tokenizer's own special tokens and BOS is
prepended explicitly when ``prepend_bos`` (default ``cfg.default_prepend_bos``) asks for it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.errors import TokenizerRequiredError


class TokenizerMixin:
    """Token helpers; expects ``self.tokenizer``, ``self.cfg`` and ``self.W_U``."""

    tokenizer: Any
    cfg: Any

    def set_tokenizer(self, tokenizer: Any, default_padding_side: Literal["left", "right"] = "right") -> None:
        """Attach a tokenizer (a pad token is set to EOS if missing, as TransformerLens does).

        Args:
            tokenizer: A transformers tokenizer.
            default_padding_side: ``"right"`` or ``"left"``.
        """
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.bos_token is None and tokenizer.eos_token is not None:
            tokenizer.bos_token = tokenizer.eos_token
        tokenizer.padding_side = default_padding_side
        self.tokenizer = tokenizer
        self.cfg.default_padding_side = default_padding_side
        self.cfg.tokenizer_name = getattr(tokenizer, "name_or_path", None)
        if self.cfg.d_vocab_out != len(tokenizer) and len(tokenizer) > self.cfg.d_vocab:
            # Not an error (vocabularies are often padded), but tokens past d_vocab cannot be embedded.
            pass

    def _require_tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise TokenizerRequiredError(
                f"{what} needs a tokenizer, and this model has none: pass tokenizer= to from_pretrained "
                f"or call model.set_tokenizer(...), or give token ids instead of strings")
        return self.tokenizer

    def _tokens_and_mask(self, input: str | list[str], prepend_bos: bool | None,
                         padding_side: Literal["left", "right"] | None,
                         truncate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = self._require_tokenizer("tokenising text")
        prepend = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        side = padding_side or self.cfg.default_padding_side
        texts = [input] if isinstance(input, str) else list(input)
        if prepend:
            texts = [tokenizer.bos_token + t for t in texts]
        previous = tokenizer.padding_side
        tokenizer.padding_side = side
        try:
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                                truncation=truncate, max_length=self.cfg.n_ctx if truncate else None)
        finally:
            tokenizer.padding_side = previous
        return encoded["input_ids"], encoded["attention_mask"]

    def to_tokens(self, input: str | list[str], prepend_bos: bool | None = None,
                  padding_side: Literal["left", "right"] | None = None, move_to_device: bool = True,
                  truncate: bool = True) -> Int[torch.Tensor, "batch pos"]:
        """Tokenise text into ``[batch, pos]`` ids (padded when several texts differ in length).

        Args:
            input: A text or a list of texts.
            prepend_bos: Prepend BOS (default ``cfg.default_prepend_bos``).
            padding_side: ``"left"`` or ``"right"`` (default ``cfg.default_padding_side``).
            move_to_device: Put the tokens on the model's device.
            truncate: Truncate to ``cfg.n_ctx``.

        Returns:
            Token ids.
        """
        tokens, _ = self._tokens_and_mask(input, prepend_bos, padding_side, truncate)
        return tokens.to(self._device()) if move_to_device else tokens

    def to_string(self, tokens: Int[torch.Tensor, "..."] | list[int] | int) -> str | list[str]:
        """Decode tokens ``[pos]`` to a string, or ``[batch, pos]`` to a list of strings.

        Args:
            tokens: Token ids.

        Returns:
            Text.
        """
        tokenizer = self._require_tokenizer("to_string")
        if isinstance(tokens, int):
            tokens = [tokens]
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return [tokenizer.decode(t.tolist(), clean_up_tokenization_spaces=False) for t in tokens]
        return tokenizer.decode(tokens.reshape(-1).tolist(), clean_up_tokenization_spaces=False)

    def to_str_tokens(self, input: str | list[str] | torch.Tensor | list[int] | int,
                      prepend_bos: bool | None = None,
                      padding_side: Literal["left", "right"] | None = None) -> list[str] | list[list[str]]:
        """Split into token strings.

        Args:
            input: Text, texts, or token ids (``[pos]`` or ``[batch, pos]``).
            prepend_bos: For text input.
            padding_side: For text input.

        Returns:
            Token strings (a list per text for several texts or 2-D tokens).
        """
        tokenizer = self._require_tokenizer("to_str_tokens")
        if isinstance(input, list) and input and isinstance(input[0], str):
            return [self.to_str_tokens(t, prepend_bos, padding_side) for t in input]  # type: ignore[misc]
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)[0]
        else:
            tokens = torch.as_tensor(input if not isinstance(input, int) else [input])
            if tokens.dim() == 2:
                if tokens.shape[0] == 1:
                    tokens = tokens[0]
                else:
                    return [self.to_str_tokens(t) for t in tokens]  # type: ignore[misc]
        return [tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in tokens.tolist()]

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token.

        Args:
            string: The token text.

        Returns:
            Its id.

        Raises:
            ValueError: If the string is not a single token.
        """
        tokens = self.to_tokens(string, prepend_bos=False, move_to_device=False)[0]
        if tokens.numel() != 1:
            raise ValueError(f"{string!r} is {tokens.numel()} tokens, not one: {self.to_str_tokens(tokens)}")
        return int(tokens.item())

    def to_single_str_token(self, int_token: int) -> str:
        """The text of one token id.

        Args:
            int_token: A token id.

        Returns:
            Its text.
        """
        result = self.to_str_tokens(torch.tensor([int_token]))
        return str(result[0])

    def get_token_position(self, single_token: str | int, input: str | torch.Tensor,
                           mode: Literal["first", "last"] = "first", prepend_bos: bool | None = None,
                           padding_side: Literal["left", "right"] | None = None) -> int:
        """Position of a token in an input (first or last occurrence).

        Args:
            single_token: A one-token string or a token id.
            input: Text or tokens ``[pos]``/``[1, pos]``.
            mode: ``"first"`` or ``"last"``.
            prepend_bos: For text input.
            padding_side: For text input.

        Returns:
            The position.

        Raises:
            ValueError: If the token does not occur or the input is a batch.
        """
        tokens = (self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)
                  if isinstance(input, str) else torch.as_tensor(input))
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ValueError("get_token_position takes one sequence, not a batch")
            tokens = tokens[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        hits = (tokens == token).nonzero().flatten()
        if hits.numel() == 0:
            raise ValueError(f"token {single_token!r} does not occur in the input")
        return int(hits[0] if mode == "first" else hits[-1])

    def tokens_to_residual_directions(
        self, tokens: str | int | Int[torch.Tensor, "..."]
    ) -> Float[torch.Tensor, "... d_model"]:
        """The unembedding directions of tokens (``W_U[:, token]``).

        Args:
            tokens: A one-token string, an id, or a tensor of ids.

        Returns:
            ``[d_model]`` for one token, else ``[..., d_model]``.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if isinstance(tokens, int):
            return self.W_U[:, tokens]  # type: ignore[attr-defined]
        return self.W_U[:, tokens].movedim(0, -1)  # type: ignore[attr-defined]

    def _device(self) -> torch.device:
        raise NotImplementedError

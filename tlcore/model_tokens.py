"""Tokenisation methods of ``HookedTransformer`` (TransformerLens 2.x names, arguments, defaults).

How text becomes tokens (``to_tokens``, and every method that takes text):

- Text is tokenised without the tokenizer's own special tokens, then BOS is prepended *as an id*
  when ``prepend_bos`` (default ``cfg.default_prepend_bos``, from the architecture spec) asks for
  it. So BOS is never doubled by a tokenizer that adds its own (TransformerLens issues #369,
  #1418), and a SentencePiece tokenizer sees the text exactly as it would after its own BOS.
- BOS is not prepended to a text whose tokens already start with it (a chat template's output, for
  example), so it never appears twice in a row.
- Several texts are padded to the longest, on ``padding_side`` (default
  ``cfg.default_padding_side``), with the tokenizer's pad token; ``truncate`` keeps ``cfg.n_ctx``
  tokens (on the tokenizer's ``truncation_side``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int

from tlcore.errors import InputTypeError, InputValidationError, TokenizerRequiredError

PaddingSide = Literal["left", "right"]


class TokenizerMixin:
    """Token helpers; expects ``self.tokenizer``, ``self.cfg`` and ``self.W_U``."""

    tokenizer: Any
    cfg: Any

    def set_tokenizer(self, tokenizer: Any, default_padding_side: PaddingSide = "right") -> None:
        """Attach a tokenizer, as TransformerLens does.

        Missing special tokens are filled in (pad and BOS fall back to EOS), the tokenizer's
        padding side becomes ``default_padding_side``, and ``cfg.tokenizer_prepends_bos`` records
        whether the tokenizer adds BOS on its own (tlcore never lets it: see the module docstring).

        Args:
            tokenizer: A transformers tokenizer.
            default_padding_side: ``"right"`` or ``"left"``.

        Raises:
            ValueError: For another padding side.
        """
        if default_padding_side not in ("left", "right"):
            raise ValueError(
                f"padding_side must be 'left' or 'right', got {default_padding_side!r}"
            )
        if tokenizer.eos_token is None:
            tokenizer.eos_token = "<|endoftext|>"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.bos_token is None:
            tokenizer.bos_token = tokenizer.eos_token
        tokenizer.padding_side = default_padding_side
        self.tokenizer = tokenizer
        self.cfg.default_padding_side = default_padding_side
        self.cfg.tokenizer_name = getattr(tokenizer, "name_or_path", None)
        self.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0

    def _require_tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise TokenizerRequiredError(
                f"{what} needs a tokenizer, and this model has none: pass tokenizer= to "
                f"from_pretrained or call model.set_tokenizer(...), or give token ids instead of "
                f"strings"
            )
        return self.tokenizer

    def _tokens_and_mask(
        self,
        input: str | list[str],
        prepend_bos: bool | None,
        padding_side: PaddingSide | None,
        truncate: bool = True,
    ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
        """Tokenise text into padded ids and their attention mask (1 = real token), on the CPU."""
        tokenizer = self._require_tokenizer("tokenising text")
        if isinstance(input, str):
            texts = [input]
        elif isinstance(input, (list, tuple)) and all(isinstance(t, str) for t in input):
            texts = list(input)
        else:
            raise InputTypeError(
                f"expected a string or a list of strings, got {type(input).__name__}", "input"
            )
        prepend = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        side = padding_side or self.cfg.default_padding_side
        if side not in ("left", "right"):
            raise InputValidationError(
                f"padding_side must be 'left' or 'right', got {side!r}", "padding_side"
            )
        rows: list[list[int]] = (
            [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            if texts
            else []
        )
        if prepend:
            bos = tokenizer.bos_token_id
            if bos is None:
                raise ValueError("prepend_bos=True, but the tokenizer has no BOS token")
            rows = [ids if ids[:1] == [bos] else [bos, *ids] for ids in rows]
        if truncate:
            keep_end = getattr(tokenizer, "truncation_side", "right") == "left"
            limit = self.cfg.n_ctx
            rows = [ids[-limit:] if keep_end else ids[:limit] for ids in rows]
        length = max((len(ids) for ids in rows), default=0)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        tokens = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, ids in enumerate(rows):
            span = slice(length - len(ids), length) if side == "left" else slice(0, len(ids))
            tokens[row, span] = torch.tensor(ids, dtype=torch.long)
            mask[row, span] = 1
        return tokens, mask

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[torch.Tensor, "batch pos"]:
        """Tokenise text into ``[batch, pos]`` ids (padded when several texts differ in length).

        Args:
            input: A text or a list of texts.
            prepend_bos: Prepend BOS (default ``cfg.default_prepend_bos``). Only prepend it at the
                start of a prompt, not to a fragment of one.
            padding_side: ``"left"`` or ``"right"`` (default ``cfg.default_padding_side``).
            move_to_device: Put the tokens on the model's device.
            truncate: Keep at most ``cfg.n_ctx`` tokens.

        Returns:
            Token ids.

        Raises:
            TokenizerRequiredError: If the model has no tokenizer.

        Example:
            With ``model`` SmolLM2-135M-Instruct (``from_pretrained("smollm2-135m-instruct")``),
            whose BOS is ``<|im_start|>`` (1) and pad ``<|im_end|>`` (2):

            >>> model.to_tokens(["Hello world", "Hi"], padding_side="left")
            tensor([[    1, 19556,   905],
                    [    2,     1, 26843]])
        """
        tokens, _ = self._tokens_and_mask(input, prepend_bos, padding_side, truncate)
        return tokens.to(self._device()) if move_to_device else tokens

    def to_string(
        self,
        tokens: Int[torch.Tensor, "..."] | np.ndarray | list[Any] | int,
    ) -> str | list[str]:
        """Decode tokens ``[pos]`` (or a scalar) to a string, or ``[batch, pos]`` to strings.

        Args:
            tokens: Token ids: a tensor, NumPy array, list, or list of 1-D tensors.

        Returns:
            Text (``clean_up_tokenization_spaces=False``, so decoding is exact).

        Raises:
            TokenizerRequiredError: If the model has no tokenizer.
            ValueError: For more than two dimensions.
        """
        tokenizer = self._require_tokenizer("to_string")
        if isinstance(tokens, list) and tokens and isinstance(tokens[0], torch.Tensor):
            tokens = torch.stack(tokens)
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return tokenizer.batch_decode(tokens.tolist(), clean_up_tokenization_spaces=False)
        if tokens.dim() <= 1:
            return tokenizer.decode(tokens.reshape(-1).tolist(), clean_up_tokenization_spaces=False)
        raise ValueError(f"Invalid shape passed in: {tuple(tokens.shape)}")

    def to_str_tokens(
        self,
        input: str | list[Any] | torch.Tensor | np.ndarray | int,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> list[str] | list[list[str]]:
        """Split text or token ids into one string per token.

        Args:
            input: A text, token ids (a tensor, array or list of ints ``[pos]`` or ``[1, pos]``;
                ``[batch, pos]`` gives one list per row), or a list of texts or token tensors (one
                list each).
            prepend_bos: For text input (default ``cfg.default_prepend_bos``).
            padding_side: For text input.

        Returns:
            Token strings.

        Raises:
            TokenizerRequiredError: If the model has no tokenizer.
            ValueError: For an input of another type.
        """
        tokenizer = self._require_tokenizer("to_str_tokens")
        if isinstance(input, list) and input and all(isinstance(t, int) for t in input):
            input = torch.tensor(input)  # a plain list of ids is one sequence
        if isinstance(input, list):
            return [self.to_str_tokens(item, prepend_bos, padding_side) for item in input]  # type: ignore[misc,return-value]
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)[0]
        elif isinstance(input, (torch.Tensor, np.ndarray, int, np.integer)):
            tokens = torch.as_tensor(input)
            if tokens.dim() == 0:
                tokens = tokens.reshape(1)
            if tokens.dim() == 2 and tokens.shape[0] == 1:
                tokens = tokens[0]
            if tokens.dim() == 2:
                return [self.to_str_tokens(row) for row in tokens]  # type: ignore[misc,return-value]
            if tokens.dim() != 1:
                raise ValueError(
                    f"Invalid tokens input to to_str_tokens, shape {tuple(tokens.shape)}"
                )
        else:
            raise ValueError(f"Invalid input type to to_str_tokens: {type(input).__name__}")
        return tokenizer.batch_decode(
            [[t] for t in tokens.tolist()], clean_up_tokenization_spaces=False
        )

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS is prepended).

        Args:
            string: The token's text.

        Returns:
            Its id.

        Raises:
            ValueError: If the string is not a single token.
        """
        tokens = self.to_tokens(string, prepend_bos=False, move_to_device=False)[0]
        if tokens.numel() != 1:
            raise ValueError(
                f"Input string: {string!r} is not a single token: {self.to_str_tokens(tokens)}"
            )
        return int(tokens.item())

    def to_single_str_token(self, int_token: int) -> str:
        """The text of one token id.

        Args:
            int_token: A token id.

        Returns:
            Its text.

        Raises:
            TypeError: If ``int_token`` is not an int.
        """
        if not isinstance(int_token, (int, np.integer)):
            raise TypeError(f"expected an int token id, got {type(int_token).__name__}")
        result = self.to_str_tokens(torch.tensor([int(int_token)]))
        return str(result[0])

    def get_token_position(
        self,
        single_token: str | int | torch.Tensor,
        input: str | Int[torch.Tensor, " pos"] | Int[torch.Tensor, "1 pos"],
        mode: Literal["first", "last"] = "first",
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> int:
        """Position of a token in a text or token sequence (its first or last occurrence).

        Text is tokenised with ``prepend_bos`` (default ``cfg.default_prepend_bos``), so with BOS
        every position is one larger than without: mind off-by-one errors.

        Args:
            single_token: A one-token string, a token id, or a one-element tensor.
            input: Text, or tokens ``[pos]`` / ``[1, pos]``.
            mode: ``"first"`` or ``"last"``.
            prepend_bos: For text input.
            padding_side: For text input.

        Returns:
            The position.

        Raises:
            ValueError: If the token does not occur, the input is a batch, or ``mode`` is unknown.
        """
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}")
        tokens = (
            self.to_tokens(input, prepend_bos, padding_side, move_to_device=False)
            if isinstance(input, str)
            else torch.as_tensor(input)
        )
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ValueError(
                    "If tokens are rank two, they must have shape [1, seq_len], not "
                    f"{tuple(tokens.shape)}"
                )
            tokens = tokens[0]
        if isinstance(single_token, str):
            token = self.to_single_token(single_token)
        else:
            token = int(torch.as_tensor(single_token).item())
        hits = (tokens == token).nonzero().flatten()
        if hits.numel() == 0:
            raise ValueError(f"The token {single_token!r} does not occur in the prompt")
        return int(hits[0] if mode == "first" else hits[-1])

    def tokens_to_residual_directions(
        self, tokens: str | int | Int[torch.Tensor, "..."]
    ) -> Float[torch.Tensor, "... d_model"]:
        """The unembedding directions of tokens: the residual vectors each token's logit reads.

        Without folded LayerNorm (``from_pretrained_no_processing``) these ignore the final norm's
        weights, so they are not the whole map to the logits.

        Args:
            tokens: A one-token string, an id, a one-element tensor (all give ``[d_model]``), or a
                tensor of ids ``[...]`` (gives ``[..., d_model]``).

        Returns:
            The directions.

        Raises:
            ValueError: For another input type.
        """
        W_U = self.W_U  # type: ignore[attr-defined]
        if isinstance(tokens, torch.Tensor) and tokens.numel() > 1:
            return W_U[:, tokens].movedim(0, -1)
        if isinstance(tokens, str):
            token = self.to_single_token(tokens)
        elif isinstance(tokens, (int, np.integer)):
            token = int(tokens)
        elif isinstance(tokens, torch.Tensor) and tokens.numel() == 1:
            token = int(tokens.item())
        else:
            raise ValueError(f"Invalid token type: {type(tokens).__name__}")
        return W_U[:, token]

    def _device(self) -> torch.device:
        raise NotImplementedError

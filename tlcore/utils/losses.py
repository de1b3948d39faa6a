"""Next-token loss and accuracy, and the attention mask of padded token batches.

Same names, signatures and results as TransformerLens 2.x's ``transformer_lens.utils``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from tlcore.utils.tokenize import get_cumsum_along_dim

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["get_attention_mask", "lm_accuracy", "lm_cross_entropy_loss"]


def lm_cross_entropy_loss(
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    per_token: bool = False,
) -> Float[torch.Tensor, ""] | Float[torch.Tensor, "batch pos_minus_1"]:
    """Cross-entropy loss of predicting each NEXT token: logits at ``t`` predict ``tokens[t+1]``.

    The last position has nothing to predict and the first token is never predicted, so there
    are ``pos - 1`` predictions per row.

    With an ``attention_mask``, a prediction counts only if both its position and the next one
    are attended (so padding on either side is ignored): masked predictions are 0 in the
    per-token output and excluded from the mean.

    Args:
        logits: Model output, ``[batch, pos, d_vocab]``.
        tokens: Input token ids, ``[batch, pos]``.
        attention_mask: 1 for real tokens, 0 for padding, ``[batch, pos]``.
        per_token: Return the loss of every prediction instead of the mean.

    Returns:
        The mean loss (a scalar), or ``[batch, pos - 1]`` per-token losses.

    Examples:
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> lm_cross_entropy_loss(logits, torch.tensor([[0, 1, 2]]))
        tensor(1.3863)
        >>> lm_cross_entropy_loss(logits, torch.tensor([[0, 1, 2]]), per_token=True).shape
        torch.Size([1, 2])
    """
    log_probs = F.log_softmax(logits, dim=-1)
    # Position t predicts token t+1, so the final logit has no target.
    predicted_log_probs = log_probs[..., :-1, :].gather(dim=-1, index=tokens[..., 1:, None])[..., 0]
    if attention_mask is None:
        losses = -predicted_log_probs
        return losses if per_token else losses.mean()
    next_token_mask = attention_mask[..., :-1].bool() & attention_mask[..., 1:].bool()
    # where(), not multiplication: a -inf log prob at a padded position must give 0, not NaN.
    losses = torch.where(next_token_mask, -predicted_log_probs, 0.0)
    if per_token:
        return losses
    return losses.sum() / next_token_mask.sum()


def lm_accuracy(
    logits: Float[torch.Tensor, "batch pos d_vocab"],
    tokens: Int[torch.Tensor, "batch pos"],
    per_token: bool = False,
) -> Float[torch.Tensor, ""] | Bool[torch.Tensor, "batch pos_minus_1"]:
    """Top-1 accuracy of predicting each NEXT token: ``argmax(logits[:, t]) == tokens[:, t+1]``.

    Args:
        logits: Model output, ``[batch, pos, d_vocab]``.
        tokens: Input token ids, ``[batch, pos]``.
        per_token: Return whether each prediction is correct instead of the fraction correct.

    Returns:
        The fraction of correct predictions (a scalar), or a ``[batch, pos - 1]`` boolean tensor.

    Examples:
        >>> logits = torch.tensor([[[0.0, 9.0], [9.0, 0.0], [0.0, 9.0]]])
        >>> lm_accuracy(logits, torch.tensor([[0, 1, 1]]))
        tensor(0.5000)
        >>> lm_accuracy(logits, torch.tensor([[0, 1, 1]]), per_token=True)
        tensor([[ True, False]])
    """
    top_prediction = logits.argmax(dim=-1)
    correct_matches = top_prediction[:, :-1] == tokens[:, 1:]
    if per_token:
        return correct_matches
    return correct_matches.sum() / correct_matches.numel()


def get_attention_mask(
    tokenizer: PreTrainedTokenizerBase,
    tokens: Int[torch.Tensor, "batch pos"],
    prepend_bos: bool,
) -> Int[torch.Tensor, "batch pos"]:
    """Attention mask of a padded token batch: 1 for real tokens, 0 for padding.

    Only the run of pad ids at the padded end counts as padding (the leading run with
    ``tokenizer.padding_side == "left"``, the trailing run otherwise), so a pad id inside the
    text stays attended. When BOS and pad share an id and ``prepend_bos`` is set, the BOS that
    looks like a pad is attended: with left padding it is the last id of the leading run, with
    right padding the first token of the row (TransformerLens masked a row holding only BOS
    entirely, which makes attention NaN).

    Args:
        tokenizer: Supplies ``pad_token_id``, ``bos_token_id`` and ``padding_side``.
        tokens: Token ids, ``[batch, pos]``.
        prepend_bos: Whether a BOS token was prepended to every row.

    Returns:
        The mask, same shape and dtype as ``tokens``.

    Examples:
        >>> from types import SimpleNamespace
        >>> tok = SimpleNamespace(pad_token_id=0, bos_token_id=0, padding_side="left")
        >>> get_attention_mask(tok, torch.tensor([[0, 0, 0, 5, 0], [0, 4, 5, 6, 7]]), True)
        tensor([[0, 0, 1, 1, 1],
                [1, 1, 1, 1, 1]])
    """
    attention_mask = torch.ones_like(tokens)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        return attention_mask
    is_not_pad = tokens.ne(pad_id)
    bos_is_pad = prepend_bos and tokenizer.bos_token_id == pad_id
    if tokenizer.padding_side == "right":
        is_trailing_pad = get_cumsum_along_dim(is_not_pad, -1, reverse=True) == 0
        attention_mask[is_trailing_pad] = 0
        if bos_is_pad:
            attention_mask[..., 0] = 1
    else:
        is_leading_pad = get_cumsum_along_dim(is_not_pad, -1) == 0
        attention_mask[is_leading_pad] = 0
        if bos_is_pad:
            # A row without leading pads gives -1: its last token, which is attended anyway.
            bos_positions = is_leading_pad.sum(-1, keepdim=True) - 1
            attention_mask.scatter_(-1, bos_positions % tokens.shape[-1], 1)
    return attention_mask

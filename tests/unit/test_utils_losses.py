"""Next-token loss/accuracy against torch's own cross-entropy, and attention masks against HF's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.testing import assert_close
from transformers import PreTrainedTokenizerFast

from tlcore.utils.losses import get_attention_mask, lm_accuracy, lm_cross_entropy_loss

VOCAB = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "<unk>": 3, "a": 4, "b": 5, "c": 6, "d": 7}


def make_tokenizer(padding_side: str, pad_is_bos: bool = False) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<bos>" if pad_is_bos else "<pad>",
    )
    tok.padding_side = padding_side
    return tok


def _random_batch(batch: int = 3, pos: int = 6, vocab: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, pos, vocab, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, vocab, (batch, pos), generator=g)
    return logits, tokens


def _reference_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    # Independent: F.cross_entropy on explicitly shifted predictions/targets.
    batch, pos, vocab = logits.shape
    flat = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="none"
    )
    return flat.reshape(batch, pos - 1)


# ------------------------------------------------------------------------------ loss


def test_loss_mean_matches_shifted_cross_entropy():
    logits, tokens = _random_batch()
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    assert_close(lm_cross_entropy_loss(logits, tokens), expected)


def test_loss_per_token_matches_shifted_cross_entropy():
    logits, tokens = _random_batch(seed=1)
    per_token = lm_cross_entropy_loss(logits, tokens, per_token=True)
    assert per_token.shape == (3, 5)
    assert_close(per_token, _reference_per_token(logits, tokens))


def test_loss_predicts_next_token_not_current():
    # Logits at t are certain of token t+1: loss ~0. Certain of token t instead: loss large.
    tokens = torch.tensor([[1, 2, 3, 0]])
    next_logits = F.one_hot(torch.tensor([[2, 3, 0, 0]]), 4).double() * 50
    same_logits = F.one_hot(tokens, 4).double() * 50
    assert lm_cross_entropy_loss(next_logits, tokens) < 1e-10
    assert lm_cross_entropy_loss(same_logits, tokens) > 10


def test_masked_loss_ignores_predictions_touching_padding():
    logits, tokens = _random_batch(seed=2)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    # A prediction counts only if its source and its target positions are both real tokens.
    keep = (mask[:, :-1] == 1) & (mask[:, 1:] == 1)
    targets = torch.where(keep, tokens[:, 1:], -100)
    expected_mean = F.cross_entropy(
        logits[:, :-1].reshape(-1, 11), targets.reshape(-1), ignore_index=-100
    )
    assert_close(lm_cross_entropy_loss(logits, tokens, attention_mask=mask), expected_mean)

    per_token = lm_cross_entropy_loss(logits, tokens, attention_mask=mask, per_token=True)
    assert_close(per_token, torch.where(keep, _reference_per_token(logits, tokens), 0.0))


def test_masked_loss_equals_loss_of_unpadded_rows():
    logits, tokens = _random_batch(batch=2, pos=5, seed=3)
    # Row 1 is row 0's first three tokens, left-padded by two.
    padded_logits = logits.clone()
    padded_tokens = tokens.clone()
    padded_logits[1, 2:] = logits[0, :3]
    padded_tokens[1, 2:] = tokens[0, :3]
    padded_logits[1, :2] = float("-inf")  # garbage at padded positions must not leak (no NaN)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    loss = lm_cross_entropy_loss(padded_logits, padded_tokens, attention_mask=mask)
    unpadded = torch.cat(
        [
            _reference_per_token(logits[:1], tokens[:1])[0],
            _reference_per_token(logits[:1, :3], tokens[:1, :3])[0],
        ]
    )
    assert torch.isfinite(loss)
    assert_close(loss, unpadded.mean())


def test_all_ones_mask_changes_nothing():
    logits, tokens = _random_batch(seed=4)
    ones = torch.ones_like(tokens)
    assert_close(
        lm_cross_entropy_loss(logits, tokens, attention_mask=ones),
        lm_cross_entropy_loss(logits, tokens),
    )


# ------------------------------------------------------------------------------ accuracy


def test_accuracy_matches_independent_count():
    logits, tokens = _random_batch(batch=4, pos=8, vocab=3, seed=5)
    correct = []
    for b in range(4):
        for t in range(7):
            correct.append(int(logits[b, t].argmax()) == int(tokens[b, t + 1]))
    per_token = lm_accuracy(logits, tokens, per_token=True)
    assert per_token.dtype == torch.bool and per_token.shape == (4, 7)
    assert per_token.flatten().tolist() == correct
    assert_close(lm_accuracy(logits, tokens), torch.tensor(sum(correct) / len(correct)))


# ------------------------------------------------------------------------------ attention mask


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_attention_mask_matches_hf_tokenizer(padding_side):
    tok = make_tokenizer(padding_side)
    enc = tok(["<bos> a b c d", "<bos> c", "<bos> d a"], padding=True, return_tensors="pt")
    mask = get_attention_mask(tok, enc["input_ids"], prepend_bos=True)
    assert mask.dtype == enc["input_ids"].dtype
    assert torch.equal(mask, enc["attention_mask"])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_attention_mask_when_pad_is_bos(padding_side):
    # HF's own mask is the truth: it knows which ids it added as padding.
    tok = make_tokenizer(padding_side, pad_is_bos=True)
    enc = tok(["<bos> a b c d", "<bos> c", "<bos> d a"], padding=True, return_tensors="pt")
    mask = get_attention_mask(tok, enc["input_ids"], prepend_bos=True)
    assert torch.equal(mask, enc["attention_mask"])


def test_attention_mask_keeps_pad_ids_inside_text():
    tok = make_tokenizer("left")
    tokens = torch.tensor([[2, 2, 0, 4, 2, 5], [0, 2, 4, 5, 6, 7]])
    expected = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert torch.equal(get_attention_mask(tok, tokens, prepend_bos=True), expected)
    tok.padding_side = "right"
    tokens = torch.tensor([[0, 4, 2, 5, 2, 2]])
    assert torch.equal(get_attention_mask(tok, tokens, True), torch.tensor([[1, 1, 1, 1, 0, 0]]))


def test_attention_mask_bos_only_row_stays_attended():
    tok = make_tokenizer("right", pad_is_bos=True)
    tokens = torch.tensor([[0, 4, 5], [0, 0, 0]])  # second row: BOS of an empty prompt, then pads
    mask = get_attention_mask(tok, tokens, prepend_bos=True)
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [1, 0, 0]]))
    # Without prepend_bos nothing is special about id 0.
    assert torch.equal(get_attention_mask(tok, tokens, False), torch.tensor([[1, 1, 1], [0, 0, 0]]))

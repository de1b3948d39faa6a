"""Tokenization helpers against explicit expectations built with the tokenizer itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tlcore.utils.tokenize import (
    TokenizedDataset,
    get_cumsum_along_dim,
    get_device,
    get_input_with_manually_prepended_bos,
    get_offset_position_ids,
    get_tokens_with_bos_removed,
    remove_batch_dim,
    to_numpy,
    tokenize_and_concatenate,
)

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
VOCAB = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
BOS, EOS, PAD = 0, 1, 2


def make_tokenizer(
    pad: str | None = "<pad>", padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
    if pad is not None:
        kwargs["pad_token"] = pad
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **kwargs)
    tok.padding_side = padding_side
    return tok


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 9))) for _ in range(n)]


def _expected_rows(tok, texts: list[str], max_length: int, add_bos: bool) -> list[list[int]]:
    """Packing done by hand: EOS-joined stream of each text's ids, cut into full rows."""
    seq_len = max_length - 1 if add_bos else max_length
    stream: list[int] = []
    for i, text in enumerate(texts):
        if i:
            stream.append(EOS)
        stream += tok.encode(text, add_special_tokens=False)
    rows = [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    return [[BOS] + row if add_bos else row for row in rows]


# ------------------------------------------------------------------------- tokenize_and_concatenate


@pytest.mark.parametrize("add_bos_token", [True, False])
def test_tokenize_and_concatenate_packs_eos_joined_stream(add_bos_token):
    tok = make_tokenizer()
    texts = _texts(40)
    ds = tokenize_and_concatenate(texts, tok, max_length=7, add_bos_token=add_bos_token)
    expected = _expected_rows(tok, texts, 7, add_bos_token)
    assert isinstance(ds, TokenizedDataset)
    assert ds["tokens"].dtype == torch.int64
    assert ds["tokens"].tolist() == expected
    assert len(ds) == len(expected) > 10


def test_tokenize_and_concatenate_drops_partial_row_per_batch_of_1000():
    # datasets.map(batched=True) packs each batch of 1000 texts separately; so does the list path.
    tok = make_tokenizer()
    texts = _texts(2300, seed=1)
    ds = tokenize_and_concatenate(texts, tok, max_length=16)
    expected = []
    for start in (0, 1000, 2000):
        expected += _expected_rows(tok, texts[start : start + 1000], 16, True)
    assert ds["tokens"].tolist() == expected


def test_tokenize_and_concatenate_short_input_is_one_padded_row():
    tok = make_tokenizer()
    ds = tokenize_and_concatenate(["the cat", "sat"], tok, max_length=8)
    assert ds["tokens"].tolist() == [[BOS, 4, 5, EOS, 6, PAD, PAD, PAD]]
    # Without a pad token, EOS pads (and the tokenizer is not given a new token).
    no_pad = make_tokenizer(pad=None)
    ds = tokenize_and_concatenate(["the cat"], no_pad, max_length=4)
    assert ds["tokens"].tolist() == [[BOS, 4, 5, EOS]]
    assert no_pad.pad_token is None and len(no_pad) == len(VOCAB)


def test_tokenize_and_concatenate_keeps_eos_when_pad_is_eos():
    tok = make_tokenizer(pad="<eos>")
    ds = tokenize_and_concatenate(["the cat", "sat on"], tok, max_length=6)
    assert ds["tokens"].tolist() == [[BOS, 4, 5, EOS, 6, 7]]


def test_tokenize_and_concatenate_accepts_rows_and_columns():
    tok = make_tokenizer()
    texts = _texts(30, seed=2)
    base = tokenize_and_concatenate(texts, tok, max_length=5)["tokens"]
    by_column = tokenize_and_concatenate({"body": texts}, tok, max_length=5, column_name="body")
    rows = [{"body": t, "id": i} for i, t in enumerate(texts)]
    by_rows = tokenize_and_concatenate(rows, tok, max_length=5, column_name="body")
    assert torch.equal(by_column["tokens"], base)
    assert torch.equal(by_rows["tokens"], base)
    with pytest.raises(TypeError):
        tokenize_and_concatenate("the cat sat", tok)
    with pytest.raises(TypeError):
        tokenize_and_concatenate([1, 2], tok)


def test_tokenized_dataset_works_like_torch_format_dataset():
    tok = make_tokenizer()
    ds = tokenize_and_concatenate(_texts(50, seed=3), tok, max_length=6)
    tokens = ds["tokens"]
    assert torch.equal(ds[2]["tokens"], tokens[2])
    assert torch.equal(ds[1:3]["tokens"], tokens[1:3])
    assert [row["tokens"].tolist() for row in ds] == tokens.tolist()
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    assert torch.equal(next(iter(loader))["tokens"], tokens[:4])
    with pytest.raises(KeyError):
        ds["text"]


def test_tokenize_and_concatenate_hf_dataset_matches_list():
    datasets = pytest.importorskip("datasets")
    tok = make_tokenizer()
    texts = _texts(60, seed=4)
    hf = datasets.Dataset.from_dict({"text": texts, "meta": list(range(60))})
    out = tokenize_and_concatenate(hf, tok, max_length=6, num_proc=1)
    assert out.column_names == ["tokens"]
    expected = tokenize_and_concatenate(texts, tok, max_length=6)["tokens"]
    assert torch.equal(out[:]["tokens"], expected)  # datasets>=4: out["tokens"] is a lazy Column


def test_tokenize_and_concatenate_errors():
    tok = make_tokenizer()
    with pytest.raises(ValueError, match="max_length"):
        tokenize_and_concatenate(["the"], tok, max_length=1)
    core = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    no_eos = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>")
    with pytest.raises(ValueError, match="EOS"):
        tokenize_and_concatenate(["the"], no_eos)


# ------------------------------------------------------------------------------ BOS helpers


def test_manually_prepended_bos_tokenizes_like_bos_plus_text():
    tok = make_tokenizer()
    assert get_input_with_manually_prepended_bos(tok, "the cat") == "<bos>the cat"
    prepended = get_input_with_manually_prepended_bos(tok, ["the cat", "dog"])
    assert tok(prepended)["input_ids"] == [[BOS, 4, 5], [BOS, 10]]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pad", ["<pad>", "<bos>"])
def test_tokens_with_bos_removed_equal_tokens_without_bos(padding_side, pad):
    # The independent truth: the same texts tokenized (and padded by HF) without a BOS.
    tok = make_tokenizer(pad=pad, padding_side=padding_side)
    texts = ["the cat sat", "dog", "a mat"]
    with_bos = tok([f"<bos> {t}" for t in texts], padding=True, return_tensors="pt")
    without_bos = tok(texts, padding=True, return_tensors="pt")
    removed = get_tokens_with_bos_removed(tok, with_bos["input_ids"])
    assert torch.equal(removed, without_bos["input_ids"])


# ------------------------------------------------------------------------------ small helpers


def test_get_offset_position_ids_counts_attended_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    expected = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        seen = 0
        for t in range(mask.shape[1]):
            seen += int(mask[b, t])
            expected[b, t] = max(seen - 1, 0)
    assert torch.equal(get_offset_position_ids(0, mask), expected)
    assert torch.equal(get_offset_position_ids(4, mask), expected[:, 4:])


def test_get_cumsum_along_dim():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert get_cumsum_along_dim(x, 1).tolist() == [[1, 3, 6], [4, 9, 15]]
    assert get_cumsum_along_dim(x, 1, reverse=True).tolist() == [[6, 5, 3], [15, 11, 6]]
    assert get_cumsum_along_dim(x, 0, reverse=True).tolist() == [[5, 7, 9], [4, 5, 6]]


def test_to_numpy():
    param = torch.nn.Parameter(torch.ones(2, 3))
    assert isinstance(to_numpy(param), np.ndarray) and to_numpy(param).shape == (2, 3)
    assert to_numpy(torch.tensor([1.5], dtype=torch.bfloat16)).tolist() == [1.5]
    array = np.arange(3)
    assert to_numpy(array) is array
    assert to_numpy((1, 2)).tolist() == [1, 2]
    assert to_numpy(3.0).shape == ()
    with pytest.raises(ValueError, match="invalid type"):
        to_numpy({"a": 1})


def test_remove_batch_dim():
    assert remove_batch_dim(torch.zeros(1, 4, 5)).shape == (4, 5)
    assert remove_batch_dim(torch.zeros(3, 4)).shape == (3, 4)


def test_get_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")

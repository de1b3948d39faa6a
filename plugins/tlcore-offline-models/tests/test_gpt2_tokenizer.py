"""The offline GPT-2 tokenizer rebuilt from openai-whisper's gpt2.tiktoken.

Besides known ids, encodings are checked against an independent encoder: tiktoken's algorithm
(GPT-2's split regex, then repeatedly join the adjacent pair with the lowest rank) run directly
on the rank file.
"""

from __future__ import annotations

import base64
import json
from importlib import metadata

import pytest
import tlcore_offline_models.gpt2 as tokenizers_module
from tlcore_offline_models import available_offline_tokenizers, gpt2_tokenizer

MIXED = [
    "Hello world",
    "  multiple   spaces\n\n\ttabs and trailing  ",
    "Café naïve résumé, Ünïcödé",
    "日本語のテキスト",
    "emoji 🎉👍🏽 done",
    "don't I'll we've they're",
    "12345 3.14159 1,000,000",
    "<|endoftext|>after the end",
    " leading space",
    "def f(x):\n    return x ** 2  # comment",
]
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

needs_whisper = pytest.mark.skipif(
    "gpt2" not in available_offline_tokenizers(),
    reason="openai-whisper not installed: pip install --no-deps openai-whisper==20250625",
)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tlcore-cache")


@pytest.fixture(scope="module")
def tokenizer(cache_root):
    return gpt2_tokenizer(cache_dir=cache_root)


@pytest.fixture(scope="module")
def rank_encode():
    """Encode like tiktoken, straight from the rank file."""
    regex = pytest.importorskip("regex")
    path = available_offline_tokenizers()["gpt2"]
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in path.read_bytes().splitlines() if line)
    }

    def encode_piece(piece: bytes) -> list[int]:
        parts = [bytes([byte]) for byte in piece]
        while len(parts) > 1:
            pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            known = [pair for pair in pairs if pair[0] is not None]
            if not known:
                break
            _, i = min(known)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return [ranks[part] for part in parts]

    def encode(text: str) -> list[int]:
        ids = []
        for chunk_index, chunk in enumerate(text.split("<|endoftext|>")):
            if chunk_index:
                ids.append(50256)
            for piece in regex.findall(GPT2_SPLIT, chunk):
                ids += encode_piece(piece.encode())
        return ids

    return encode


@needs_whisper
def test_hello_world(tokenizer):
    assert tokenizer("Hello world").input_ids == [15496, 995]


@needs_whisper
def test_special_tokens_like_hub_gpt2(tokenizer):
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 50256
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == tokenizer.unk_token_id == 50256
    assert tokenizer.pad_token is None
    assert len(tokenizer) == 50257
    assert tokenizer.model_max_length == 1024
    assert tokenizer("<|endoftext|>").input_ids == [50256]  # whole, not cut into pieces


@needs_whisper
@pytest.mark.parametrize("text", MIXED)
def test_round_trip_and_matches_rank_encoder(tokenizer, rank_encode, text):
    ids = tokenizer(text).input_ids
    assert ids == rank_encode(text)
    assert tokenizer.decode(ids) == text


@needs_whisper
def test_merges_are_gpt2s(tokenizer, cache_root):
    model = json.loads((cache_root / "tokenizers" / "gpt2-v1" / "tokenizer.json").read_text())
    merges = model["model"]["merges"]
    assert len(merges) == 50000
    # The opening lines of GPT-2's merges.txt (vocab.bpe).
    assert [" ".join(m) if isinstance(m, list) else m for m in merges[:6]] == [
        "Ġ t",
        "Ġ a",
        "h e",
        "i n",
        "r e",
        "o n",
    ]


@needs_whisper
def test_second_call_loads_cache(tokenizer, cache_root):
    assert (cache_root / "tokenizers" / "gpt2-v1" / "tokenizer.json").is_file()
    again = gpt2_tokenizer(cache_dir=cache_root)
    assert again is not tokenizer
    assert [again(text).input_ids for text in MIXED] == [tokenizer(t).input_ids for t in MIXED]


def test_missing_whisper_names_pip_command(monkeypatch, tmp_path):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tokenizers_module.importlib_metadata, "distribution", not_installed)
    with pytest.raises(ImportError, match="pip install --no-deps openai-whisper"):
        gpt2_tokenizer(cache_dir=tmp_path)
    assert "gpt2" not in available_offline_tokenizers()

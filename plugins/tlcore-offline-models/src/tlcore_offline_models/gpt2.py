"""Real tokenizers that need no network: GPT-2's, rebuilt from a file pip can install.

GPT-2's BPE ships inside the ``openai-whisper`` sdist as ``whisper/assets/gpt2.tiktoken``
(byte-identical to OpenAI's ``r50k_base``). That file lists token ranks, not merges, so
:func:`gpt2_tokenizer` rebuilds GPT-2's ``vocab.json``/``merges.txt`` from it (exactly: all
50,257 tokens and all 50,000 merges, in order) and caches the result as ``tokenizer.json``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from tlcore.loading.gguf import tlcore_cache_dir
from tlcore_offline_models.smollm2 import find_smollm2_gguf

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

WHISPER_DISTRIBUTION = "openai-whisper"
GPT2_TIKTOKEN = "whisper/assets/gpt2.tiktoken"
#: The hash tiktoken pins for OpenAI's r50k_base (= GPT-2) file.
GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER_INSTALL = "pip install --no-deps openai-whisper==20250625"
GPT2_END_OF_TEXT = "<|endoftext|>"
GPT2_CONTEXT = 1024

# Bump when the rebuild changes, so stale caches are not served.
_GPT2_CACHE_NAME = "gpt2-v1"


def gpt2_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerBase:
    """Return GPT-2's exact tokenizer, built offline from ``openai-whisper``'s copy of it.

    The first call rebuilds it (about 2 s) and saves it under
    ``<cache root>/tokenizers/gpt2-v1/``; later calls load that folder.

    Args:
        cache_dir: Cache root to use instead of :func:`tlcore.loading.gguf.tlcore_cache_dir`.

    Returns:
        A new transformers ``GPT2Tokenizer``, the same as the hub's ``gpt2``: ``<|endoftext|>``
        (50256) is BOS, EOS and UNK, there is no pad token, and no BOS is added.

    Raises:
        ImportError: If ``openai-whisper`` is not installed (the message gives the pip command).
        ValueError: If its ``gpt2.tiktoken`` is not the r50k_base file.

    Example:
        >>> gpt2_tokenizer()("Hello world").input_ids  # doctest: +SKIP
        [15496, 995]
    """
    from transformers import GPT2Tokenizer

    tiktoken_file = _gpt2_tiktoken_path()
    root = Path(cache_dir).expanduser() if cache_dir is not None else tlcore_cache_dir()
    folder = root / "tokenizers" / _GPT2_CACHE_NAME
    if (folder / "tokenizer.json").is_file():
        return GPT2Tokenizer.from_pretrained(folder)

    tokenizer = _build_gpt2_tokenizer(tiktoken_file)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{folder.name}-", suffix=".partial", dir=folder.parent)
    )
    try:
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "tokenizer.json").is_file():
                raise  # not a concurrent build that finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def available_offline_tokenizers() -> dict[str, Path]:
    """List the real tokenizers this machine can build without a network.

    Returns:
        Tokenizer name → the installed file it is built from: ``"gpt2"`` (see
        :func:`gpt2_tokenizer`) and ``"smollm2"`` (the SmolLM2 GGUF; see
        :meth:`tlcore.loading.gguf.GGUFSource.tokenizer`), each only if its package is installed.
    """
    found: dict[str, Path | None] = {"smollm2": find_smollm2_gguf()}
    try:
        found["gpt2"] = _gpt2_tiktoken_path()
    except ImportError:
        pass
    return {name: path for name, path in sorted(found.items()) if path is not None}


def _gpt2_tiktoken_path() -> Path:
    """Find ``gpt2.tiktoken`` through package metadata (importing whisper is slow and ambiguous)."""
    try:
        distribution = importlib_metadata.distribution(WHISPER_DISTRIBUTION)
        path: Path | None = Path(str(distribution.locate_file(GPT2_TIKTOKEN)))
    except importlib_metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ImportError(
            f"The offline GPT-2 tokenizer is built from {GPT2_TIKTOKEN} in the "
            f"{WHISPER_DISTRIBUTION} package, which is not installed. Install it with: "
            f"{WHISPER_INSTALL}"
        )
    return path


def _build_gpt2_tokenizer(tiktoken_file: Path) -> PreTrainedTokenizerBase:
    """Rebuild GPT-2's vocabulary and merge list from tiktoken ranks."""
    from transformers import GPT2Tokenizer

    data = tiktoken_file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != GPT2_TIKTOKEN_SHA256:
        raise ValueError(
            f"{tiktoken_file} has SHA-256 {digest}, not GPT-2's r50k_base ({GPT2_TIKTOKEN_SHA256})"
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    to_text = _gpt2_byte_alphabet()
    vocab = {to_text(token): rank for token, rank in ranks.items()}
    vocab[GPT2_END_OF_TEXT] = len(ranks)
    merges = [
        tuple(to_text(part) for part in _last_merge(token, rank, ranks))
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
    ]
    # transformers annotates merges as list[str], but its tokenizers backend wants (left, right).
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        model_max_length=GPT2_CONTEXT,
    )


def _gpt2_byte_alphabet() -> Callable[[bytes], str]:
    """GPT-2's byte → printable character map (``bytes_to_unicode``), as a bytes → str function."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [byte for byte in range(256) if byte not in printable]
    # Bytes without a printable glyph are shifted past 255, in byte order.
    chars = {byte: chr(byte) for byte in printable} | {
        byte: chr(256 + n) for n, byte in enumerate(others)
    }
    return lambda token: "".join(chars[byte] for byte in token)


def _last_merge(token: bytes, rank: int, ranks: dict[bytes, int]) -> list[bytes]:
    """The two parts BPE joins last to make ``token``.

    Replaying BPE on the token's bytes, using only merges ranked below the token's own, stops one
    merge short of it; with tiktoken's ranks that leaves exactly the pair GPT-2's merges.txt lists.
    """
    parts = [bytes([byte]) for byte in token]
    while len(parts) > 2:
        _, i = min(
            (ranks[parts[j] + parts[j + 1]], j)
            for j in range(len(parts) - 1)
            if ranks.get(parts[j] + parts[j + 1], rank) < rank
        )
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts

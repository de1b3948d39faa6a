"""Documents → fixed-length token rows → shards, deterministically.

Rows are packed as SAELens's ``concat_and_batch_sequences`` packs them with its defaults
(``prepend_bos=True``, ``sequence_separator_token="bos"``): every row starts with BOS, documents
follow one another separated by the separator token, and a document that does not fit continues
at the start of the next row (after that row's BOS). A pre-tokenised document (a list of ids) is
taken as one row, cut to the context size, as SAELens takes a pre-tokenised dataset.

Row ``r`` always holds the same tokens for the same dataset, tokenizer and settings, so shard
``s`` (rows ``s * rows_per_shard`` onwards) can be recomputed alone: that is what resuming and
retrying rely on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tlcore.harvest.sources import Document

_TOKENIZE_CHUNK = 256  # documents per tokenizer call (fast tokenizers batch in Rust)


def token_rows(
    documents: Iterable[Document],
    tokenizer: Any,
    context_size: int,
    bos_token_id: int | None,
    separator_token_id: int | None,
) -> Iterator[list[int]]:
    """Pack documents into rows of exactly ``context_size`` tokens.

    Args:
        documents: Texts or token-id lists.
        tokenizer: Tokenises text documents (not needed for token-id documents).
        context_size: Tokens per row.
        bos_token_id: Put at the start of every packed row (None: nothing).
        separator_token_id: Put between two documents in a row (None: nothing).

    Yields:
        Rows of token ids; the incomplete last row is dropped.

    Raises:
        ValueError: For a pre-tokenised document shorter than ``context_size``, or text with no
            tokenizer.
    """
    row: list[int] = []
    for tokens in _tokenized(documents, tokenizer):
        if tokens is None:
            continue
        if isinstance(tokens, tuple):  # pre-tokenised: one row each, as SAELens
            ids = list(tokens)
            if len(ids) < context_size:
                raise ValueError(
                    f"a pre-tokenised row has {len(ids)} tokens, fewer than the context size "
                    f"{context_size}"
                )
            yield ids[:context_size]
            continue
        offset, first = 0, True
        while offset < len(tokens):
            head = tokens[offset]
            if not row:
                prefix = [bos_token_id] if bos_token_id is not None and head != bos_token_id else []
            elif first and separator_token_id is not None and head != separator_token_id:
                prefix = [separator_token_id]
            else:
                prefix = []
            room = context_size - len(row)
            row.extend(prefix[:room])
            take = max(room - len(prefix), 0)
            row.extend(tokens[offset : offset + take])
            offset += take
            first = False
            if len(row) == context_size:
                yield row
                row = []


def _tokenized(documents: Iterable[Document], tokenizer: Any) -> Iterator[Any]:
    """Token lists for text (tokenised in chunks), tuples for pre-tokenised documents."""
    pending: list[str] = []

    def flush() -> Iterator[list[int]]:
        if tokenizer is None:
            raise ValueError("the dataset holds text but the model has no tokenizer")
        encoded = tokenizer(pending, add_special_tokens=False)["input_ids"]
        pending.clear()
        yield from encoded

    for doc in documents:
        if isinstance(doc, str):
            pending.append(doc)
            if len(pending) >= _TOKENIZE_CHUNK:
                yield from flush()
        else:
            if pending:
                yield from flush()
            yield tuple(doc)
    if pending:
        yield from flush()


def shards(
    rows: Iterator[list[int]], n_rows: int | None, rows_per_shard: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Group rows into shards.

    Args:
        rows: Token rows.
        n_rows: Stop after this many rows (the token budget), or None for all.
        rows_per_shard: Rows per shard (the last may be shorter).

    Yields:
        ``(shard index, tokens [rows, context_size] int32)``.
    """
    index, buffer, taken = 0, [], 0
    for row in rows:
        if n_rows is not None and taken >= n_rows:
            break
        buffer.append(row)
        taken += 1
        if len(buffer) == rows_per_shard:
            yield index, np.asarray(buffer, dtype=np.int32)
            index, buffer = index + 1, []
    if buffer:
        yield index, np.asarray(buffer, dtype=np.int32)


def tokens_digest(tokens: np.ndarray) -> str:
    """SHA-256 of a shard's token ids (how a resumed run checks it regenerated the same rows).

    Args:
        tokens: ``[rows, context_size]`` int32.

    Returns:
        Hex digest.
    """
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i4").tobytes()).hexdigest()

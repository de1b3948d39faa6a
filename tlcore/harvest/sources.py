"""Documents from a text dataset: local files, a saved ``datasets`` folder, or a dataset object.

A document is a string (to tokenise) or a list of token ids (a pre-tokenised dataset, as
SAELens accepts them: a ``tokens`` or ``input_ids`` column). Nothing here downloads anything.

- ``.txt``: one document per non-empty line (as ``datasets.load_dataset("text")``).
- ``.jsonl`` / ``.json`` (JSON lines): one document per line, from ``text_column``.
- ``.parquet``: one document per row, from ``text_column``.
- a folder written by ``Dataset.save_to_disk`` (``state.json`` inside; a ``DatasetDict`` gives its
  ``train`` split); a folder of the files above (read in sorted order).
- a ``datasets.Dataset`` (or ``IterableDataset``) object, or any iterable of dicts or strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

Document = str | list[int]
_TOKEN_COLUMNS = ("tokens", "input_ids")
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


def describe_source(source: Any) -> str | list[str]:
    """A short JSON-able description of a dataset argument, for the manifest.

    Args:
        source: What :func:`iter_documents` accepts.

    Returns:
        The path(s), or the object's type and fingerprint.
    """
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    if isinstance(source, Sequence) and all(isinstance(s, (str, os.PathLike)) for s in source):
        return [str(Path(s).resolve()) for s in source]
    fingerprint = getattr(source, "_fingerprint", None)
    name = type(source).__name__
    return f"{name}(fingerprint={fingerprint})" if fingerprint else name


def open_source(source: Any, seed: int | None, shuffle: bool) -> Iterable[Any]:
    """Turn a dataset argument into an iterable of rows, shuffled by ``seed`` when asked.

    Args:
        source: Path(s), a ``datasets`` object, or an iterable of rows.
        seed: Shuffle seed.
        shuffle: Shuffle documents (needs random access: files are read into memory first).

    Returns:
        Rows (dicts, strings or token lists).

    Raises:
        FileNotFoundError: For a path that does not exist.
        ValueError: For a file type this reader does not know.
    """
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(s, (str, os.PathLike)) for s in source)
    ):
        paths = [Path(s) for s in source]
        saved = [
            p for p in paths if (p / "state.json").exists() or (p / "dataset_dict.json").exists()
        ]
        if saved:
            if len(paths) != 1:
                raise ValueError("pass one saved dataset folder at a time")
            source = _load_from_disk(paths[0])
        else:
            files = _expand(paths)
            rows: Iterable[Any] = _iter_files(files)
            if not shuffle:
                return rows
            source = list(rows)
    if shuffle:
        if hasattr(source, "shuffle"):
            return source.shuffle(seed=seed)  # type: ignore[no-any-return]
        import numpy as np

        items = list(source)
        order = np.random.default_rng(seed).permutation(len(items))
        return [items[i] for i in order]
    return source  # type: ignore[no-any-return]


def iter_documents(rows: Iterable[Any], text_column: str = "text") -> Iterator[Document]:
    """Yield each row's document: its text, or its token ids for a pre-tokenised dataset.

    Args:
        rows: From :func:`open_source`.
        text_column: Column holding the text (``tokens``/``input_ids`` columns win).

    Yields:
        Strings or lists of token ids.

    Raises:
        KeyError: When a row has neither ``text_column`` nor a token column.
    """
    for row in rows:
        if isinstance(row, str):
            yield row
            continue
        if isinstance(row, dict):
            for column in _TOKEN_COLUMNS:
                if column in row and column != text_column:
                    yield [int(t) for t in row[column]]
                    break
            else:
                if text_column not in row:
                    raise KeyError(
                        f"dataset row has no '{text_column}' column (columns: {sorted(row)}); "
                        "pass text_column=... (--text-column)"
                    )
                value = row[text_column]
                yield value if isinstance(value, str) else [int(t) for t in value]
            continue
        yield [int(t) for t in row]


def _load_from_disk(path: Path) -> Any:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(f"{path} is a DatasetDict without a 'train' split: {list(loaded)}")
        return loaded["train"]
    return loaded


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"dataset path {path} does not exist")
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix in _FILE_SUFFIXES)
            if not inside:
                raise ValueError(f"{path} holds no {'/'.join(_FILE_SUFFIXES)} files")
            files.extend(inside)
        elif path.suffix in _FILE_SUFFIXES:
            files.append(path)
        else:
            raise ValueError(
                f"unknown dataset file type '{path.suffix}' ({path}); "
                f"expected one of {', '.join(_FILE_SUFFIXES)} or a save_to_disk folder"
            )
    return files


def _iter_files(files: list[Path]) -> Iterator[Any]:
    for path in files:
        if path.suffix == ".txt":
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    line = line.rstrip("\n")
                    if line.strip():
                        yield line
        elif path.suffix in (".jsonl", ".json"):
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()

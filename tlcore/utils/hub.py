"""Files and datasets from the HuggingFace Hub or from disk (``transformer_lens.utils``).

``get_dataset`` also reads local data: a folder written by ``datasets``' ``save_to_disk`` or a
``.txt``/``.json``/``.jsonl``/``.csv``/``.parquet`` file, so tests and offline machines need no
download. ``datasets`` and ``huggingface_hub`` load when these are first called.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tlcore.utils.environment import select_compatible_kwargs

__all__ = ["DATASET_ALIASES", "clear_huggingface_cache", "download_file_from_hf", "get_dataset"]

DATASET_ALIASES: dict[str, str] = {
    "openwebtext": "stas/openwebtext-10k",
    "owt": "stas/openwebtext-10k",
    "pile": "NeelNanda/pile-10k",
    "c4": "NeelNanda/c4-10k",
    "code": "NeelNanda/code-10k",
    "python": "NeelNanda/code-10k",
    "c4_code": "NeelNanda/c4-code-20k",
    "c4-code": "NeelNanda/c4-code-20k",
    "wiki": "NeelNanda/wiki-10k",
}
"""TransformerLens's short names for 10k-text hub datasets."""

_FILE_BUILDERS = {
    ".txt": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def hub_cache_dir() -> str:
    """The HuggingFace hub cache folder (TransformerLens's ``utils.CACHE_DIR``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def download_file_from_hf(
    repo_name: str,
    file_name: str,
    subfolder: str = ".",
    cache_dir: str | None = None,
    force_is_torch: bool = False,
    **kwargs: Any,
) -> Any:
    """Fetch ``subfolder/file_name`` from a hub repo (or the cache) and load it if it can.

    ``.pth`` files (or any file with ``force_is_torch``) load with ``torch.load``, ``.json`` with
    ``json``; other files return their path. Unlike TransformerLens, ``torch.load`` refuses pickled
    objects unless ``weights_only=False`` is passed (tensors and plain containers load either way).

    Args:
        repo_name: Hub repo id.
        file_name: File inside the repo.
        subfolder: Folder inside the repo.
        cache_dir: Cache folder (default: the hub cache, TransformerLens's ``CACHE_DIR``).
        force_is_torch: Load with ``torch.load`` whatever the extension.
        **kwargs: Passed on to ``hf_hub_download`` where it accepts them (``revision``, ...);
            ``weights_only`` goes to ``torch.load``.

    Returns:
        The loaded object or the local path.
    """
    from huggingface_hub import hf_hub_download

    file_path = hf_hub_download(
        repo_id=repo_name,
        filename=file_name,
        subfolder=subfolder,
        cache_dir=cache_dir or hub_cache_dir(),
        **select_compatible_kwargs(kwargs, hf_hub_download),
    )
    if file_path.endswith(".pth") or force_is_torch:
        return torch.load(
            file_path, map_location="cpu", weights_only=kwargs.get("weights_only", True)
        )
    if file_path.endswith(".json"):
        return json.loads(Path(file_path).read_text())
    print("File type not supported:", file_path.split(".")[-1])
    return file_path


def clear_huggingface_cache() -> None:
    """Delete the HuggingFace hub cache folder and everything in it (downloads start over)."""
    print("Deleting Hugging Face cache directory and all its contents.")
    shutil.rmtree(hub_cache_dir(), ignore_errors=True)


def get_dataset(dataset_name: str, **kwargs: Any) -> Any:
    r"""A small text dataset by TransformerLens's short name, or one on disk.

    Short names (:data:`DATASET_ALIASES`: ``pile``, ``openwebtext``/``owt``, ``c4``,
    ``code``/``python``, ``c4_code``, ``wiki``) load their hub dataset's ``train`` split (from
    the cache when offline). A path loads local data: a ``save_to_disk`` folder, or a file whose
    extension picks the ``datasets`` builder (a ``.txt`` file gives one ``text`` row per line).

    Args:
        dataset_name: A short name or a path.
        **kwargs: Passed to ``datasets.load_dataset`` (``data_dir``, ``streaming``, ...).

    Returns:
        A ``datasets.Dataset`` (each row has a ``text`` field for the short names).

    Raises:
        ValueError: For a name that is neither a short name nor an existing path.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.txt"
        >>> _ = path.write_text("first line\nsecond line\n")
        >>> list(get_dataset(str(path))["text"])
        ['first line', 'second line']
    """
    import datasets

    path = Path(dataset_name).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(str(path), split="train", **kwargs)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: no dataset reader for {path.suffix!r} files")
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    if dataset_name in DATASET_ALIASES:
        return datasets.load_dataset(DATASET_ALIASES[dataset_name], split="train", **kwargs)
    raise ValueError(
        f"Dataset {dataset_name} not supported: use one of {sorted(DATASET_ALIASES)} or a local "
        f"path (a save_to_disk folder or a {'/'.join(_FILE_BUILDERS)} file)"
    )


def get_tokenizer_with_bos(tokenizer: Any) -> Any:
    """The same tokenizer set to add BOS itself (``add_bos_token=True``), reloaded if needed.

    TransformerLens tokenises with such a tokenizer; tlcore's own methods prepend BOS as an id
    and never need it (see :mod:`tlcore.model_tokens`), but code written for TransformerLens may.

    Args:
        tokenizer: A transformers tokenizer (reloaded from its ``name_or_path`` when it does not
            add BOS already).

    Returns:
        A tokenizer that adds BOS.
    """
    import os
    from copy import deepcopy

    from transformers import AutoTokenizer

    init_kwargs = deepcopy(tokenizer.init_kwargs)
    name_or_path = init_kwargs.pop("name_or_path", tokenizer.name_or_path)
    add_bos_token = init_kwargs.pop("add_bos_token", None)
    if add_bos_token is None:
        add_bos_token = getattr(tokenizer, "add_bos_token", False)
    if add_bos_token:
        return tokenizer
    token = os.environ.get("HF_TOKEN") or None
    return AutoTokenizer.from_pretrained(
        name_or_path, add_bos_token=True, token=token, **init_kwargs
    )

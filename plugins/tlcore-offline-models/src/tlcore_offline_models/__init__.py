"""tlcore plugin: the real model and tokenizer a package registry can install.

The entry point ``tlcore_offline_models.plugin`` answers tlcore's ``locate_checkpoint`` hook for the
SmolLM2 aliases; :func:`find_smollm2_gguf` and :func:`gpt2_tokenizer` are usable on their own.
"""

from tlcore_offline_models.gpt2 import available_offline_tokenizers, gpt2_tokenizer
from tlcore_offline_models.smollm2 import SMOLLM2_ALIASES, find_smollm2_gguf

__all__ = [
    "SMOLLM2_ALIASES",
    "available_offline_tokenizers",
    "find_smollm2_gguf",
    "gpt2_tokenizer",
]
__version__ = "0.1.0"

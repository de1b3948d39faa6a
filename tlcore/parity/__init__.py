"""Logit parity against HuggingFace: importable so plugin authors check their own specs."""

from tlcore.parity.compare import ParityResult, compare_model, compare_spec, parity_tokens

__all__ = ["ParityResult", "compare_model", "compare_spec", "parity_tokens"]

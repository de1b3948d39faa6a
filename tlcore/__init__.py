"""tlcore: TransformerLens's ``HookedTransformer`` API on a declarative model-spec engine.

Importing ``tlcore`` is light: the model, transformers and plugins load on first use.

Example:
    >>> import tlcore
    >>> tlcore.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "HookedTransformer": "tlcore.model",
    "HookedEncoder": "tlcore.hooked_encoder",
    "HookedEncoderDecoder": "tlcore.hooked_encoder_decoder",
    "HookedTransformerConfig": "tlcore.config",
    "ActivationCache": "tlcore.cache",
    "HookPoint": "tlcore.hook_points",
    "HookedRootModule": "tlcore.hooks",
    "FactoredMatrix": "tlcore.factored_matrix",
    "HookedTransformerKeyValueCache": "tlcore.kv_cache",
    "get_registry": "tlcore.registry",
    "register_spec": "tlcore.registry",
    "hookimpl": "tlcore.plugins.hookspecs",
    "SVDInterpreter": "tlcore.svd_interpreter",
}
_SUBMODULES = {
    "utils",
    "patching",
    "head_detector",
    "svd_interpreter",
    "parity",
    "evals",
    "errors",
    "loading",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tlcore.{name}")
    raise AttributeError(f"module 'tlcore' has no attribute {name!r}")

"""Nested attributes and temporarily overridden model defaults (``transformer_lens.utils``)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

__all__ = [
    "USE_DEFAULT_VALUE",
    "LocallyOverridenDefaults",
    "get_nested_attr",
    "override_or_use_default_value",
    "set_nested_attr",
]

USE_DEFAULT_VALUE = None
"""The argument value that means "use the model's default" (``prepend_bos``, ``padding_side``)."""


def get_nested_attr(obj: Any, attr_str: str) -> Any:
    """``obj.a.b.c`` for ``attr_str="a.b.c"``.

    Example:
        >>> from types import SimpleNamespace
        >>> get_nested_attr(SimpleNamespace(a=SimpleNamespace(b=3)), "a.b")
        3
    """
    for attr in attr_str.split("."):
        obj = getattr(obj, attr)
    return obj


def set_nested_attr(obj: Any, attr_str: str, value: Any) -> None:
    """Set ``obj.a.b.c = value`` for ``attr_str="a.b.c"``.

    Example:
        >>> from types import SimpleNamespace
        >>> ns = SimpleNamespace(a=SimpleNamespace(b=3)); set_nested_attr(ns, "a.b", 4); ns.a.b
        4
    """
    *path, last = attr_str.split(".")
    for attr in path:
        obj = getattr(obj, attr)
    setattr(obj, last, value)


def override_or_use_default_value(default_flag: Any, override: Any | None = None) -> Any:
    """``override`` unless it is None, else ``default_flag``.

    Example:
        >>> override_or_use_default_value(True, None), override_or_use_default_value(True, False)
        (True, False)
    """
    return override if override is not None else default_flag


class LocallyOverridenDefaults:
    """Context manager: override ``prepend_bos`` / ``padding_side`` defaults, restore on exit.

    ``prepend_bos`` overrides ``model.cfg.default_prepend_bos`` and ``padding_side`` overrides
    ``model.tokenizer.padding_side`` (skipped for a model without a tokenizer); None keeps the
    current default. The spelling of the name is TransformerLens's.

    Args:
        model: A ``HookedTransformer``.
        **overrides: ``prepend_bos`` (True/False/None), ``padding_side`` ("left"/"right"/None).

    Raises:
        ValueError: For another keyword or an invalid value.

    Example:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(cfg=SimpleNamespace(default_prepend_bos=True), tokenizer=None)
        >>> with LocallyOverridenDefaults(model, prepend_bos=False):
        ...     model.cfg.default_prepend_bos
        False
        >>> model.cfg.default_prepend_bos
        True
    """

    def __init__(self, model: Any, **overrides: Any) -> None:
        self.model = model
        self.overrides = overrides
        self.values_with_defaults: dict[str, dict[str, Any]] = {
            "prepend_bos": {
                "default_location": "model.cfg.default_prepend_bos",
                "valid_values": [USE_DEFAULT_VALUE, True, False],
                "skip_overriding": False,
                "default_value_to_restore": None,
            },
            "padding_side": {
                "default_location": "model.tokenizer.padding_side",
                "valid_values": [USE_DEFAULT_VALUE, "left", "right"],
                "skip_overriding": model.tokenizer is None,
                "default_value_to_restore": None,
            },
        }
        for override in overrides:
            if override not in self.values_with_defaults:
                raise ValueError(
                    f"{override} is not a valid parameter to override. "
                    f"Valid parameters are {list(self.values_with_defaults)}."
                )

    def __enter__(self) -> None:
        for prop, override in self.overrides.items():
            info = self.values_with_defaults[prop]
            if info["skip_overriding"]:
                continue
            if override not in info["valid_values"]:
                raise ValueError(f"{prop} must be one of {info['valid_values']}, got {override}.")
            default_value = get_nested_attr(self, info["default_location"])
            info["default_value_to_restore"] = deepcopy(default_value)
            set_nested_attr(
                self,
                info["default_location"],
                override_or_use_default_value(default_value, override),
            )

    def __exit__(self, *exc: object) -> None:
        for prop in self.overrides:
            info = self.values_with_defaults[prop]
            if not info["skip_overriding"]:
                set_nested_attr(self, info["default_location"], info["default_value_to_restore"])

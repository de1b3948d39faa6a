"""Checks on model config values, run before anything is allocated.

A config's numbers come from a spec, a checkpoint's ``config.json``, a GGUF file's metadata or an
argument; any of them can be wrong. :func:`check_config_values` refuses, with
:class:`~tlcore.errors.InvalidConfigError` naming the field, what would otherwise fail later with a
raw ``ZeroDivisionError`` or build something absurd: non-positive sizes, zero heads, sizes that do
not divide, ``eps <= 0``, values of the wrong type (``eps: "small"``) and sizes beyond any real
model (a million layers). :func:`check_trait_values` does the same for a resolved trait's
parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from typing import Any

from tlcore.errors import InvalidConfigError, SpecError

MAX_SIZES: dict[str, int] = {
    "n_layers": 4096,
    "d_model": 1 << 20,
    "d_head": 1 << 16,
    "n_heads": 1 << 14,
    "n_key_value_heads": 1 << 14,
    "d_vocab": 1 << 24,
    "d_vocab_out": 1 << 24,
    "d_mlp": 1 << 22,
    "n_ctx": 1 << 27,
    "rotary_dim": 1 << 16,
    "num_experts": 1 << 16,
    "experts_per_token": 1 << 16,
    "window_size": 1 << 27,
}
"""Largest accepted value of each size (far beyond any released model: 4096 layers, a 16M-token
vocabulary, a 128M-token context)."""

MAX_PARAMETERS = 10**13
"""Largest parameter count a config may describe (ten trillion)."""

_REQUIRED_SIZES = ("d_model", "n_layers", "n_ctx", "d_head", "n_heads", "d_vocab")
_OPTIONAL_SIZES = (
    "d_mlp",
    "n_key_value_heads",
    "rotary_dim",
    "num_experts",
    "experts_per_token",
    "window_size",
)
_POSITIVE_FLOATS = ("eps", "rotary_base")
_NOT_SETTABLE = frozenset({"traits", "hf_config", "extra"})
_TRAIT_SIZES = frozenset(
    {"dim", "top_k", "n_experts", "d_expert", "shared_expert_size", "sparse_step", "sliding_window"}
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(field: str, value: Any, rule: str, where: str) -> InvalidConfigError:
    prefix = f"{where}: " if where else ""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InvalidConfigError(f"{prefix}config field {field} = {shown}: {rule}")


def _check_types(cfg: Any, where: str) -> None:
    """Check each plain field against its annotation (``bool``, ``int``, ``float``, ``str``)."""
    hints = typing.get_type_hints(type(cfg), include_extras=False)
    for f in dataclasses.fields(cfg):
        if f.name in _NOT_SETTABLE or f.name == "device":  # device: a str or a torch.device
            continue
        allowed = _plain_types(hints.get(f.name))
        if allowed is None:
            continue
        value = getattr(cfg, f.name)
        if value is None and type(None) in allowed:
            continue
        ok = False
        for kind in allowed:
            if kind is bool:
                ok |= isinstance(value, bool)
            elif kind is int:
                ok |= _is_int(value)
            elif kind is float:
                ok |= _is_number(value)
            elif kind is str:
                ok |= isinstance(value, str)
            elif kind is list:
                ok |= isinstance(value, list)
        if not ok:
            names = " or ".join(k.__name__ if k is not type(None) else "None" for k in allowed)
            raise _fail(f.name, value, f"must be {names}, got {type(value).__name__}", where)


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The simple types a field annotation allows, or None for anything richer (dtypes, traits)."""
    simple = (bool, int, float, str, list, type(None))
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
        return args if all(a in simple for a in args) else None
    if origin is list:
        return (list,)
    if hint in simple:
        return (hint,)
    return None


def check_config_values(cfg: Any, where: str = "") -> None:
    """Refuse invalid values in a :class:`~tlcore.config.HookedTransformerConfig`.

    Args:
        cfg: The config (possibly before ``__post_init__`` fills its defaults).
        where: Where the values came from, for the message (a spec file, a checkpoint).

    Raises:
        InvalidConfigError: Naming the first invalid field, its value and the rule.

    Example:
        >>> check_size("n_heads", 0)
        Traceback (most recent call last):
        ...
        tlcore.errors.InvalidConfigError: config field n_heads = 0: must be a positive integer
    """
    _check_types(cfg, where)
    for name in _REQUIRED_SIZES:
        check_size(name, getattr(cfg, name), where)
    for name in _OPTIONAL_SIZES:
        value = getattr(cfg, name, None)
        if value is not None:
            check_size(name, value, where)
    if cfg.d_vocab_out != -1:
        check_size("d_vocab_out", cfg.d_vocab_out, where)
    for name in _POSITIVE_FLOATS:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise _fail(name, value, "must be a finite number above 0", where)
    for name in ("attn_scale", "attn_scores_soft_cap", "output_logits_soft_cap"):
        if not math.isfinite(getattr(cfg, name)):
            raise _fail(name, getattr(cfg, name), "must be finite", where)
    kv = cfg.n_key_value_heads
    if kv is not None and cfg.n_heads % kv:
        raise _fail(
            "n_heads",
            cfg.n_heads,
            f"must be a multiple of n_key_value_heads ({kv}) for grouped-query attention",
            where,
        )
    if cfg.rotary_dim is not None and cfg.rotary_dim > cfg.d_head:
        raise _fail("rotary_dim", cfg.rotary_dim, f"must be at most d_head ({cfg.d_head})", where)
    if cfg.experts_per_token is not None and cfg.num_experts is not None:
        if cfg.experts_per_token > cfg.num_experts:
            raise _fail(
                "experts_per_token",
                cfg.experts_per_token,
                f"must be at most num_experts ({cfg.num_experts})",
                where,
            )
    if cfg.default_padding_side not in ("left", "right"):
        raise _fail("default_padding_side", cfg.default_padding_side, "'left' or 'right'", where)
    attn = cfg.n_heads * cfg.d_head * cfg.d_model
    mlp = 3 * cfg.d_model * (cfg.d_mlp or 0) * (cfg.num_experts or 1)
    total = cfg.n_layers * (4 * attn + mlp) + 2 * cfg.d_vocab * cfg.d_model
    if total > MAX_PARAMETERS:
        raise InvalidConfigError(
            f"{where + ': ' if where else ''}the config describes about {total:.3g} parameters "
            f"(n_layers={cfg.n_layers}, d_model={cfg.d_model}, d_mlp={cfg.d_mlp}, "
            f"d_vocab={cfg.d_vocab}), more than {MAX_PARAMETERS:.0e}: check its sizes"
        )


def check_size(name: str, value: Any, where: str = "") -> int:
    """Check one size field: a positive integer no larger than :data:`MAX_SIZES`.

    Args:
        name: The field.
        value: Its value.
        where: Origin for the message.

    Returns:
        The value.

    Raises:
        InvalidConfigError: If it is not.
    """
    if not _is_int(value) or value <= 0:
        raise _fail(name, value, "must be a positive integer", where)
    limit = MAX_SIZES.get(name)
    if limit is not None and value > limit:
        raise _fail(name, value, f"larger than any real model (limit {limit})", where)
    return int(value)


def check_trait_values(trait: Any, where: str) -> None:
    """Refuse trait parameters that would divide by zero or normalise by nothing.

    Checks by parameter name, for built-in and plugin traits alike: ``eps`` (and ``*_eps``) must
    be above 0; ``scale`` must be a finite non-zero number; ``dim``/``sliding_window``/``top_k``/
    ``n_experts``-like sizes must be positive.

    Args:
        trait: A validated trait model.
        where: The spec field, for messages.

    Raises:
        InvalidConfigError: Naming the field.
    """
    for name in type(trait).model_fields:
        value = getattr(trait, name)
        if isinstance(value, list):
            values = value
        else:
            values = [value]
        for item in values:
            if not _is_number(item):
                continue
            if name in _TRAIT_SIZES and _is_int(item) and not 0 < item <= 1 << 27:
                raise InvalidConfigError(f"{where}.{name} = {item!r}: must be a positive size")
            if (name == "eps" or name.endswith("_eps")) and not (math.isfinite(item) and item > 0):
                raise InvalidConfigError(f"{where}.{name} = {item!r}: must be a number above 0")
            if name == "scale" and not (math.isfinite(item) and item != 0):
                raise InvalidConfigError(f"{where}.{name} = {item!r}: must be finite, not 0")
            if not math.isfinite(item) and name not in ("softcap",):
                raise InvalidConfigError(f"{where}.{name} = {item!r}: must be finite")


_HF_SIZE_LIMITS: dict[str, int] = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model"), MAX_SIZES["d_model"]),
    **dict.fromkeys(
        ("num_attention_heads", "n_head", "num_heads", "n_heads", "num_key_value_heads"),
        MAX_SIZES["n_heads"],
    ),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers"), MAX_SIZES["n_layers"]),
    **dict.fromkeys(
        ("intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size"), MAX_SIZES["d_mlp"]
    ),
    "vocab_size": MAX_SIZES["d_vocab"],
    **dict.fromkeys(("max_position_embeddings", "n_positions"), MAX_SIZES["n_ctx"]),
    "head_dim": MAX_SIZES["d_head"],
    **dict.fromkeys(
        ("num_local_experts", "num_experts", "num_experts_per_tok"), MAX_SIZES["num_experts"]
    ),
}
"""HF ``config.json`` size fields (across architectures' naming) and their limits."""

_HF_EPS = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "norm_eps", "norm_epsilon")


def check_hf_config_values(hf_config: dict[str, Any], where: str) -> None:
    """Refuse an HF config (``config.json`` or GGUF metadata) whose sizes make no sense.

    Runs before transformers builds its config object (whose ``__init__`` divides by head counts)
    and before any spec reads it: a zero, negative, fractional, boolean or absurd size, or an
    epsilon that is not above 0, is an :class:`~tlcore.errors.InvalidConfigError` naming the file
    and the field. Fields that are absent or null are left to the architecture's defaults.

    Args:
        hf_config: The config as a dict.
        where: Its file, for messages.

    Raises:
        InvalidConfigError: Naming the field.

    Example:
        >>> check_hf_config_values({"n_head": 0}, "c.json")
        Traceback (most recent call last):
        ...
        tlcore.errors.InvalidConfigError: c.json: n_head = 0: must be a positive integer
    """
    classes = hf_config.get("architectures")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise InvalidConfigError(
            f"{where}: architectures = {classes!r}: must be a list of class names"
        )
    for name, limit in _HF_SIZE_LIMITS.items():
        value = hf_config.get(name)
        if value is None:
            continue
        if not _is_int(value) or value <= 0:
            raise InvalidConfigError(f"{where}: {name} = {value!r}: must be a positive integer")
        if value > limit:
            raise InvalidConfigError(
                f"{where}: {name} = {value}: larger than any real model (limit {limit})"
            )
    for name in _HF_EPS:
        value = hf_config.get(name)
        if value is None:
            continue
        if not _is_number(value) or not (math.isfinite(value) and value > 0):
            raise InvalidConfigError(f"{where}: {name} = {value!r}: must be a number above 0")


@contextlib.contextmanager
def spec_errors_named(cfg: Any) -> Iterator[None]:
    """Prefix a spec or config error raised inside the block with the spec's file.

    Components check their trait's parameters when they are built; their errors know the trait
    (``mlp/plain: no activation``) but not which spec file set it.

    Args:
        cfg: The config being built (``spec_file``/``spec_name`` say where it came from).

    Yields:
        Nothing.

    Raises:
        SpecError: Or :class:`~tlcore.errors.InvalidConfigError`, the same type, with the prefix.
    """
    try:
        yield
    except (SpecError, InvalidConfigError) as exc:
        where = getattr(cfg, "spec_file", None) or getattr(cfg, "spec_name", None)
        if where is None or str(where) in str(exc):
            raise
        raise type(exc)(f"{where}: {exc}") from exc

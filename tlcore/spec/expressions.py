"""Config-value expressions: how a spec derives a value from an HF config, without ``eval``.

A value in a spec's ``config:`` block or in a trait parameter is either a literal (number, string,
bool, null, list) or a one-operator mapping:

- ``{hf: name}``: the HF config field ``name`` (``{hf: [a, b]}``: the first one present and not
  null); ``default:`` beside it gives the fallback.
- ``{cfg: name}``: a canonical field resolved earlier in the same ``config:`` block.
- ``{add|sub|mul|div|pow: [x, y]}``: arithmetic; ``div`` of two ints is exact integer division.
- ``{min|max: [x, y, ...]}``: smallest / largest.
- ``{eq: [x, y]}``, ``{not: x}``: comparison and negation.
- ``{if: c, then: x, else: y}``: conditional.
- ``{map_eq: [list, value]}``: per-element equality (HF ``layer_types`` == ``"sliding_attention"``).
- ``{index: [list, i]}``: a list element; ``{get: [mapping, key, default]}``: a mapping entry.
- ``{int: x}``, ``{float: x}``: conversion (``int`` floors, as HF's ``int(d * factor)``).
- ``{len: x}``: the length of a list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tlcore.errors import SpecError

_MISSING = object()

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "pow": lambda a, b: a**b,
    "eq": lambda a, b: a == b,
}
OPERATORS = frozenset(
    {"hf", "cfg", "div", "min", "max", "not", "if", "map_eq", "index", "get", "len", "int", "float"}
    | set(_BINARY)
)


def is_expression(value: Any) -> bool:
    """Tell whether ``value`` is an expression mapping rather than a literal.

    Args:
        value: Any YAML value.

    Returns:
        True when ``value`` is a mapping whose keys name one operator.

    Example:
        >>> is_expression({"hf": "n_embd"}), is_expression(64), is_expression({"size": 3})
        (True, False, False)
    """
    return isinstance(value, Mapping) and bool(set(value) & OPERATORS)


def check_expression(value: Any, where: str) -> None:
    """Validate the syntax of a value (recursively), without evaluating it.

    Args:
        value: A literal, an expression, or a container holding them.
        where: Location used in the error message (``file: field``).

    Raises:
        SpecError: If an expression mapping is malformed.
    """
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_expression(item, f"{where}[{i}]")
        return
    if not is_expression(value):
        if isinstance(value, Mapping):
            for key, item in value.items():
                check_expression(item, f"{where}.{key}")
        return
    ops = set(value) & OPERATORS
    allowed_extra = {"hf": {"default"}, "if": {"then", "else"}}
    if len(ops) != 1 and ops != {"if"}:
        raise SpecError(f"{where}: an expression takes one operator, got {sorted(ops)}")
    (op,) = ops
    extra = set(value) - {op} - allowed_extra.get(op, set())
    if extra:
        raise SpecError(f"{where}: unexpected keys {sorted(extra)} beside '{op}'")
    arg = value[op]
    if op == "hf":
        names = arg if isinstance(arg, list) else [arg]
        if not names or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{where}: 'hf' takes a field name or a list of names")
        check_expression(value.get("default"), f"{where}.default")
    elif op == "cfg":
        if not isinstance(arg, str):
            raise SpecError(f"{where}: 'cfg' takes a canonical field name")
    elif op in ("not", "len", "int", "float"):
        check_expression(arg, f"{where}.{op}")
    elif op == "if":
        if "then" not in value or "else" not in value:
            raise SpecError(f"{where}: 'if' needs 'then' and 'else'")
        for key in ("if", "then", "else"):
            check_expression(value[key], f"{where}.{key}")
    else:
        if not isinstance(arg, list) or (op not in ("min", "max", "get") and len(arg) != 2):
            raise SpecError(f"{where}: '{op}' takes a list of two operands")
        if op == "get" and len(arg) not in (2, 3):
            raise SpecError(f"{where}: 'get' takes [mapping, key] or [mapping, key, default]")
        check_expression(arg, f"{where}.{op}")


def evaluate(
    value: Any, hf: Mapping[str, Any], cfg: Mapping[str, Any] | None = None, where: str = "value"
) -> Any:
    """Evaluate a value against an HF config.

    Args:
        value: A literal, an expression, or a list/mapping holding them (evaluated recursively).
        hf: The HF config as a mapping (``PretrainedConfig.to_dict()``).
        cfg: Canonical fields resolved so far, for ``{cfg: name}``.
        where: Location used in error messages.

    Returns:
        The evaluated value.

    Raises:
        SpecError: If a referenced field is missing and no default is given.

    Example:
        >>> hf = {"n_embd": 64, "n_head": 4, "n_inner": None}
        >>> evaluate({"div": [{"hf": "n_embd"}, {"hf": "n_head"}]}, hf)
        16
        >>> evaluate({"hf": "n_inner", "default": {"mul": [4, {"hf": "n_embd"}]}}, hf)
        256
    """
    cfg = cfg or {}
    if isinstance(value, list):
        return [evaluate(v, hf, cfg, f"{where}[{i}]") for i, v in enumerate(value)]
    if not is_expression(value):
        if isinstance(value, Mapping):
            return {k: evaluate(v, hf, cfg, f"{where}.{k}") for k, v in value.items()}
        return value

    def ev(x: Any, sub: str = "") -> Any:
        return evaluate(x, hf, cfg, f"{where}{sub}")

    if "if" in value:
        return ev(value["then"], ".then") if ev(value["if"], ".if") else ev(value["else"], ".else")
    (op,) = set(value) & OPERATORS
    arg = value[op]
    if op == "hf":
        for name in arg if isinstance(arg, list) else [arg]:
            found = hf.get(name, _MISSING)
            if found is not _MISSING and found is not None:
                return found
        if "default" in value:
            return ev(value["default"], ".default")
        raise SpecError(f"{where}: HF config has no field {arg!r} and the spec gives no default")
    if op == "cfg":
        if arg not in cfg:
            raise SpecError(f"{where}: canonical field {arg!r} is not resolved yet")
        return cfg[arg]
    if op == "not":
        return not ev(arg)
    if op == "len":
        return len(ev(arg))
    if op == "int":
        return int(ev(arg))
    if op == "float":
        return float(ev(arg))
    operands = [ev(a, f".{op}[{i}]") for i, a in enumerate(arg)]
    if op == "div":
        a, b = operands
        if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
            if a % b:
                raise SpecError(f"{where}: {a} is not divisible by {b}")
            return a // b
        return a / b
    if op == "min":
        return min(operands)
    if op == "max":
        return max(operands)
    if op == "map_eq":
        items, target = operands
        return [item == target for item in items]
    if op == "index":
        items, i = operands
        return items[i]
    if op == "get":
        mapping, key, *default = operands
        if isinstance(mapping, Mapping) and mapping.get(key) is not None:
            return mapping[key]
        if default:
            return default[0]
        raise SpecError(f"{where}: no entry {key!r} and no default")
    return _BINARY[op](*operands)

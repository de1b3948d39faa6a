"""Config-value expressions: how a spec derives a value from an HF config, without ``eval``.

A value in a spec's ``config:`` block or in a trait parameter is either a literal (number, string,
bool, null, list) or a one-operator mapping:

- ``{hf: name}``: the HF config field ``name`` (``{hf: [a, b]}``: the first one present and not
  null); ``default:`` beside it gives the fallback.
- ``{cfg: name}``: a canonical field resolved earlier in the same ``config:`` block.
- ``{add|sub|mul|div|pow: [x, y]}``: arithmetic on numbers; ``div`` of two ints is exact integer
  division (a remainder or a zero divisor is an :class:`~tlcore.errors.InvalidConfigError`).
- ``{min|max: [x, y, ...]}``: smallest / largest.
- ``{eq: [x, y]}``, ``{not: x}``: comparison and negation.
- ``{if: c, then: x, else: y}``: conditional.
- ``{map_eq: [list, value]}``: per-element equality (HF ``layer_types`` == ``"sliding_attention"``).
- ``{index: [list, i]}``: a list element; ``{get: [mapping, key, default]}``: a mapping entry.
- ``{int: x}``, ``{float: x}``: conversion (``int`` floors, as HF's ``int(d * factor)``).
- ``{len: x}``: the length of a list.

Evaluation is bounded (:data:`MAX_STEPS` operators per call, results within :data:`MAX_INT_BITS`
bits or :data:`MAX_FLOAT`), and every failure is a :class:`~tlcore.errors.SpecError` naming the
spec file and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tlcore.errors import InvalidConfigError, SpecError

_MISSING = object()

OPERATORS = frozenset(
    {"hf", "cfg", "add", "sub", "mul", "div", "pow", "eq"}
    | {"min", "max", "not", "if", "map_eq", "index", "get", "len", "int", "float"}
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


MAX_STEPS = 10_000
"""Most operators one :func:`evaluate` call may apply (a spec's deepest expression needs ~10)."""
MAX_INT_BITS = 64
"""Largest integer an expression may produce, in bits (sizes, counts and ids fit easily)."""
MAX_FLOAT = 1e300
"""Largest float magnitude an expression may produce."""
MAX_LENGTH = 1 << 20
"""Longest list or string an expression may produce or take the length of."""


def evaluate(
    value: Any, hf: Mapping[str, Any], cfg: Mapping[str, Any] | None = None, where: str = "value"
) -> Any:
    """Evaluate a value against an HF config, in bounded time and memory.

    Arithmetic takes numbers only (no string or list repetition); every result must stay within
    :data:`MAX_INT_BITS` bits or :data:`MAX_FLOAT` and be finite, and one call applies at most
    :data:`MAX_STEPS` operators, so ``{pow: [10, 1e8]}`` or ``{mul: ["abc", 1000000000]}`` fail at
    once instead of running for minutes.

    Args:
        value: A literal, an expression, or a list/mapping holding them (evaluated recursively).
        hf: The HF config as a mapping (``PretrainedConfig.to_dict()``).
        cfg: Canonical fields resolved so far, for ``{cfg: name}``.
        where: Location used in error messages.

    Returns:
        The evaluated value.

    Raises:
        SpecError: If a referenced field is missing and no default is given, or an operator gets
            operands it cannot use, or a bound is exceeded.
        InvalidConfigError: If a value from the config makes the expression meaningless
            (a division by zero, a size that does not divide).

    Example:
        >>> hf = {"n_embd": 64, "n_head": 4, "n_inner": None}
        >>> evaluate({"div": [{"hf": "n_embd"}, {"hf": "n_head"}]}, hf)
        16
        >>> evaluate({"hf": "n_inner", "default": {"mul": [4, {"hf": "n_embd"}]}}, hf)
        256
        >>> evaluate({"pow": [10, 10**8]}, {}, where="f.yaml: d_model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tlcore.errors.SpecError: f.yaml: d_model: 'pow' result exceeds 64 bits ...
    """
    return _Evaluator(hf, cfg or {}).run(value, where)


class _Evaluator:
    """One bounded evaluation: counts operators against :data:`MAX_STEPS`."""

    def __init__(self, hf: Mapping[str, Any], cfg: Mapping[str, Any]) -> None:
        self.hf = hf
        self.cfg = cfg
        self.steps = 0

    def run(self, value: Any, where: str) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SpecError(f"{where}: more than {MAX_STEPS} expression steps; simplify it")
        if isinstance(value, list):
            return [self.run(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not is_expression(value):
            if isinstance(value, Mapping):
                return {k: self.run(v, f"{where}.{k}") for k, v in value.items()}
            return value
        if "if" in value:
            test = self.run(value.get("if"), f"{where}.if")
            branch = "then" if test else "else"
            if branch not in value:
                raise SpecError(f"{where}: 'if' needs 'then' and 'else'")
            return self.run(value[branch], f"{where}.{branch}")
        ops = set(value) & OPERATORS
        if len(ops) != 1:
            raise SpecError(f"{where}: an expression takes one operator, got {sorted(ops)}")
        (op,) = ops
        try:
            return self._apply(op, value, where)
        except (SpecError, InvalidConfigError):
            raise
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, AttributeError) as exc:
            raise SpecError(
                f"{where}: '{op}' cannot be applied to {_show(value[op])}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _apply(self, op: str, value: Mapping[str, Any], where: str) -> Any:
        arg = value[op]
        if op == "hf":
            names = arg if isinstance(arg, list) else [arg]
            for name in names:
                if not isinstance(name, str):
                    raise SpecError(f"{where}: 'hf' takes a field name or a list of names")
                found = self.hf.get(name, _MISSING)
                if found is not _MISSING and found is not None:
                    return found
            if "default" in value:
                return self.run(value["default"], f"{where}.default")
            raise SpecError(
                f"{where}: HF config has no field {arg!r} and the spec gives no default"
            )
        if op == "cfg":
            if not isinstance(arg, str) or arg not in self.cfg:
                raise SpecError(f"{where}: canonical field {arg!r} is not resolved yet")
            return self.cfg[arg]
        if op in ("not", "len", "int", "float"):
            x = self.run(arg, f"{where}.{op}")
            if op == "not":
                return not x
            if op == "len":
                if not isinstance(x, (list, tuple, str, Mapping)):
                    raise SpecError(f"{where}: 'len' takes a list, got {_show(x)}")
                return len(x)
            if isinstance(x, bool) or not isinstance(x, (int, float, str)):
                raise SpecError(f"{where}: '{op}' takes a number, got {_show(x)}")
            if isinstance(x, str) and len(x) > 64:
                raise SpecError(f"{where}: '{op}' takes a number, got a long string")
            result = int(x) if op == "int" else float(x)
            return _bounded(result, op, where, x)
        if not isinstance(arg, list):
            raise SpecError(f"{where}: '{op}' takes a list of operands")
        operands = [self.run(a, f"{where}.{op}[{i}]") for i, a in enumerate(arg)]
        if op in _ARITHMETIC:
            if len(operands) != 2:
                raise SpecError(f"{where}: '{op}' takes a list of two operands")
            a, b = operands
            for x in (a, b):
                if not _is_number(x):
                    raise SpecError(
                        f"{where}: '{op}' takes numbers, got {_show(x)} ({type(x).__name__})"
                    )
            return _arithmetic(op, a, b, where, value[op])
        if op in ("min", "max"):
            if not operands:
                raise SpecError(f"{where}: '{op}' needs at least one operand")
            return min(operands) if op == "min" else max(operands)
        if op == "eq":
            a, b = _two(operands, op, where)
            return a == b
        if op == "map_eq":
            items, target = _two(operands, op, where)
            if not isinstance(items, (list, tuple)) or len(items) > MAX_LENGTH:
                raise SpecError(f"{where}: 'map_eq' takes [list, value], got {_show(items)}")
            return [item == target for item in items]
        if op == "index":
            items, i = _two(operands, op, where)
            if not isinstance(items, (list, tuple)) or not _is_int(i):
                raise SpecError(f"{where}: 'index' takes [list, integer], got {_show(operands)}")
            if not -len(items) <= i < len(items):
                raise SpecError(f"{where}: index {i} is out of range for a list of {len(items)}")
            return items[i]
        if op == "get":
            if len(operands) not in (2, 3):
                raise SpecError(f"{where}: 'get' takes [mapping, key] or [mapping, key, default]")
            mapping, key, *default = operands
            if isinstance(mapping, Mapping) and mapping.get(key) is not None:
                return mapping[key]
            if default:
                return default[0]
            raise SpecError(f"{where}: no entry {key!r} and no default")
        raise SpecError(f"{where}: unknown operator '{op}'")  # unreachable: OPERATORS is closed


_ARITHMETIC = frozenset({"add", "sub", "mul", "div", "pow"})


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _two(operands: list[Any], op: str, where: str) -> tuple[Any, Any]:
    if len(operands) != 2:
        raise SpecError(f"{where}: '{op}' takes a list of two operands")
    return operands[0], operands[1]


def _show(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _arithmetic(op: str, a: float, b: float, where: str, raw: Any) -> Any:
    if op == "div":
        if b == 0:
            raise InvalidConfigError(
                f"{where}: division by zero in {_show(raw)} (values {a!r} / {b!r}): a config "
                f"field that should be positive is 0"
            )
        if _is_int(a) and _is_int(b):
            if a % b:
                raise InvalidConfigError(
                    f"{where}: {a} is not divisible by {b} (in {_show(raw)}); check the config's "
                    f"sizes"
                )
            return a // b
        return _bounded(a / b, op, where, raw)
    if op == "pow":
        if a == 0 and b < 0:
            raise InvalidConfigError(f"{where}: 0 to a negative power in {_show(raw)}")
        exact = _is_int(a) and _is_int(b) and b >= 0
        bits = MAX_INT_BITS if exact else math.log2(MAX_FLOAT)
        if abs(a) > 1 and b > 0 and b * math.log2(abs(a)) > bits:
            what = f"exceeds {MAX_INT_BITS} bits" if exact else "is not a finite number"
            raise SpecError(f"{where}: 'pow' result {what} ({a!r} ** {b!r})")
        if a < 0 and not float(b).is_integer():
            raise SpecError(f"{where}: 'pow' of a negative number to a fractional power")
        if exact:
            return _bounded(a**b, op, where, raw)
        return _bounded(float(a) ** float(b), op, where, raw)
    result = a + b if op == "add" else a - b if op == "sub" else a * b
    return _bounded(result, op, where, raw)


def _bounded(result: Any, op: str, where: str, raw: Any) -> Any:
    if _is_int(result):
        if result.bit_length() > MAX_INT_BITS:
            raise SpecError(f"{where}: '{op}' result exceeds {MAX_INT_BITS} bits (in {_show(raw)})")
        return result
    if isinstance(result, float) and not (math.isfinite(result) and abs(result) <= MAX_FLOAT):
        raise SpecError(
            f"{where}: '{op}' result {result!r} is not a finite number (in {_show(raw)})"
        )
    return result

"""Bounded reading of spec documents: YAML that cannot hang or exhaust memory, and duplicate keys.

A spec file is data from outside (a plugin, a download, a hand edit), so reading it is bounded
before anything walks it:

- the file is at most :data:`MAX_SPEC_BYTES`;
- YAML is read with ``SafeLoader`` (no Python objects), with duplicate mapping keys refused (YAML
  1.2 forbids them; PyYAML keeps the last one silently);
- nesting is at most :data:`MAX_DEPTH` levels and aliases (``*name``) are at most
  :data:`MAX_ALIASES`; a document whose aliases expand to more than :data:`MAX_NODES` values (a
  "billion laughs" bomb) or refer to themselves is refused, all before the document is expanded.

:func:`check_document_bounds` applies the same depth, size and cycle limits to a spec given as a
Python mapping (``register.spec({...})``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tlcore.errors import SpecError

MAX_SPEC_BYTES = 1 << 20
"""Largest spec file read (1 MiB; the largest built-in spec is under 6 kB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists in a spec."""
MAX_ALIASES = 256
"""Most YAML aliases (``*name``) in one file."""
MAX_NODES = 200_000
"""Most values in a spec once its aliases are expanded."""


class _BoundedComposer(Composer):
    """PyYAML's composer with a depth limit and an alias count."""

    def compose_document(self) -> Node | None:  # type: ignore[override]
        self._depth = 0
        self._aliases = 0
        return super().compose_document()  # type: ignore[no-any-return]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _BoundError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _BoundError(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


class _StrictConstructor(SafeConstructor):
    """``SafeConstructor`` that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            # The mapping's own keys, before ``<<`` merges (which its own keys may override).
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    break
                if duplicate:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


class _BoundError(yaml.YAMLError):
    """A limit was exceeded while reading YAML."""


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _BoundedComposer,
              _StrictConstructor, yaml.resolver.Resolver):  # fmt: skip
    """``SafeLoader`` with the bounds above (pure Python)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _BoundedComposer.__init__(self)
        _StrictConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


_FastLoader: Any = None
if getattr(yaml, "__with_libyaml__", False):  # pragma: no branch - libyaml ships in PyYAML wheels
    from yaml.cyaml import CParser

    class _CLoader(_BoundedComposer, CParser, _StrictConstructor,  # type: ignore[misc]
                   yaml.resolver.Resolver):  # fmt: skip
        """The same loader over libyaml's scanner and parser (five times faster).

        Only the event stream comes from C: the bounded composer (depth, aliases) and the strict
        constructor above stay in Python and come first in the MRO, so the bounds are the same.
        """

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _StrictConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _FastLoader = _CLoader


def _expanded_size(node: Node, where: str) -> None:
    """Count the values a node graph expands to, stopping at the budget; refuse cycles."""
    budget = [MAX_NODES]
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(current: Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise SpecError(f"{where}: a YAML alias refers to its own anchor (a recursive value)")
        active.add(key)
        total = 1
        if isinstance(current, SequenceNode):
            for child in current.value:
                total += size(child)
        elif isinstance(current, MappingNode):
            for key_node, value_node in current.value:
                total += size(key_node) + size(value_node)
        active.discard(key)
        sizes[key] = total
        if total > budget[0]:
            raise SpecError(
                f"{where}: the YAML expands to more than {MAX_NODES} values through its aliases "
                f"(an alias bomb?); write the values out or use fewer aliases"
            )
        return total

    if not isinstance(node, ScalarNode):
        size(node)


def load_yaml(text: str, where: str) -> Any:
    r"""Parse one YAML document with the bounds of this module.

    Args:
        text: The YAML text.
        where: The file (or other origin) for error messages.

    Returns:
        The document (plain dicts, lists and scalars).

    Raises:
        SpecError: Naming ``where`` and the reason (invalid YAML, a duplicate key, too deep, too
            many aliases, an alias bomb, a recursive alias).

    Example:
        >>> load_yaml("a: 1\nb: [1, 2]", "x.yaml")
        {'a': 1, 'b': [1, 2]}
        >>> load_yaml("a: 1\na: 2", "x.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tlcore.errors.SpecError: x.yaml: not valid YAML: ...duplicate key 'a' (first at line 1) ...
    """
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: larger than {MAX_SPEC_BYTES} bytes; not a spec file")
    loader = None
    try:
        # Both readers refuse control characters; the built-in specs are read on every start.
        loader = (_FastLoader or _Loader)(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise SpecError(f"{where}: not valid YAML: {reason}") from exc
    except (ValueError, OverflowError, RecursionError, TypeError) as exc:
        # PyYAML's scalar constructors: a 5000-digit int, a malformed timestamp, ...
        raise SpecError(f"{where}: not valid YAML: {type(exc).__name__}: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | Path | Any, where: str | None = None) -> Any:
    """Read a YAML file (a path or an ``importlib.resources`` Traversable) with the bounds above.

    Args:
        path: The file.
        where: Its name in error messages (default: ``str(path)``).

    Returns:
        The document.

    Raises:
        SpecError: If it cannot be read, is too large or is not bounded YAML.
    """
    where = where or str(path)
    try:
        if isinstance(path, (str, Path)):
            size = Path(path).stat().st_size
            if size > MAX_SPEC_BYTES:
                raise SpecError(f"{where}: {size} bytes, more than {MAX_SPEC_BYTES}; not a spec")
        data = path.read_bytes() if hasattr(path, "read_bytes") else Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"{where}: cannot read spec file: {exc}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: more than {MAX_SPEC_BYTES} bytes; not a spec file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{where}: not UTF-8 text: {exc}") from exc
    return load_yaml(text, where)


def check_document_bounds(doc: Any, where: str) -> None:
    """Refuse a spec document (a mapping built in Python) that is too deep, too large or cyclic.

    YAML files are already bounded by :func:`load_yaml`; this guards specs handed over as Python
    objects, before anything recurses into them.

    Args:
        doc: The document.
        where: Its origin for error messages.

    Raises:
        SpecError: Naming ``where`` and the limit.
    """
    budget = [MAX_NODES]
    active: set[int] = set()

    def walk(value: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError(f"{where}: more than {MAX_NODES} values; not a spec")
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in active:
                raise SpecError(f"{where}: the document contains itself (a cycle)")
            active.add(id(value))
            items = value.values() if isinstance(value, Mapping) else value
            for item in items:
                walk(item, depth + 1)
            active.discard(id(value))

    walk(doc, 0)

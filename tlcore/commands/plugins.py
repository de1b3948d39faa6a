"""``tlcore plugins``: installed plugins, their versions, hooks, registrations and failures."""

from __future__ import annotations

import argparse
import json
from typing import Any


def plugin_rows(include_builtin: bool = False, hook: str | None = None) -> list[dict[str, Any]]:
    """Describe the plugins the manager knows (loaded, failed, blocked and skipped ones).

    Args:
        include_builtin: Also list the plugins that ship with tlcore.
        hook: Only plugins implementing this hook.

    Returns:
        One dict per plugin (see :meth:`tlcore.plugins.PluginRecord.as_dict`), failures included.

    Example:
        >>> rows = plugin_rows(include_builtin=True)
        >>> builtin = next(r for r in rows if r["name"] == "tlcore.builtin.plugin")
        >>> builtin["distribution"], "register_specs" in builtin["hooks"]
        ('tlcore', True)
    """
    from tlcore.plugins.manager import get_manager

    rows = [record.as_dict() for record in get_manager().records.values()]
    if not include_builtin:
        rows = [r for r in rows if not r["builtin"]]
    if hook is not None:
        rows = [r for r in rows if hook in r["hooks"]]
    return rows


def _format(row: dict[str, Any]) -> str:
    version = f" {row['version']}" if row["version"] else ""
    dist = f"{row['distribution']}{version}" if row["distribution"] else "(no distribution)"
    lines = [f"{row['name']}  {dist}  [{row['status']}]"]
    if row["module"]:
        lines.append(f"  module: {row['module']}")
    if row["hooks"]:
        lines.append(f"  hooks: {', '.join(row['hooks'])}")
    for kind, names in row["registered"].items():
        if kind == "replaces_builtin":  # the user allowed it (TLCORE_REPLACE_BUILTINS): visible
            lines.append(f"  REPLACES BUILT-IN: {', '.join(names)}")
        else:
            lines.append(f"  {kind}: {', '.join(names)}")
    lines += [f"  error: {error}" for error in row["errors"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the plugin list.

    Args:
        args: Parsed arguments (``json``, ``all``, ``hook``).

    Returns:
        0.
    """
    rows = plugin_rows(include_builtin=args.all, hook=args.hook)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed (entry-point group 'tlcore'); --all shows the built-in ones")
        return 0
    print("\n\n".join(_format(row) for row in rows))
    failed = sum(1 for r in rows if r["errors"])
    print(f"\n{len(rows)} plugins" + (f", {failed} with errors" if failed else ""))
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``tlcore plugins``.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    parser = subparsers.add_parser(
        "plugins", help="list installed plugins, what each registered, and failures"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--all", action="store_true", help="include the built-in plugins")
    parser.add_argument("--hook", metavar="NAME", help="only plugins implementing this hook")
    parser.set_defaults(func=run)

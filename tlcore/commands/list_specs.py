"""``tlcore list``: every architecture with its HF model types, traits and source."""

from __future__ import annotations

import argparse
import json
from typing import Any


def architecture_rows() -> list[dict[str, Any]]:
    """Describe every registered architecture.

    Returns:
        One dict per architecture: name, model types, classes, traits (slot → kind), source.

    Example:
        >>> rows = architecture_rows()
        >>> next(r for r in rows if r["name"] == "llama")["traits"]["norm"]
        'rmsnorm'
    """
    from tlcore.registry import get_registry

    registry = get_registry()
    rows = []
    for name in registry.spec_names():
        spec = registry.get_spec(name)
        rows.append(
            {
                "name": name,
                "model_types": spec.hf.model_types,
                "architectures": spec.hf.architectures,
                "match": spec.hf.match,
                "traits": {slot: block.get("kind") for slot, block in spec.traits.items()},
                "extends": spec.extends,
                "source": registry.specs[name].source.plugin,
                "description": spec.description,
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the architecture list.

    Args:
        args: Parsed arguments (``json``).

    Returns:
        0.
    """
    rows = architecture_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        traits = ", ".join(f"{k}={v}" for k, v in r["traits"].items())
        variant = f" where {r['match']}" if r["match"] else ""
        print(
            f"{r['name']:<{width}}  {'/'.join(r['model_types'])}{variant}\n{'':<{width}}  {traits}"
        )
    print(f"\n{len(rows)} architectures")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``tlcore list``.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    parser = subparsers.add_parser(
        "list", help="list architectures, their HF model types and traits"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)

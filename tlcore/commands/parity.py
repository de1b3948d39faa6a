"""``tlcore parity``: the parity tool (same options and library calls as ``tools/parity.py``)."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> int:
    """Run the parity tool.

    Args:
        args: Parsed arguments (see :func:`tlcore.parity.cli.add_arguments`).

    Returns:
        0 when everything passed, 1 on any failure, 2 for a usage error.
    """
    from tlcore.parity.cli import run as run_parity_cli

    return run_parity_cli(args)


def add_command(subparsers: Any) -> None:
    """Register ``tlcore parity``.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    from tlcore.parity.cli import DESCRIPTION, add_arguments

    parser = subparsers.add_parser(
        "parity",
        help="check specs against HuggingFace, check/update snapshots, model table, real weights",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)

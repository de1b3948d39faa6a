"""The ``tlcore`` command line. Thin: every command calls a library function.

Commands come in through the ``register_commands`` plugin hook (built-ins included), so a broken
plugin cannot break ``tlcore --help``: plugin failures are reported as warnings.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered command.

    Returns:
        The parser.
    """
    from tlcore import __version__
    from tlcore.plugins.manager import get_manager

    parser = argparse.ArgumentParser(
        prog="tlcore", description="tlcore: hooked transformers from YAML specs"
    )
    parser.add_argument("--version", action="version", version=f"tlcore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    manager = get_manager()
    for impl in manager.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(subparsers=subparsers)
        except Exception as exc:  # noqa: BLE001 - one plugin's command must not break the CLI
            warnings.warn(
                f"tlcore plugin '{manager.pm.get_name(impl.plugin)}': register_commands "
                f"raised {type(exc).__name__}: {exc}",
                stacklevel=2,
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

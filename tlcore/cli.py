"""The ``tlcore`` command line. Thin: every command calls a library function.

Commands come in through the ``register_commands`` plugin hook (built-ins included), so a broken
plugin cannot break ``tlcore --help``: plugin failures are reported as warnings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any


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
    # Each plugin's register_commands runs isolated: a failing one warns and adds nothing.
    get_manager().add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    from tlcore.errors import PluginError, TlcoreError

    # Before torch loads: OpenMP threads that spin while waiting take cores from everything else
    # on a shared machine, and from each other when it is busy (the demo ran 4x slower on a
    # loaded 2-core machine with spinning threads than with sleeping ones).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with _plugin_warnings_as_messages():
        try:
            parser = build_parser()
        except PluginError as exc:  # strict mode (TLCORE_STRICT_PLUGINS=1): no traceback
            print(error_line(exc), file=sys.stderr)
            return 2
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        try:
            return int(args.func(args) or 0)
        except TlcoreError as exc:  # tlcore's own errors say what to do: no traceback
            print(error_line(exc), file=sys.stderr)
            return 1


def error_line(exc: BaseException) -> str:
    r"""Format one of tlcore's typed errors as one line: ``tlcore: error: Type: message``.

    Args:
        exc: The error.

    Returns:
        The line (the message's own line breaks become spaces).

    Example:
        >>> from tlcore.errors import SpecError
        >>> error_line(SpecError("a.yaml: field 'x':\n  bad"))
        "tlcore: error: SpecError: a.yaml: field 'x': bad"
    """
    return f"tlcore: error: {type(exc).__name__}: {' '.join(str(exc).split())}"


@contextlib.contextmanager
def _plugin_warnings_as_messages() -> Iterator[None]:
    """Print plugin warnings as one ``tlcore: warning: ...`` line, not as a source location."""
    from tlcore.plugins.manager import PluginWarning

    default = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, PluginWarning):
            print(f"tlcore: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = default


if __name__ == "__main__":
    sys.exit(main())

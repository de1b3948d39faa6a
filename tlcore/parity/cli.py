"""The parity tool's command line, shared by ``tools/parity.py`` and ``tlcore parity``.

Modes (combinable in one pass; each case's tiny checkpoint is built once):

* default: compare every spec and test variant with HF;
* ``--check``: that, plus re-verify the stored snapshots (the full CI check; ``--no-hf`` keeps
  only the snapshot check, which never runs HF's forward);
* ``--update``: compare with HF and rewrite the snapshots of the cases that pass;
* ``--dtype bfloat16|float16``: tlcore and HF in a half dtype (:mod:`tlcore.parity.half`), with
  snapshots in ``specs/snapshots/<dtype>``;
* ``--table``: also write ``docs/model_table.jsonl`` and ``docs/model_table.html``;
* ``--model NAME_OR_DIR``: real-weights comparison, printed as a markdown table row (only this,
  unless a spec mode is also given).

The exit status is 1 when anything fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

DESCRIPTION = (
    "Prove every architecture spec against HuggingFace on tiny seeded checkpoints, check or "
    "update the stored snapshot logits, write the model table, or compare real weights."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the parity tool's options to a parser.

    Args:
        parser: The parser (``tools/parity.py``'s or the ``tlcore parity`` sub-parser).
    """
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="also re-verify tlcore against the stored snapshots (the CI check)",
    )
    mode.add_argument(
        "--update",
        action="store_true",
        help="rewrite the snapshots of the cases that pass HF parity",
    )
    parser.add_argument(
        "--spec",
        action="append",
        metavar="NAME",
        default=None,
        help="only this spec (repeatable; default: every registered spec)",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME_OR_DIR",
        default=None,
        help="real-weights mode: a checkpoint folder, .gguf file, alias or hub id (repeatable)",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        default=None,
        help="prompt for --model (repeatable; default: four fixed prompts)",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="write the model table (docs/model_table.jsonl and .html)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--no-hf",
        action="store_true",
        help="with --check: compare with the snapshots only (HF never runs)",
    )
    parser.add_argument("--no-variants", action="store_true", help="skip the test variants")
    parser.add_argument(
        "--no-processed",
        action="store_true",
        help="skip the processed-model (fold_ln, centring) comparison",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes to spread the cases over (default 1)",
    )
    parser.add_argument(
        "--snapshot-dir",
        metavar="DIR",
        default=None,
        help="snapshot folder (default: specs/snapshots)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="run tlcore and HF in this dtype; half dtypes are judged against HF's own "
        "half-precision error and keep their snapshots in specs/snapshots/<dtype>",
    )
    parser.add_argument(
        "--table-dir", metavar="DIR", default=None, help="model table folder (default: docs/)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="keep library warnings and progress bars"
    )


def _quiet() -> None:
    """Silence what tiny random configs make libraries say (progress bars, odd token ids)."""
    logging.getLogger("tlcore").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _g(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.2e}"


def print_report(report: Any, out: TextIO | None = None) -> None:
    """Print a parity report as a text table and a summary line.

    Args:
        report: A :class:`tlcore.parity.runner.Report`.
        out: Stream (default: ``sys.stdout`` at call time).
    """
    out = out or sys.stdout
    rows = []
    for c in report.cases:
        p, s = c.parity, c.snapshot
        status = p.status if report.hf or p.error else "-"
        note = ""
        if p.error or not p.ok:
            note = p.message
        elif s is not None and not s.ok:
            note = s.message
        rows.append(
            [
                c.case.name,
                "ok" if c.ok else "FAIL",
                status,
                _g(p.logits_max_diff) if report.hf else "-",
                _g(p.processed_logprobs_max_diff) if report.hf else "-",
                _g(max(p.layer_max_diffs)) if p.layer_max_diffs else "-",
                s.status if s is not None else "-",
                _g(s.max_diff) if s is not None else "-",
                f"{p.seconds:.2f}",
                note,
            ]
        )
    for s in report.other_snapshots:
        rows.append(
            [s.name, "ok" if s.ok else "FAIL", "-", "-", "-", "-", s.status, "-", "-", s.message]
        )
    head = [
        "case",
        "result",
        "hf",
        "logits",
        "processed",
        "layers",
        "snapshot",
        "snap diff",
        "s",
        "note",
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        cells = [str(v).ljust(w) for v, w in zip(r[:-1], widths)]
        print("  ".join(cells + [str(r[-1])]).rstrip(), file=out)
    n_fail = sum(not c.ok for c in report.cases) + sum(not s.ok for s in report.other_snapshots)
    snap_counts: dict[str, int] = {}
    for s in [c.snapshot for c in report.cases if c.snapshot] + report.other_snapshots:
        snap_counts[s.status] = snap_counts.get(s.status, 0) + 1
    snaps = ", ".join(f"{n} {k}" for k, n in sorted(snap_counts.items()))
    print(
        f"\n{len(report.cases)} cases: {len(report.cases) - sum(not c.ok for c in report.cases)} "
        f"ok, {n_fail} failed" + (f"; snapshots: {snaps}" if snaps else ""),
        file=out,
    )
    for line in report.failures:
        print(f"FAILED {line}", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the parity tool with parsed arguments.

    Args:
        args: Parsed arguments (see :func:`add_arguments`).
        out: Stream for the report (default: ``sys.stdout`` at call time).

    Returns:
        The exit status: 0 when everything passed, 1 otherwise, 2 for a usage error.
    """
    import torch

    from tlcore.parity.runner import verify

    out = out or sys.stdout
    start = time.perf_counter()
    if not args.verbose:
        _quiet()
    if args.no_hf and not args.check:
        print("--no-hf needs --check (it means: compare with the snapshots only)", file=sys.stderr)
        return 2
    payload: dict[str, Any] = {}
    ok = True
    spec_mode = args.check or args.update or args.table or not args.model
    if spec_mode:
        try:
            report = verify(
                args.spec,
                not args.no_variants,
                hf=not args.no_hf,
                processed=not args.no_processed,
                snapshots="check" if args.check else "update" if args.update else None,
                table=args.table,
                workers=args.workers,
                snapshot_dir=args.snapshot_dir,
                dtype=getattr(torch, args.dtype),
            )
        except Exception as exc:  # noqa: BLE001 - an unknown --spec, an unreadable manifest
            print(f"parity: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        ok = ok and report.ok
        payload["specs"] = report.as_dict()
        if not args.json:
            print_report(report, out)
        if args.table:
            from tlcore.parity.table_page import write_model_table

            rows = [c.table_row for c in report.cases if c.table_row is not None]
            paths = write_model_table(rows, args.table_dir)
            payload["table"] = [str(p) for p in paths]
            if not args.json:
                print(f"model table: {paths[0]} and {paths[1]} ({len(rows)} rows)", file=out)
    if args.model:
        ok = _run_models(args, payload, out) and ok
    total = time.perf_counter() - start
    payload["ok"], payload["seconds"] = ok, round(total, 3)
    if args.json:
        print(json.dumps(payload, indent=1), file=out)
    else:
        print(f"total run time: {total:.1f} s", file=out)
    return 0 if ok else 1


def _run_models(args: argparse.Namespace, payload: dict[str, Any], out: TextIO) -> bool:
    from tlcore.parity.pretrained import DEFAULT_PROMPTS, MARKDOWN_HEADER, compare_pretrained

    prompts = tuple(args.prompt) if args.prompt else DEFAULT_PROMPTS
    ok, rows = True, []
    if not args.json:
        print(("\n" if "specs" in payload else "") + MARKDOWN_HEADER, file=out)
    for name in args.model:
        try:
            result = compare_pretrained(name, prompts)
        except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the rest run
            ok = False
            rows.append({"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            if not args.json:
                print(f"| {name} | error: {type(exc).__name__}: {exc} | | | | |", file=out)
            continue
        ok = ok and result.ok
        rows.append(result.as_dict())
        if not args.json:
            flag = "" if result.ok else "  <- FAILS (top-1 < 100% or KL too high)"
            print(result.markdown_row() + flag, file=out)
    payload["models"] = rows
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/parity.py``.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="tools/parity.py", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))

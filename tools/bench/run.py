"""Run every benchmark; ratios to HF for tlcore and TransformerLens (where installed beside it).

Usage: python tools/bench/run.py [--rounds N] [--repeats N] [--models NAME ...] [--threads N]
                                 [--baseline DIR] [--tl39 PYTHON] [--tl43 PYTHON] [--no-ray]

Each implementation runs in its own process (TransformerLens from its own virtualenv), alternating
its calls with HF's in that process; the rounds interleave the implementations, and the report
gives the median over rounds with the spread of the per-pair ratios as the noise figure.
``--baseline DIR`` adds a column for another tlcore source tree (e.g. ``main`` checked out
elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from models import BENCH_MODELS, checkpoint, model_tasks, weight_bytes  # noqa: E402

DEFAULT_TL = {"tl39": "/opt/tl39/bin/python", "tl43": "/opt/tl43/bin/python"}

# (row key, label, kind): "speed" rows are ratios to HF; "load" rows seconds / MB; "half" rows
# compare tlcore and HF in bfloat16; "offload" is the larger-than-memory run (scale.py).
ROWS: list[tuple[str, str, str]] = [
    ("forward", "forward, no hooks", "speed"),
    ("cache_all", "run_with_cache, every hook (MB)", "speed"),
    ("cache_resid", "run_with_cache, resid_post only", "speed"),
    ("generate_b1", "greedy generate 16+32, batch 1", "speed"),
    ("generate_b8_left_padded", "greedy generate 16+32, batch 8 left-padded", "speed"),
    ("generate_sampled_b1", "sampled generate (top-k 50, seeded), batch 1", "speed"),
    ("generate_sampled_b8_left_padded", "sampled generate (top-k 50, seeded), batch 8", "speed"),
    ("generate_steered_b1", "generate + steering hook / without", "speed"),
    ("load_processed", "from_pretrained (processed): load s / peak RSS MB", "load"),
    ("load_raw", "from_pretrained_no_processing: load s / peak RSS MB", "load"),
    ("harvest", "harvest, tokens/s in-process (HF forward tokens/s)", "harvest"),
    ("harvest_ray", "harvest on Ray, 2 workers: tokens/s per worker", "harvest"),
    ("bf16_forward", "bf16 forward / all-hook cache, ratio to HF bf16", "half"),
    ("bf16_parity", "bf16 max |dlogit| vs HF bf16 (HF bf16 vs fp32)", "half"),
    ("offload", "larger than memory: all parts on disk, peak RSS", "offload"),
]
COLUMNS = ("hf", "before", "tlcore", "tl39", "tl43")
TITLES = {
    "hf": "HF",
    "before": "tlcore before",
    "tlcore": "tlcore",
    "tl39": "TL 3.9",
    "tl43": "TL 4.3",
}
LOAD_IMPL = {"hf": "hf", "before": "tlcore", "tlcore": "tlcore", "tl43": "tl43"}


OFFLOAD_MB = 2048  # the larger-than-memory row's checkpoint
TASKS = ("speed", "load", "harvest", "half", "offload")


def launch(
    python: str,
    pythonpath: str | None,
    *args: str,
    timeout: float = 1800,
    script: str = "worker.py",
) -> dict | None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        out = subprocess.run(
            [python, str(HERE / script), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        print(f"  [{python} {' '.join(args)}] failed: {tail[0]}", file=sys.stderr)
        return None
    except subprocess.TimeoutExpired:
        print(f"  [{python} {' '.join(args)}] timed out", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def implementations(args: argparse.Namespace) -> dict[str, tuple[str, str | None]]:
    """Column → (python, PYTHONPATH) for every implementation available here."""
    found: dict[str, tuple[str, str | None]] = {"tlcore": (sys.executable, str(REPO))}
    if args.baseline:
        found["before"] = (sys.executable, str(Path(args.baseline).resolve()))
    for key in ("tl39", "tl43"):
        python = getattr(args, key) or DEFAULT_TL[key]
        if python and Path(python).exists():
            found[key] = (python, None)
    return found


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_ratio(values: list[float], spread: list[float] | None = None) -> str:
    """Median over rounds, and the spread of every HF/implementation pair's ratio."""
    if not values:
        return "n/a"
    mid = statistics.median(values)
    pairs = spread or values
    return f"{mid:.2f} [{min(pairs):.2f}-{max(pairs):.2f}]" if len(pairs) > 1 else f"{mid:.2f}"


def collect(name: str, args: argparse.Namespace, impls: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"weights_mb": weight_bytes(checkpoint(name)) / 2**20, "rounds": []}
    threads = str(args.threads)
    tasks = model_tasks(name, args.tasks)
    for round_index in range(args.rounds):
        started = time.perf_counter()
        record: dict[str, Any] = {"speed": {}, "load": {}, "harvest": {}, "half": {}}
        order = list(impls) if round_index % 2 == 0 else list(reversed(impls))
        for key in order if "speed" in tasks else []:
            python, path = impls[key]
            record["speed"][key] = launch(
                python,
                path,
                "speed",
                "tlcore" if key in ("tlcore", "before") else key,
                name,
                str(args.repeats),
                threads,
            )
        for key in ["hf", *order] if "load" in tasks else []:
            impl = LOAD_IMPL.get(key)
            if impl is None:
                continue
            python, path = impls.get(key, (sys.executable, str(REPO)))
            record["load"][key] = launch(python, path, "load", impl, name, threads)
            if impl == "tlcore":
                record["load"][key + "_processed"] = launch(
                    python, path, "load", "tlcore_processed", name, threads
                )
        if "harvest" in tasks:
            record["harvest"]["tlcore"] = launch(
                sys.executable, str(REPO), "harvest", name, threads
            )
        if "harvest" in tasks and not args.no_ray and round_index == 0:
            record["harvest"]["tlcore_ray"] = launch(
                sys.executable, str(REPO), "harvest", name, threads, "ray"
            )
        for key in [k for k in order if k in ("tlcore", "before") and "half" in tasks]:
            python, path = impls[key]
            record["half"][key] = launch(
                python,
                path,
                "half",
                name,
                "bfloat16",
                str(args.repeats),
                threads,
                script="scale.py",
            )
        if round_index == 0 and "offload" in tasks and name == args.models[0]:
            record["offload"] = launch(
                sys.executable, str(REPO), "offload", str(OFFLOAD_MB), threads, script="scale.py"
            )
        entry["rounds"].append(record)
        partial = Path(args.out).with_suffix(".partial.json")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(entry, indent=2))
        print(
            f"  {name}: round {round_index + 1}/{args.rounds} "
            f"in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return entry


def summarize(
    entry: dict[str, Any],
    impls: dict[str, Any],
    tasks: list[str] | None = None,
    rows: list[str] | None = None,
) -> list[list[str]]:
    rounds = entry["rounds"]
    columns = [c for c in COLUMNS if c == "hf" or c in impls]
    table = [["measurement", *[TITLES[c] for c in columns]]]
    for key, label, kind in ROWS:
        if tasks is not None and kind not in tasks:
            continue  # a measurement this model was not in (--tasks, or the model's own list)
        if kind == "speed" and rows and key not in rows:
            continue  # not among --rows
        cells = []
        for column in columns:
            cells.append(cell(rounds, key, kind, column))
        table.append([label, *cells])
    return table


def cell(rounds: list[dict[str, Any]], key: str, kind: str, column: str) -> str:
    if kind == "half":
        return half_cell(rounds, key, column)
    if kind == "offload":
        return offload_cell(rounds, column)
    if kind == "speed":
        if column == "hf":
            return "1.00" if key not in ("generate_steered_b1",) else "-"
        rows = [r["speed"].get(column) or {} for r in rounds]
        rows = [row[key] for row in rows if key in row]
        if not rows:
            return "n/a"
        pairs = [x for r in rows for x in r.get("ratios", [])]
        if key == "generate_steered_b1":
            return fmt_ratio([r["hook_cost"] for r in rows], pairs)
        text = fmt_ratio([r["ratio"] for r in rows], pairs)
        if key == "cache_all":
            text += f" ({statistics.median(r['mb'] for r in rows):,.0f} MB)"
        if "same_tokens" in rows[0]:
            same = all(r["same_tokens"] for r in rows)
            text += ", same tokens" if same else f", differs at {rows[0]['first_difference']}"
        return text
    if kind == "load":
        suffix = "_processed" if key == "load_processed" else ""
        if column == "hf":
            source = "hf"
        elif column in ("tlcore", "before"):
            source = column + suffix
        elif column == "tl43" and key == "load_raw":
            source = "tl43"
        else:
            return "n/a"
        values = [r["load"].get(source) for r in rounds]
        values = [v for v in values if v]
        if not values:
            return "n/a"
        seconds = statistics.median(v["seconds"] for v in values)
        rss = statistics.median(v["peak_rss_after_forward_mb"] for v in values)
        return f"{seconds:.2f} s / {rss:,.0f} MB"
    if column not in ("tlcore",):
        return "-" if column == "hf" and key == "harvest" else "n/a"
    if key == "harvest":
        values = [r["harvest"].get("tlcore") for r in rounds]
        values = [v for v in values if v]
        if not values:
            return "n/a"
        ours = statistics.median(v["tokens_per_s"] for v in values)
        theirs = statistics.median(v["hf_forward_tokens_per_s"] for v in values)
        return f"{ours:,.0f} tok/s ({theirs:,.0f})"
    values = [r["harvest"].get("tlcore_ray") for r in rounds]
    values = [v for v in values if v]
    if not values:
        return "n/a"
    v = values[0]
    return (
        f"{v['compute_tokens_per_s_per_worker']:,.0f} tok/s compute, "
        f"{v['wall_tokens_per_s_per_worker']:,.0f} wall"
    )


def half_cell(rounds: list[dict[str, Any]], key: str, column: str) -> str:
    if column == "hf":
        return "1.00" if key == "bf16_forward" else "-"
    values = [r.get("half", {}).get(column) for r in rounds]
    values = [v for v in values if v]
    if not values:
        return "n/a"
    if key == "bf16_parity":
        diff = statistics.median(v["max_dlogit_vs_hf"] for v in values)
        own = statistics.median(v["hf_own_error"] for v in values)
        return f"{diff:.3g} ({own:.3g})"
    forward = fmt_ratio([v["forward"]["ratio"] for v in values])
    return f"{forward} / {fmt_ratio([v['cache_all']['ratio'] for v in values])}"


def offload_cell(rounds: list[dict[str, Any]], column: str) -> str:
    run = rounds[0].get("offload") if rounds else None
    if column == "hf":
        return "-"
    if column != "tlcore" or not run:
        return "n/a"
    disk, ram = run["disk"], run["ram"]
    same = "logits equal" if run["logits_equal"] else f"max diff {run['max_abs_diff']:.3g}"
    return (
        f"{run['weights_mb']:,.0f} MB checkpoint: {disk['peak_rss_mb']:,.0f} MB peak "
        f"({disk['seconds']:.1f} s) vs {ram['peak_rss_mb']:,.0f} MB in RAM; {same}"
    )


def print_table(table: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for index, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--models", nargs="*", default=list(BENCH_MODELS), choices=list(BENCH_MODELS)
    )
    parser.add_argument("--baseline", default=None, help="another tlcore tree: a 'before' column")
    parser.add_argument("--tl39", default=None, help="Python with transformer-lens 3.9")
    parser.add_argument("--tl43", default=None, help="Python with transformer-lens 4.3")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray harvest row")
    parser.add_argument(
        "--tasks",
        nargs="*",
        default=list(TASKS),
        choices=TASKS,
        help="which measurements to run (default: all; 'offload' is the 2 GB larger-than-memory "
        "row)",
    )
    parser.add_argument("--out", default="bench_results/latest.json")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller work (forward [2, 128], 16 new tokens, 32 harvest rows) for a busy machine",
    )
    parser.add_argument(
        "--rows",
        nargs="*",
        default=None,
        choices=[key for key, _, kind in ROWS if kind == "speed"],
        help="only these speed rows (default: all), e.g. the generate rows on a busy machine",
    )
    args = parser.parse_args()
    if args.rows:
        os.environ["TLCORE_BENCH_ROWS"] = ",".join(args.rows)
    if args.quick:
        os.environ["TLCORE_BENCH_QUICK"] = "1"
    impls = implementations(args)
    print(
        f"implementations: {', '.join(TITLES[k] for k in impls)}; {args.threads} threads, "
        f"{args.rounds} rounds",
        file=sys.stderr,
    )
    report: dict[str, Any] = {
        "python": sys.executable,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": args.threads,
        "quick": args.quick,
        "implementations": {k: list(v) for k, v in impls.items()},
        "models": {},
    }
    for name in args.models:
        checkpoint(name)
        entry = collect(name, args, impls)
        report["models"][name] = entry
        print(
            f"\n## {name} (weights {entry['weights_mb']:.0f} MB; ratios to HF: median over "
            f"{args.rounds} round(s) [min-max over every HF/implementation call pair])\n"
        )
        table = summarize(entry, impls, model_tasks(name, args.tasks), args.rows)
        entry["table"] = table
        print_table(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

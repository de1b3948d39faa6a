"""Run every benchmark and print ratios to HF (and to TransformerLens where it is importable).

Usage: python tools/bench/run.py [--repeats N] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import BENCH_MODELS, checkpoint, weight_bytes  # noqa: E402


def worker(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "worker.py"), *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="*", default=list(BENCH_MODELS))
    args = parser.parse_args()
    report: dict = {
        "python": sys.executable,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "models": {},
    }
    for name in args.models:
        folder = checkpoint(name)
        entry: dict = {"weights_mb": weight_bytes(folder) / 2**20}
        entry["load"] = {impl: worker("load", name, impl) for impl in ("hf", "tlcore")}
        entry["speed"] = worker("speed", name, str(args.repeats))
        report["models"][name] = entry
        print(f"\n## {name}  (weights {entry['weights_mb']:.0f} MB)")
        print(
            f"{'measurement':<18} {'HF s':>9} {'tlcore s':>9} {'tlcore/HF':>10} "
            f"{'TL s':>9} {'TL/HF':>7}"
        )
        for task, row in entry["speed"].items():
            hf, ours, tl = row.get("hf"), row.get("tlcore"), row.get("tl")
            fmt = lambda v: f"{v:9.4f}" if v is not None else f"{'n/a':>9}"  # noqa: E731
            ratio = f"{ours / hf:10.3f}" if ours and hf else f"{'n/a':>10}"
            tl_ratio = f"{tl / hf:7.2f}" if tl and hf else f"{'n/a':>7}"
            print(f"{task:<18} {fmt(hf)} {fmt(ours)} {ratio} {fmt(tl)} {tl_ratio}")
        load_hf, load_ours = entry["load"]["hf"], entry["load"]["tlcore"]
        print(
            f"{'load wall':<18} {load_hf['seconds']:9.3f} {load_ours['seconds']:9.3f} "
            f"{load_ours['seconds'] / load_hf['seconds']:10.3f}"
        )
        weights = entry["weights_mb"]
        print(
            f"{'load peak RSS MB':<18} {load_hf['peak_rss_delta_mb']:9.0f} "
            f"{load_ours['peak_rss_delta_mb']:9.0f}"
            f" {load_ours['peak_rss_delta_mb'] / load_hf['peak_rss_delta_mb']:10.3f}"
            f"   (tlcore / weight bytes: {load_ours['peak_rss_delta_mb'] / weights:.2f})"
        )
        hf_fwd, ours_fwd = (
            load_hf["peak_rss_after_forward_mb"],
            load_ours["peak_rss_after_forward_mb"],
        )
        print(f"{'RSS after forward':<18} {hf_fwd:9.0f} {ours_fwd:9.0f} {ours_fwd / hf_fwd:10.3f}")
    out_dir = Path("bench_results")
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out_dir / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

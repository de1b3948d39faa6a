"""One short GPU check: tlcore vs HF (SDPA) in bf16 on random-weight GPT-2-small and Llama-1B sizes.

    python tools/bench/gpu_check.py [--budget-s 420] [--models gpt2 llama1b]

Measures, per model: bf16 forward, ``run_with_cache`` of every hook and of ``resid_post`` only
(ratios to HF's forward / ``output_hidden_states``), greedy generate at batch 1 and batch 8
left-padded (ratio, same tokens?), harvest throughput (tokens/s vs HF forward tokens/s), bf16
parity against HF's own bf16 error, host syncs in a forward, and blocks offloaded to CPU memory
and to the memory-mapped checkpoint (``gpu_scale.py``). Needs
only this repository and a Python with torch + transformers (+ datasets for the harvest row): no
network, no tokenizer (random token ids), weights built in memory. Every section has a time
budget and the whole run stops at ``--budget-s``; the table so far is printed and, when ``$OUT``
is set, written to ``$OUT/gpu_check.json`` after each section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this repository's tlcore

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_scale  # noqa: E402

MODELS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "model_type": "gpt2",
        "config": {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257},
        "batch": 8,
        "pos": 1024,
    },
    "llama1b": {  # Llama-3.2-1B's shape
        "model_type": "llama",
        "config": {
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "vocab_size": 128256,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": True,
            "rope_theta": 500000.0,
        },
        "batch": 4,
        "pos": 1024,
    },
}
PROMPT, NEW = 16, 64
DEVICE = "cuda"
DTYPE = torch.bfloat16


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def shrink() -> None:
    """--smoke: tiny models on the CPU in fp32, to check this script without a GPU."""
    global DEVICE, DTYPE, NEW
    DEVICE, DTYPE, NEW = "cpu", torch.float32, 8
    for spec in MODELS.values():
        cfg = spec["config"]
        for key in ("n_embd", "hidden_size"):
            if key in cfg:
                cfg[key] = 64
        for key in ("n_layer", "num_hidden_layers"):
            if key in cfg:
                cfg[key] = 2
        for key in ("n_head", "num_attention_heads"):
            if key in cfg:
                cfg[key] = 4
        if "num_key_value_heads" in cfg:
            cfg["num_key_value_heads"] = 2
        if "intermediate_size" in cfg:
            cfg["intermediate_size"] = 128
        cfg["vocab_size"] = 1000
        spec["batch"], spec["pos"] = 2, 32


class Budget:
    """Wall-clock budget: the whole run, and each section's share."""

    def __init__(self, total_s: float) -> None:
        self.start, self.total = time.perf_counter(), total_s

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)


def cuda_time(fn: Any, budget_s: float, max_iters: int = 20) -> float:
    """Median seconds of ``fn`` (synchronised), within ``budget_s``."""
    fn()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_iters and (len(samples) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def pair(hf_fn: Any, ours_fn: Any, budget_s: float) -> dict[str, float]:
    """Alternate HF and tlcore in short bursts; medians and their ratio."""
    hf_s, ours_s = [], []
    for _ in range(3):
        hf_s.append(cuda_time(hf_fn, budget_s / 6, 7))
        ours_s.append(cuda_time(ours_fn, budget_s / 6, 7))
    hf, ours = statistics.median(hf_s), statistics.median(ours_s)
    return {"hf_ms": hf * 1e3, "tlcore_ms": ours * 1e3, "ratio": ours / hf}


def build(name: str) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    from tlcore.model import HookedTransformer

    spec = MODELS[name]
    config = AutoConfig.for_model(spec["model_type"], **spec["config"])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(DEVICE):
        hf = AutoModelForCausalLM.from_config(config, dtype=DTYPE).eval()
    ours = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf, device=DEVICE, dtype=DTYPE
    )
    return hf, ours


def section_forward(hf: Any, ours: Any, spec: dict[str, Any], budget_s: float) -> dict[str, Any]:
    tokens = torch.randint(0, hf.config.vocab_size, (spec["batch"], spec["pos"]), device=DEVICE)
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    out: dict[str, Any] = {"shape": [spec["batch"], spec["pos"]]}
    with torch.inference_mode():
        diff = (hf(tokens).logits.float() - ours(tokens).float()).abs().max().item()
        out["max_abs_logit_diff_bf16"] = diff
        out["forward"] = pair(lambda: hf(tokens).logits, lambda: ours(tokens), budget_s / 3)
        out["cache_resid"] = pair(
            lambda: hf(tokens, output_hidden_states=True).hidden_states,
            lambda: ours.run_with_cache(tokens, names_filter=resid),
            budget_s / 3,
        )
        _, cache = ours.run_with_cache(tokens)
        out["cache_all_mb"] = sum(t.numel() * t.element_size() for t in cache.values()) / 2**20
        del cache
        out["cache_all"] = pair(
            lambda: hf(tokens).logits, lambda: ours.run_with_cache(tokens), budget_s / 3
        )
    return out


def section_generate(hf: Any, ours: Any, budget_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    vocab = hf.config.vocab_size
    for batch in (1, 8):
        tokens = torch.randint(3, vocab, (batch, PROMPT), device=DEVICE)
        mask = torch.ones_like(tokens)
        for row in range(batch):
            mask[row, : row % 5] = 0
        tokens = tokens * mask

        def theirs(tokens: Any = tokens, mask: Any = mask) -> Any:
            return hf.generate(
                tokens,
                attention_mask=mask,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
                pad_token_id=0,
            )

        def mine(tokens: Any = tokens, mask: Any = mask, batch: int = batch) -> Any:
            return ours.generate(
                tokens,
                NEW,
                do_sample=False,
                stop_at_eos=False,
                verbose=False,
                attention_mask=mask if batch > 1 else None,
            )

        a, b = theirs(), mine()
        differ = (a != b).any(0).nonzero()
        row = pair(theirs, mine, budget_s / 2)
        row["first_difference"] = None if differ.numel() == 0 else int(differ[0]) - PROMPT
        out[f"batch{batch}"] = row
    return out


def section_harvest(hf: Any, ours: Any, spec: dict[str, Any], budget_s: float) -> dict[str, Any]:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return {"skipped": "datasets is not installed"}
    import tempfile

    from tlcore.harvest import harvest

    hook = f"blocks.{ours.cfg.n_layers // 2}.hook_resid_post"
    batch, pos = 16, spec["pos"]
    rows = max(batch * 2, int(budget_s * 4))  # grows with the budget; a few seconds of work
    rows = min(rows, 256)
    tokens = torch.randint(0, hf.config.vocab_size, (rows, pos))
    data = [{"tokens": r} for r in tokens.tolist()]
    with tempfile.TemporaryDirectory() as tmp:
        result = harvest(
            ours,
            data,
            [hook],
            Path(tmp) / "h",
            context_size=pos,
            batch_size=batch,
            dtype=str(DTYPE).removeprefix("torch."),
            store_dtype="float16",
            progress=False,
        )
    gpu = tokens.to(DEVICE)
    with torch.inference_mode():

        def hf_pass() -> None:
            for lo in range(0, rows, batch):
                hf(gpu[lo : lo + batch], output_hidden_states=True)

        hf_s = cuda_time(hf_pass, budget_s / 4, 3)
    return {
        "hook": hook,
        "tokens": rows * pos,
        "tokens_per_s": result.tokens_per_second,
        "hf_forward_tokens_per_s": rows * pos / hf_s,
    }


def run_model(
    name: str, budget: Budget, share: float, report: dict[str, Any], out_dir: Path | None
) -> None:
    spec = MODELS[name]
    entry: dict[str, Any] = report["models"].setdefault(name, {})
    started = time.perf_counter()
    hf, ours = build(name)
    entry["build_s"] = time.perf_counter() - started
    sections = [
        ("forward", lambda s: section_forward(hf, ours, spec, s), 0.2),
        ("generate", lambda s: section_generate(hf, ours, s), 0.3),
        ("harvest", lambda s: section_harvest(hf, ours, spec, s), 0.2),
    ]
    sections += [
        (label, lambda s, fn=fn: fn(hf, ours, DEVICE), fraction)
        for label, fn, fraction in gpu_scale.SECTIONS
    ]
    for label, fn, fraction in sections:
        if budget.left() < 20:
            entry[label] = {"skipped": "out of time"}
            continue
        try:
            entry[label] = fn(max(5.0, min(share * fraction, budget.left() - 15)))
        except Exception as exc:  # noqa: BLE001 - report and go on to the next section
            entry[label] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        save(report, out_dir)
    sections.clear()
    hf = ours = None  # free the models before the next one
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def save(report: dict[str, Any], out_dir: Path | None) -> None:
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))


def table(report: dict[str, Any]) -> str:
    lines = [
        "| model | measurement | HF | tlcore | tlcore/HF | note |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report["models"].items():
        fwd = entry.get("forward", {})
        for key, label in (
            ("forward", "bf16 forward"),
            ("cache_all", "run_with_cache, every hook"),
            ("cache_resid", "run_with_cache, resid_post"),
        ):
            row = fwd.get(key)
            if isinstance(row, dict) and "ratio" in row:
                note = f"{fwd['cache_all_mb']:,.0f} MB" if key == "cache_all" else ""
                if key == "forward":
                    note = f"max|dlogit| {fwd['max_abs_logit_diff_bf16']:.3g}"
                lines.append(
                    f"| {name} | {label} {fwd['shape']} | {row['hf_ms']:.1f} ms | "
                    f"{row['tlcore_ms']:.1f} ms | {row['ratio']:.3f} | {note} |"
                )
        for batch, row in entry.get("generate", {}).items():
            if isinstance(row, dict) and "ratio" in row:
                same = row["first_difference"]
                note = "same tokens" if same is None else f"differs at new token {same}"
                lines.append(
                    f"| {name} | greedy generate {PROMPT}+{NEW} {batch} | {row['hf_ms']:.0f} ms | "
                    f"{row['tlcore_ms']:.0f} ms | {row['ratio']:.3f} | {note} |"
                )
        harvest = entry.get("harvest", {})
        if "tokens_per_s" in harvest:
            lines.append(
                f"| {name} | harvest {harvest['hook']} (tok/s) | "
                f"{harvest['hf_forward_tokens_per_s']:,.0f} | {harvest['tokens_per_s']:,.0f} | "
                f"{harvest['tokens_per_s'] / harvest['hf_forward_tokens_per_s']:.2f}x | "
                "HF: full forward |"
            )
        lines += gpu_scale.rows(name, entry)
        for label in ("forward", "generate", "harvest", "parity", "sync", "offload"):
            problem = entry.get(label, {})
            if isinstance(problem, dict) and ("error" in problem or "skipped" in problem):
                lines.append(
                    f"| {name} | {label} | | | | {problem.get('error') or problem['skipped']} |"
                )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="whole run (default 7 min)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (no GPU)")
    args = parser.parse_args()
    if args.smoke:
        shrink()
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 1
    budget = Budget(args.budget_s)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    import transformers

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "budget_s": args.budget_s,
        "models": {},
    }
    torch.backends.cuda.matmul.allow_tf32 = True
    for index, name in enumerate(args.models):
        if budget.left() < 30:
            report["models"][name] = {"skipped": "out of time"}
            continue
        share = budget.left() / (len(args.models) - index)
        try:
            run_model(name, budget, share, report, out_dir)
        except Exception as exc:  # noqa: BLE001
            report["models"].setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        save(report, out_dir)
    report["elapsed_s"] = args.budget_s - budget.left()
    save(report, out_dir)
    print(
        f"{report['device']}, torch {report['torch']}, transformers {report['transformers']}, "
        f"{report['elapsed_s']:.0f} s"
    )
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One benchmark task in a fresh process; prints one JSON line. Run by run.py."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import BENCH_MODELS, checkpoint  # noqa: E402

BATCH, POS, NEW_TOKENS = 4, 256, 32


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def load_task(name: str, impl: str) -> dict[str, Any]:
    folder = checkpoint(name)
    if impl == "hf":
        from transformers import AutoModelForCausalLM
    else:
        from tlcore.model import HookedTransformer
    import transformers  # noqa: F401 - import cost excluded from the load measurement

    base = peak_rss_mb()
    start = time.perf_counter()
    if impl == "hf":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    else:
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    seconds = time.perf_counter() - start
    after_load = peak_rss_mb() - base
    n_params = sum(p.numel() for p in model.parameters())
    # Memory-mapped weights become resident when first used: measure after one small forward too.
    tokens = torch.zeros(1, 16, dtype=torch.long)
    with torch.inference_mode():
        model(tokens)
    return {
        "seconds": seconds,
        "peak_rss_delta_mb": after_load,
        "params": n_params,
        "peak_rss_after_forward_mb": peak_rss_mb() - base,
    }


def tl_model(name: str) -> Any:
    from transformer_lens import HookedTransformer as TLHookedTransformer
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(**BENCH_MODELS[name]["tl"], device="cpu", dtype=torch.float32)
    return TLHookedTransformer(cfg).eval()


def speed_task(name: str, repeats: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from tlcore.model import HookedTransformer

    folder = checkpoint(name)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    try:
        tl = tl_model(name)
    except ImportError:
        tl = None
    vocab = hf.config.vocab_size
    tokens = torch.randint(0, vocab, (BATCH, POS), generator=torch.Generator().manual_seed(0))
    prompt = tokens[:1, :16]
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    results: dict[str, Any] = {}
    with torch.inference_mode():
        tasks = {
            "forward": {
                "hf": lambda: hf(tokens).logits,
                "tlcore": lambda: ours(tokens),
                "tl": (lambda: tl(tokens)) if tl else None,
            },
            "cache_resid_post": {
                "hf": lambda: hf(tokens, output_hidden_states=True).hidden_states,
                "tlcore": lambda: ours.run_with_cache(tokens, names_filter=resid),
                "tl": (lambda: tl.run_with_cache(tokens, names_filter=resid)) if tl else None,
            },
            "cache_all": {
                "hf": lambda: hf(tokens).logits,
                "tlcore": lambda: ours.run_with_cache(tokens),
                "tl": (lambda: tl.run_with_cache(tokens)) if tl else None,
            },
        }
        gen_kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
        tasks["generate"] = {
            "hf": lambda: hf.generate(
                prompt, min_new_tokens=NEW_TOKENS, pad_token_id=0, **gen_kwargs
            ),
            "tlcore": (
                lambda: ours.generate(prompt, stop_at_eos=False, verbose=False, **gen_kwargs)
            )
            if hasattr(ours, "generate")
            else None,
            "tl": (lambda: tl.generate(prompt, stop_at_eos=False, verbose=False, **gen_kwargs))
            if tl
            else None,
        }
        for task, impls in tasks.items():
            row = {}
            for impl, fn in impls.items():
                if fn is not None:
                    row[impl] = timeit(fn, repeats if task != "generate" else max(3, repeats // 2))
            results[task] = row
    return results


def main() -> None:
    task, name = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else torch.get_num_threads())
    if task == "load":
        out = load_task(name, sys.argv[3])
    else:
        out = speed_task(name, int(sys.argv[3]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

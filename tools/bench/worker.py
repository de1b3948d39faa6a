"""One benchmark task in a fresh process; prints one JSON line. Run by run.py.

    worker.py speed   IMPL MODEL REPEATS THREADS   IMPL: tlcore | tl39 | tl43; HF runs beside it
    worker.py load    IMPL MODEL THREADS           IMPL: hf | tlcore | tlcore_processed | tl43
    worker.py harvest MODEL THREADS [ray]          tlcore's harvest, in-process or 2 Ray workers

Speed tasks alternate HF and the implementation call by call in this one process, so each ratio
compares runs that met the same machine load. This file runs under TransformerLens's virtualenvs
too: it imports tlcore only for the tlcore implementation.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import BENCH_MODELS, checkpoint  # noqa: E402

BATCH, POS = 4, 256  # forward and caches
PROMPT, NEW = 16, 32  # generation: 16-token prompts, 32 new tokens
GEN_BATCH = 8  # the left-padded batch
SAMPLE_SEED = 0  # torch.manual_seed before each implementation's sampled generate
HARVEST_CTX, HARVEST_ROWS, HARVEST_BATCH = 128, 64, 8
if os.environ.get("TLCORE_BENCH_QUICK"):  # run.py --quick: a busy machine, smaller work
    BATCH, POS, NEW, HARVEST_ROWS = 2, 128, 16, 32


def wanted(row: str) -> bool:
    """Whether a speed row is measured (run.py --rows sets ``TLCORE_BENCH_ROWS``; default: all)."""
    rows = os.environ.get("TLCORE_BENCH_ROWS")
    return not rows or row in rows.split(",")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved(hf: Callable[[], Any], impl: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Alternate the two calls; medians of each and of the per-pair ratio."""
    hf(), impl()  # warm-up
    t_hf, t_impl, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        hf()
        mid = time.perf_counter()
        impl()
        end = time.perf_counter()
        t_hf.append(mid - start)
        t_impl.append(end - mid)
        ratios.append((end - mid) / (mid - start))
    return {
        "hf_s": statistics.median(t_hf),
        "impl_s": statistics.median(t_impl),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def unique_mb(tensors: Any) -> float:
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total / 2**20


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """Index of the first generated position where two token batches differ (None: equal)."""
    if a.shape != b.shape:
        return 0
    diff = (a != b).any(0).nonzero()
    return None if diff.numel() == 0 else int(diff[0]) - PROMPT


def prompts(vocab: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts, left-padded with 0 (pad) by a different amount per row when batched."""
    tokens = torch.randint(3, vocab, (batch, PROMPT), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(tokens)
    if batch > 1:
        for row in range(batch):
            mask[row, : row % 5] = 0
    return tokens * mask, mask


class Impl:
    """What each implementation offers the speed tasks (None: not measured)."""

    forward: Callable[[torch.Tensor], Any]
    cache_all: Callable[[torch.Tensor], Any]
    cache_resid: Callable[[torch.Tensor], Any]
    generate: Callable[..., torch.Tensor] | None = None
    steer: Callable[[torch.Tensor, torch.Tensor], Any] | None = None


def tlcore_impl(folder: Path) -> Impl:
    from tlcore.model import HookedTransformer

    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    impl = Impl()
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    impl.forward = lambda t: model(t)
    impl.cache_all = lambda t: model.run_with_cache(t)[1]
    impl.cache_resid = lambda t: model.run_with_cache(t, names_filter=resid)[1]

    def generate(tokens, mask, sample=False):
        # Left padding through the tokenizer's pad id (0), as TransformerLens 2.x/3.x take it,
        # so the same call runs on older tlcore trees too.
        padding = {"padding_side": "left", "prepend_bos": False} if mask is not None else {}
        return model.generate(
            tokens,
            NEW,
            do_sample=sample,
            top_k=50 if sample else None,
            stop_at_eos=False,
            verbose=False,
            **padding,
        )

    impl.generate = generate
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))

    def steer(tokens, mask):
        hook = (f"blocks.{model.cfg.n_layers // 2}.hook_resid_post", lambda x, hook: x + direction)
        with model.hooks(fwd_hooks=[hook]):
            return model.generate(tokens, NEW, do_sample=False, stop_at_eos=False, verbose=False)

    impl.steer = steer
    impl.model = model  # type: ignore[attr-defined]
    return impl


def tl39_impl(name: str) -> Impl:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained import weight_conversions
    from transformers import AutoModelForCausalLM

    cfg = HookedTransformerConfig(**BENCH_MODELS[name]["tl"], device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg).eval()
    # The checkpoint's own weights (TL 3.9's converter), unprocessed, so tokens compare with HF.
    hf = AutoModelForCausalLM.from_pretrained(checkpoint(name), dtype=torch.float32)
    convert = {"gpt2": "convert_gpt2_weights", "llama": "convert_llama_weights"}
    state = getattr(weight_conversions, convert[BENCH_MODELS[name]["model_type"]])(hf, cfg)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    del hf
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    impl = Impl()
    impl.forward = lambda t: model(t)
    impl.cache_all = lambda t: model.run_with_cache(t)[1].cache_dict.values()
    impl.cache_resid = lambda t: model.run_with_cache(t, names_filter=resid)[1]

    from transformers import AutoTokenizer

    model.set_tokenizer(AutoTokenizer.from_pretrained(checkpoint(name)))  # TL reloads it by path

    def generate(tokens, mask, sample=False):
        padding = {"padding_side": "left", "prepend_bos": False} if mask is not None else {}
        return model.generate(
            tokens,
            NEW,
            do_sample=sample,
            top_k=50 if sample else None,
            stop_at_eos=False,
            verbose=False,
            **padding,
        )

    impl.generate = generate
    return impl


def tl43_impl(folder: Path) -> Impl:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32)
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    impl = Impl()
    impl.forward = lambda t: bridge(t)
    impl.cache_all = lambda t: bridge.run_with_cache(t)[1].cache_dict.values()
    impl.cache_resid = lambda t: bridge.run_with_cache(t, names_filter=resid)[1]

    def generate(tokens, mask, sample=False):
        kwargs = {"attention_mask": mask} if mask is not None else {}
        return bridge.generate(
            tokens,
            NEW,
            do_sample=sample,
            top_k=50 if sample else None,
            stop_at_eos=False,
            verbose=False,
            return_type="tokens",
            **kwargs,
        )

    impl.generate = generate
    return impl


def speed_task(impl_name: str, name: str, repeats: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    folder = checkpoint(name)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    impl = {
        "tlcore": lambda: tlcore_impl(folder),
        "tl39": lambda: tl39_impl(name),
        "tl43": lambda: tl43_impl(folder),
    }[impl_name]()
    vocab = hf.config.vocab_size
    tokens = torch.randint(0, vocab, (BATCH, POS), generator=torch.Generator().manual_seed(0))
    results: dict[str, Any] = {}
    with torch.inference_mode():
        hf_forward = lambda: hf(tokens).logits  # noqa: E731
        if wanted("forward"):
            results["forward"] = interleaved(hf_forward, lambda: impl.forward(tokens), repeats)
        if wanted("cache_all"):
            results["cache_all"] = interleaved(hf_forward, lambda: impl.cache_all(tokens), repeats)
            cache = impl.cache_all(tokens)
            results["cache_all"]["mb"] = unique_mb(
                cache.values() if hasattr(cache, "values") else cache
            )
            del cache
        if wanted("cache_resid"):
            results["cache_resid"] = interleaved(
                lambda: hf(tokens, output_hidden_states=True).hidden_states,
                lambda: impl.cache_resid(tokens),
                repeats,
            )
    gen_repeats = max(2, repeats // 2)
    # generate runs under no_grad (its own choice in tlcore); HF's generate sets its own mode.
    for label, batch, sample in (
        ("generate_b1", 1, False),
        ("generate_b8_left_padded", GEN_BATCH, False),
        ("generate_sampled_b1", 1, True),
        ("generate_sampled_b8_left_padded", GEN_BATCH, True),
    ):
        if impl.generate is None or not wanted(label):
            continue
        prompt, mask = prompts(vocab, batch, seed=batch)
        impl_mask = mask if batch > 1 else None
        # Sampling draws from torch's global RNG in both (one multinomial, i.e. one exponential
        # per vocabulary entry, per step): the same seed gives the same tokens where the
        # sampling maths is the same (top-k 50, temperature 1).
        torch.manual_seed(SAMPLE_SEED)
        ours = impl.generate(prompt, impl_mask, sample)
        if ours is None:
            continue

        def theirs_fn(prompt: Any = prompt, mask: Any = mask, sample: bool = sample) -> Any:
            return hf.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=sample,
                top_k=50 if sample else None,
                pad_token_id=0,
            )

        def ours_fn(prompt: Any = prompt, mask: Any = impl_mask, sample: bool = sample) -> Any:
            return impl.generate(prompt, mask, sample)

        torch.manual_seed(SAMPLE_SEED)
        theirs = theirs_fn()
        row = interleaved(theirs_fn, ours_fn, gen_repeats)
        row["first_difference"] = first_difference(ours.cpu(), theirs.cpu())
        row["same_tokens"] = row["first_difference"] is None
        results[label] = row
    if impl.steer is not None and wanted("generate_steered_b1"):
        prompt, mask = prompts(vocab, 1, seed=1)
        row = interleaved(
            lambda: impl.generate(prompt, None, False),
            lambda: impl.steer(prompt, mask),
            gen_repeats,
        )
        row["hook_cost"] = row.pop("ratio")  # steered / unsteered tlcore generate
        results["generate_steered_b1"] = row
    return results


def load_task(impl: str, name: str) -> dict[str, Any]:
    folder = checkpoint(name)
    import transformers  # noqa: F401 - import cost excluded from the load measurement

    if impl.startswith("tlcore"):
        from tlcore.model import HookedTransformer
    if impl == "tl43":
        from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    base = peak_rss_mb()
    start = time.perf_counter()
    if impl == "hf":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    elif impl == "tlcore":
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    elif impl == "tlcore_processed":
        model = HookedTransformer.from_pretrained(str(folder), device="cpu")
    elif impl == "tl43":
        model = TransformerBridge.boot_transformers(str(folder), device="cpu")
    else:
        raise ValueError(impl)
    seconds = time.perf_counter() - start
    after_load = peak_rss_mb() - base
    tokens = torch.zeros(1, 16, dtype=torch.long)
    with torch.inference_mode():
        model(tokens)
    return {
        "seconds": seconds,
        "peak_rss_delta_mb": after_load,
        "peak_rss_after_forward_mb": peak_rss_mb() - base,
    }


def harvest_task(name: str, use_ray: bool) -> dict[str, Any]:
    """tlcore's harvest of the middle block's resid_post over pre-tokenised random rows."""
    import datasets
    from transformers import AutoModelForCausalLM

    from tlcore.harvest import harvest

    folder = checkpoint(name)
    spec = BENCH_MODELS[name]
    vocab, n_layers = (
        spec["config"]["vocab_size"],
        next(v for k, v in spec["config"].items() if k in ("n_layer", "num_hidden_layers")),
    )
    hook = f"blocks.{n_layers // 2}.hook_resid_post"
    rows = torch.randint(
        0, vocab, (HARVEST_ROWS, HARVEST_CTX), generator=torch.Generator().manual_seed(0)
    )
    dataset = datasets.Dataset.from_dict({"tokens": rows.tolist()})
    result: dict[str, Any] = {"hook": hook, "tokens": HARVEST_ROWS * HARVEST_CTX}
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = dict(context_size=HARVEST_CTX, batch_size=HARVEST_BATCH, progress=False)
        if use_ray:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                out = harvest(
                    str(folder),
                    dataset,
                    [hook],
                    Path(tmp) / "r",
                    ray=True,
                    num_workers=2,
                    rows_per_shard=HARVEST_BATCH * 2,
                    **kwargs,
                )
            finally:
                ray.shutdown()
            compute = sum(
                json.loads(p.read_text())["seconds"] for p in (Path(tmp) / "r").glob("shard-*.json")
            )
            result.update(
                wall_tokens_per_s=out.tokens_per_second,
                wall_tokens_per_s_per_worker=out.tokens_per_second / out.workers,
                compute_tokens_per_s_per_worker=out.tokens / compute,
                wall_s=out.seconds,
                workers=out.workers,
            )
            return result
        out = harvest(str(folder), dataset, [hook], Path(tmp) / "a", **kwargs)
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            for lo in range(0, HARVEST_ROWS, HARVEST_BATCH):
                hf(rows[lo : lo + HARVEST_BATCH], output_hidden_states=True)
        hf_s = time.perf_counter() - start
        result.update(
            tokens_per_s=out.tokens_per_second,
            hf_forward_tokens_per_s=HARVEST_ROWS * HARVEST_CTX / hf_s,
            wall_s=out.seconds,
        )
    return result


def main() -> None:
    task = sys.argv[1]
    threads = int(sys.argv[-1]) if task != "harvest" else int(sys.argv[3])
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if task == "speed":
        out = speed_task(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif task == "load":
        out = load_task(sys.argv[2], sys.argv[3])
    elif task == "harvest":
        out = harvest_task(sys.argv[2], len(sys.argv) > 4 and sys.argv[4] == "ray")
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

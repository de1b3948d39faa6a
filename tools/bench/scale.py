"""Benchmark tasks of issue 14's second phase, each in a fresh process; prints one JSON line.

    scale.py half    MODEL DTYPE REPEATS THREADS  bf16/fp16 forward and all-hook cache vs HF in the
                                                  same dtype ([1, POS/2]), and the logit gap to HF
    scale.py offload SIZE_MB THREADS              a random Llama checkpoint of SIZE_MB run with
                                                  every part on "disk": peak RSS vs its size,
                                                  logits vs an unconstrained run (another process)
    scale.py logits  FOLDER THREADS [disk]        (internal) logits and peak RSS of one run

Run by run.py; the offload task is also what ``make bench`` reports as "larger than memory".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import checkpoint  # noqa: E402
from worker import POS, interleaved  # noqa: E402


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def half_task(name: str, dtype_name: str, repeats: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from tlcore.model import HookedTransformer

    dtype = getattr(torch, dtype_name)
    folder = checkpoint(name)
    hf32 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    ours = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu", dtype=dtype)
    # bf16 matmuls on a CPU without bf16 instructions are slow: half the forward rows' batch.
    tokens = torch.randint(
        0, hf.config.vocab_size, (1, POS // 2), generator=torch.Generator().manual_seed(0)
    )
    out: dict[str, Any] = {"dtype": dtype_name}
    with torch.inference_mode():
        ref32 = hf32(tokens).logits.float()
        ref = hf(tokens).logits.float()
        mine = ours(tokens).float()
        out["max_dlogit_vs_hf"] = float((mine - ref).abs().max())
        out["hf_own_error"] = float((ref - ref32).abs().max())
        repeats = max(2, repeats // 2)
        out["forward"] = interleaved(lambda: hf(tokens).logits, lambda: ours(tokens), repeats)
        out["cache_all"] = interleaved(
            lambda: hf(tokens).logits, lambda: ours.run_with_cache(tokens)[1], repeats
        )
    return out


def write_random_llama(folder: Path, size_mb: int) -> Path:
    """A random Llama-GQA checkpoint of about ``size_mb`` (fp32), written tensor by tensor."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    d, layers = 1024, max(2, (size_mb - 250) // 43)
    config = AutoConfig.for_model(
        "llama",
        hidden_size=d,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        intermediate_size=2816,
        vocab_size=32000,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    config.save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    state = {"model.embed_tokens.weight": torch.randn(32000, d, generator=gen) * 0.02}
    state["lm_head.weight"] = torch.randn(32000, d, generator=gen) * 0.02
    state["model.norm.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
    kv = 4 * (d // 16)
    shapes = {
        "self_attn.q_proj.weight": (d, d),
        "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d),
        "self_attn.o_proj.weight": (d, d),
        "mlp.gate_proj.weight": (2816, d),
        "mlp.up_proj.weight": (2816, d),
        "mlp.down_proj.weight": (d, 2816),
        "input_layernorm.weight": (d,),
        "post_attention_layernorm.weight": (d,),
    }
    for i in range(layers):
        for key, shape in shapes.items():
            base = 1.0 if len(shape) == 1 else 0.0
            state[f"model.layers.{i}.{key}"] = base + 0.03 * torch.randn(shape, generator=gen)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def logits_task(folder: str, disk: bool) -> dict[str, Any]:
    import transformers  # noqa: F401 - import cost excluded, as in the load rows

    from tlcore.model import HookedTransformer
    from tlcore.registry import get_registry

    get_registry()  # loaded once per process (specs, plugins): not the model's memory
    before = status_mb("VmRSS")
    start = time.perf_counter()
    device_map = {"embed": "disk", "blocks": "disk", "unembed": "disk"} if disk else None
    model = HookedTransformer.from_pretrained_no_processing(
        folder, device="cpu", device_map=device_map
    )
    tokens = torch.randint(
        0, model.cfg.d_vocab, (2, 64), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        logits = model(tokens)
    seconds = time.perf_counter() - start
    torch.save(logits, Path(folder) / f"logits_{'disk' if disk else 'ram'}.pt")
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": status_mb("VmHWM"),
        "peak_rss_delta_mb": status_mb("VmHWM") - before,
    }


def offload_task(size_mb: int, threads: str) -> dict[str, Any]:
    """The larger-than-memory proof: every part on "disk", peak RSS against the file size."""
    with tempfile.TemporaryDirectory(prefix="tlcore-offload-") as tmp:
        folder = write_random_llama(Path(tmp), size_mb)
        weights_mb = (folder / "model.safetensors").stat().st_size / 2**20
        env = dict(os.environ)
        runs = {}
        for mode in ("disk", "ram"):
            args = [sys.executable, __file__, "logits", str(folder), threads]
            done = subprocess.run(
                [*args, "disk"] if mode == "disk" else args,
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        disk = torch.load(folder / "logits_disk.pt")
        ram = torch.load(folder / "logits_ram.pt")
        return {
            "weights_mb": weights_mb,
            "disk": runs["disk"],
            "ram": runs["ram"],
            "logits_equal": bool(torch.equal(disk, ram)),
            "max_abs_diff": float((disk - ram).abs().max()),
        }


def main() -> None:
    task = sys.argv[1]
    torch.set_num_threads(int(sys.argv[-1]) if task != "logits" else int(sys.argv[3]))
    if task == "half":
        out = half_task(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif task == "offload":
        out = offload_task(int(sys.argv[2]), sys.argv[3])
    elif task == "logits":
        out = logits_task(sys.argv[2], len(sys.argv) > 4 and sys.argv[4] == "disk")
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""gpu_check.py's issue-14 phase-2 sections: bf16 parity, sync-free input checks, offload.

Each section takes the HF model and tlcore's model that gpu_check built (bf16, on the GPU, same
weights) and returns a JSON-able dict; :func:`rows` turns them into table rows.
"""

from __future__ import annotations

import copy
import tempfile
import time
from typing import Any

import torch

from tlcore.model import HookedTransformer
from tlcore.parity.half import HALF_FLOOR, half_tolerance


def section_parity(hf: Any, ours: Any, device: str) -> dict[str, Any]:
    """bf16 logits against HF bf16, judged against HF's own bf16 error (HF in fp32 as truth)."""
    tokens = torch.randint(0, hf.config.vocab_size, (2, 128), device=device)
    with torch.inference_mode():
        ref = hf(tokens).logits.float()
        mine = ours(tokens).float()
        hf32 = copy.deepcopy(hf).float()
        ref32 = hf32(tokens).logits.float()
    del hf32
    error = float((ref - ref32).abs().max())
    diff = float((mine - ref).abs().max())
    scale = float(ref32.abs().max())
    dtype = ours.cfg.dtype
    tol = half_tolerance(error, scale, dtype) if dtype in HALF_FLOOR else 2 * error + 1e-4 * scale
    return {"max_dlogit": diff, "hf_own_error": error, "tolerance": tol, "ok": diff <= tol}


def section_sync(hf: Any, ours: Any, device: str) -> dict[str, Any]:
    """Does a forward on CUDA tokens synchronise with the host? (``set_sync_debug_mode``)."""
    if device != "cuda":
        return {"skipped": "CPU"}
    tokens = torch.randint(0, hf.config.vocab_size, (2, 64), device=device)
    with torch.inference_mode():
        ours(tokens)
        torch.cuda.set_sync_debug_mode("error")
        try:
            ours(tokens)
            result: dict[str, Any] = {"syncs": "none"}
        except RuntimeError as exc:
            result = {"syncs": str(exc).splitlines()[0][:160]}
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result


def _timed(fn: Any, device: str, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def section_offload(hf: Any, ours: Any, device: str) -> dict[str, Any]:
    """Blocks offloaded to CPU memory and to the memory-mapped checkpoint, streamed to the GPU."""
    tokens = torch.randint(0, hf.config.vocab_size, (1, 128), device=device)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tlcore-gpu-offload-") as tmp:
        hf.save_pretrained(tmp)
        with torch.inference_mode():
            expected = ours(tokens)
            resident_s = _timed(lambda: ours(tokens), device)
            for home in ("cpu", "disk"):
                placed = HookedTransformer.from_pretrained_no_processing(
                    tmp, device=device, dtype=ours.cfg.dtype, device_map={"blocks": home}
                )
                memory = None
                if device == "cuda":
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                got = placed(tokens)
                if device == "cuda":  # what one forward adds: a streamed block, activations
                    memory = (torch.cuda.max_memory_allocated() - before) / 2**20
                seconds = _timed(lambda placed=placed: placed(tokens), device)
                out[home] = {
                    "max_abs_diff": float((got.float() - expected.float()).abs().max()),
                    "forward_s": seconds,
                    "vs_resident": seconds / resident_s,
                    "forward_extra_gpu_mb": memory,
                }
                del placed
    return out


SECTIONS = [("parity", section_parity, 0.1), ("sync", section_sync, 0.05)]
SECTIONS.append(("offload", section_offload, 0.15))


def rows(name: str, entry: dict[str, Any]) -> list[str]:
    """Table rows (``| model | measurement | HF | tlcore | tlcore/HF | note |``)."""
    lines = []
    parity = entry.get("parity", {})
    if "max_dlogit" in parity:
        verdict = "ok" if parity["ok"] else "FAIL"
        lines.append(
            f"| {name} | bf16 parity max abs dlogit | HF own error {parity['hf_own_error']:.3g} | "
            f"{parity['max_dlogit']:.3g} | | {verdict} (tolerance {parity['tolerance']:.3g}) |"
        )
    if "syncs" in entry.get("sync", {}):
        lines.append(f"| {name} | host syncs in a forward | | {entry['sync']['syncs']} | | |")
    for home, row in entry.get("offload", {}).items():
        if isinstance(row, dict) and "forward_s" in row:
            lines.append(
                f"| {name} | blocks on {home}, streamed (1x128 forward) | | "
                f"{row['forward_s'] * 1e3:.0f} ms | {row['vs_resident']:.2f}x resident | "
                f"max diff {row['max_abs_diff']:.3g}, "
                f"+{row['forward_extra_gpu_mb'] or 0:,.0f} MB GPU |"
            )
    return lines

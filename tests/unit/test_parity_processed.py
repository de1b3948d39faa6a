"""The parity tool's processed check: processed vs unprocessed tlcore, both in float64.

Weight processing is exact maths, so the two agree to float64 rounding; HF's float64 model is not a
float64 reference (its norms and delta rule cast to float32), which is why it is only reported.
A float64 tlcore model must never round to float32 either: before the norms computed in *at least*
float32, the ``1 + w`` RMSNorms of Gemma and Qwen3-Next rounded ``x̂ (1 + w)`` to float32 while the
processed model folded ``1 + w`` exactly, and the two differed by 2.6e-5 and 3.5e-5.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity.processed import judge_processed, processed_diffs
from tlcore.parity.result import ParityResult
from tlcore.registry import get_registry
from tlcore.testing.tiny import build_tiny_hf_model

TOKENS = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])


def _loader(name: str, hf_model: Any, broken: bool = False) -> Any:
    """``load(processed)`` in float64; ``broken``: the processed model skips ln_final's weight."""

    def load(processed: bool) -> HookedTransformer:
        kind = "from_pretrained" if processed else "from_pretrained_no_processing"
        model = getattr(HookedTransformer, kind)(
            name, hf_model=hf_model, device="cpu", dtype=torch.float64
        )
        if broken and processed:
            raw = load(False).ln_final
            scale = 1 + raw.w if raw.offset else raw.w
            with torch.no_grad():
                model.unembed.W_U.div_(scale.detach()[:, None])
        return model

    return load


@pytest.mark.parametrize("name", ["llama", "gemma", "qwen3_next"])
def test_processed_equals_unprocessed_to_float64_rounding(name: str) -> None:
    hf_model = build_tiny_hf_model(get_registry().get_spec(name))
    exact, vs_hf = processed_diffs(_loader(name, hf_model), hf_model, TOKENS)
    assert exact < 1e-10
    # HF cast to float64 still computes its norms in float32: visibly further away.
    assert vs_hf is not None and vs_hf > 100 * exact


def test_a_wrong_fold_fails_the_check() -> None:
    hf_model = build_tiny_hf_model(get_registry().get_spec("gemma"))
    exact, vs_hf = processed_diffs(_loader("gemma", hf_model, broken=True), None, TOKENS)
    assert vs_hf is None and exact > 1.0
    result = ParityResult("gemma", None, True, 0.0, atol=1e-4, message="ok")
    judge_processed(result, exact, vs_hf)
    assert not result.ok and result.first_hook == "weight processing"
    assert "processed vs unprocessed" in result.message


def test_the_hf_figure_is_never_judged() -> None:
    result = ParityResult("x", None, True, 0.0, atol=1e-4, message="ok")
    judge_processed(result, 1e-13, 5e-4)
    assert result.ok and result.processed_logprobs_vs_hf_max_diff == 5e-4


def test_parity_runs_report_both_figures(parity_cases: Any) -> None:
    result = parity_cases.run("qwen3_next", None).result
    assert result.ok, result.message
    assert result.processed_logprobs_max_diff is not None
    assert result.processed_logprobs_max_diff < 1e-10
    assert result.processed_logprobs_vs_hf_max_diff is not None
    assert result.processed_logprobs_vs_hf_max_diff > result.processed_logprobs_max_diff


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_offset_rmsnorm_computes_in_at_least_float32(dtype: torch.dtype) -> None:
    from tlcore.components.norms import RMSNorm

    norm = RMSNorm(8, 1e-6, offset=True, dtype=dtype)
    with torch.no_grad():
        norm.w.copy_(torch.linspace(-0.5, 0.5, 8, dtype=torch.float64).to(dtype))
    x = torch.linspace(-3.0, 2.0, 16, dtype=torch.float64).reshape(2, 8)
    expected = x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * (1 + norm.w.double())
    out = norm(x.to(dtype))
    assert out.dtype == dtype
    tol = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 2e-2}[dtype]
    assert torch.allclose(out.double(), expected, atol=tol, rtol=0)

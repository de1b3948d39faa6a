"""Half precision: tlcore in bfloat16/float16 against HF in the same dtype and the stored snapshots.

The tolerance is HF's own half-precision error (:mod:`tlcore.parity.half`); a model that is wrong
by a few percent fails it. Three specs cover the paths that differ in half precision: GPT-2 (tied
LayerNorm model), Llama (GQA, RMSNorm in float32, rotary) and Mixtral (routing in float32).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity import verify
from tlcore.parity.compare import run_case
from tlcore.parity.half import compare_half, half_tolerance
from tlcore.parity.result import parity_tokens

SPECS = ["gpt2", "llama", "mixtral"]
DTYPES = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def shared_runner(parity_cases) -> Any:
    def runner(spec: Any, variant: str | None = None, **kwargs: Any) -> Any:
        seed = kwargs.get("seed")
        return run_case(
            spec, variant, checkpoint=parity_cases.checkpoint(spec, variant, seed), **kwargs
        )

    return runner


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_half_matches_hf_and_snapshots(dtype: torch.dtype, shared_runner: Any) -> None:
    report = verify(
        SPECS, False, hf=True, processed=True, snapshots="check", runner=shared_runner, dtype=dtype
    )
    for case in report.cases:
        assert case.parity.ok, case.parity.message
        assert case.parity.processed_logprobs_max_diff is not None
        assert case.snapshot is not None and case.snapshot.status == "ok", case.snapshot.message
    assert {c.case.name for c in report.cases} == set(SPECS)


def test_half_model_runs_in_half(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("llama")
    model = HookedTransformer.from_pretrained(str(folder), device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert logits.dtype == torch.bfloat16
    assert cache["blocks.0.hook_resid_post"].dtype == torch.bfloat16


def test_a_wrong_half_model_fails(tiny_checkpoint) -> None:
    """An unembedding off by 2% moves fp16 logits far past HF's own fp16 error."""
    folder, hf_model = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", dtype=torch.float16
    )
    tokens = parity_tokens(model.cfg.d_vocab)
    good, _ = compare_half(model, None, hf_model, tokens, torch.float16, "gpt2", None, False)
    assert good.ok, good.message
    with torch.no_grad():
        model.unembed.W_U.mul_(1.02)
    bad, _ = compare_half(model, None, hf_model, tokens, torch.float16, "gpt2", None, False)
    assert not bad.ok
    assert bad.logits_max_diff > bad.atol


def test_half_tolerance_formula() -> None:
    # 2 x HF's own error + 2 ulps of the dtype at the logits' scale.
    assert half_tolerance(0.1, 16.0, torch.float16) == pytest.approx(0.2 + 16 * 2**-9)
    assert half_tolerance(0.0, 64.0, torch.bfloat16) == pytest.approx(1.0)

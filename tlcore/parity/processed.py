"""The parity tool's processed check: weight processing changes no prediction.

Weight processing (``fold_ln``, centring, ``fold_value_biases``) is exact maths, so its reference
is the same tlcore checkpoint loaded *without* processing, both in float64: their log-softmax
agree to float64 rounding (~1e-12 on the tiny checkpoints) unless a processing step is wrong. The
unprocessed model's agreement with HuggingFace is what the rest of the parity run proves (fp32
logits and every layer), so the two checks chain to HF without borrowing its numerical noise.

HuggingFace's float64 model is not a float64 reference for every spec: Qwen3-Next's gated RMSNorm
and delta rule, T5's norms and others cast to float32 inside, which put the old reference (HF cast
to float64) ~1e-4 from exact maths on some tiny checkpoints. Its distance is still reported,
as information (``processed_logprobs_vs_hf_max_diff``), never judged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Int
from torch import nn

from tlcore.parity.result import ParityResult


def processed_diffs(
    load: Callable[[bool], Any],
    hf_model: nn.Module | None,
    tokens: Int[torch.Tensor, "batch pos"],
) -> tuple[float, float | None]:
    """Max abs log-softmax difference of the processed model from its references, in float64.

    Args:
        load: ``load(processed) -> HookedTransformer`` in float64 (the same checkpoint, with or
            without ``from_pretrained``'s default processing).
        hf_model: The HF reference (not modified: a float64 copy runs), or None to skip the
            informational HF figure.
        tokens: ``[batch, pos]``.

    Returns:
        ``(vs tlcore unprocessed, vs HF cast to float64 or None)``.

    Example:
        >>> from tlcore.testing.tiny import build_tiny_hf_model
        >>> from tlcore.registry import get_registry
        >>> from tlcore.model import HookedTransformer
        >>> hf = build_tiny_hf_model(get_registry().get_spec("llama"))
        >>> def load(processed):
        ...     kind = "from_pretrained" if processed else "from_pretrained_no_processing"
        ...     return getattr(HookedTransformer, kind)(
        ...         "llama", hf_model=hf, device="cpu", dtype=torch.float64)
        >>> exact, vs_hf = processed_diffs(load, hf, torch.tensor([[1, 2, 3, 4]]))
        >>> exact < 1e-10, vs_hf is not None
        (True, True)
    """
    with torch.no_grad():
        ours = load(True)(tokens).log_softmax(-1)
        ref = load(False)(tokens).log_softmax(-1)
        vs_hf = None
        if hf_model is not None:
            # A copy: the HF model may be shared (a session's parity cases) and must stay fp32.
            hf64 = copy.deepcopy(hf_model).to(torch.float64)
            vs_hf = float((ours - hf64(tokens).logits.log_softmax(-1)).abs().max())
    return float((ours - ref).abs().max()), vs_hf


def judge_processed(result: ParityResult, exact: float, vs_hf: float | None) -> None:
    """Record the processed check on ``result``; it fails when ``exact`` exceeds ``result.atol``.

    Args:
        result: The case's result (updated in place; a case already failing keeps its first
            divergence).
        exact: Processed vs unprocessed log-softmax max abs diff (float64).
        vs_hf: Processed vs HF (cast to float64) log-softmax max abs diff, for information.
    """
    result.processed_logprobs_max_diff = exact
    result.processed_logprobs_vs_hf_max_diff = vs_hf
    if exact > result.atol and result.ok:
        result.ok = False
        result.first_hook = "weight processing"
        result.first_divergence = (
            f"weight processing (processed vs unprocessed log-softmax max diff {exact:.3g}, "
            "float64)"
        )
        result.message = f"{result.name}: {result.first_divergence}"

"""Half-precision parity: tlcore in bfloat16/float16 against HuggingFace in the same dtype.

Both libraries round differently inside a forward pass (summation order, where a product is
rounded), so half-precision logits never agree to fp32's 1e-4. The yardstick is HF's own rounding
error: on the same checkpoint and tokens, HF in the half dtype differs from HF in float32 by
``e_ref = max|HF_half - HF_fp32|``. tlcore passes when

    ``max|tlcore_half - HF_half| <= HALF_FACTOR * e_ref + HALF_FLOOR[dtype] * max|HF_fp32|``

that is, tlcore's half-precision model is no further from HF's than twice the distance HF's own
half-precision model keeps from exact arithmetic, plus a floor of a few units in the last place
at the logits' scale (for a case where HF's own error happens to be tiny). The processed model
(``from_pretrained``'s default, processing in float64 then one rounding) is judged the same way
on log-probabilities. Mixture-of-experts routers pick experts from rounded router logits; a fold
moves that rounding, so a near-tie can route a token differently (as in TransformerLens): for the
processed comparison of a model with a routed MLP, the fraction of positions that agree is
reported and judged instead (:data:`MOE_AGREEMENT`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from tlcore.parity.result import ParityResult

HALF_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""The half dtypes the parity tool checks, by name."""

HALF_FACTOR = 2.0
"""tlcore may be this many times HF's own half-vs-float32 error away from HF's half logits."""

HALF_FLOOR: dict[torch.dtype, float] = {torch.bfloat16: 2.0**-6, torch.float16: 2.0**-9}
"""A floor, relative to the largest fp32 logit: two units in the last place of each dtype."""

MOE_AGREEMENT = 0.75
"""Processed routed-MLP models: positions whose log-probs pass must be at least this fraction."""


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a torch dtype (``bfloat16``).

    Args:
        dtype: A torch dtype.

    Returns:
        The name without ``torch.``.

    Example:
        >>> dtype_name(torch.bfloat16)
        'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def half_tolerance(reference_error: float, scale: float, dtype: torch.dtype) -> float:
    """The allowed max abs difference from HF in a half dtype (see the module docstring).

    Args:
        reference_error: ``max|HF_half - HF_fp32|`` on the same quantity.
        scale: ``max|HF_fp32 logits|``.
        dtype: The half dtype.

    Returns:
        The tolerance.

    Example:
        >>> half_tolerance(0.25, 32.0, torch.bfloat16)
        1.0
    """
    return HALF_FACTOR * reference_error + HALF_FLOOR[dtype] * scale


def _routed(model: Any) -> bool:
    traits = getattr(model.cfg, "traits", {}).values()
    return any(type(trait).routes_tokens for trait in traits)


def _judge(diff: torch.Tensor, tol: float, routed: bool, what: str) -> tuple[bool, str]:
    """``diff``: per-position max abs differences. Returns ``(ok, why not)``."""
    worst = float(diff.max())
    if routed:
        agree = float((diff <= tol).float().mean())
        return agree >= MOE_AGREEMENT, (
            f"{what}: {agree:.0%} of positions within {tol:.3g} (< {MOE_AGREEMENT:.0%}; "
            f"max diff {worst:.3g})"
        )
    return worst <= tol, f"{what} max diff {worst:.3g} > {tol:.3g}"


def compare_half(
    model: Any,
    load_processed: Any,
    hf_model: torch.nn.Module,
    tokens: torch.Tensor,
    dtype: torch.dtype,
    spec_name: str,
    variant: str | None,
    processed: bool,
) -> tuple[ParityResult, torch.Tensor]:
    """Compare tlcore and HF in ``dtype`` on ``tokens``.

    Args:
        model: tlcore's unprocessed model in ``dtype``.
        load_processed: ``() -> HookedTransformer``: the processed model in ``dtype``.
        hf_model: The HF reference in float32 (not modified: a copy is cast).
        tokens: ``[batch, pos]``.
        dtype: bfloat16 or float16.
        spec_name: For the report.
        variant: For the report.
        processed: Also judge the processed model's log-probs.

    Returns:
        ``(result, tlcore's unprocessed logits in dtype, as float32)``.
    """
    from tlcore.parity.result import case_label

    with torch.no_grad():
        ref32 = hf_model(tokens).logits.float()
        hf_half = copy.deepcopy(hf_model).to(dtype)
        ref = hf_half(tokens).logits.float()
        ours = model(tokens).float()
    scale = float(ref32.abs().max())
    error = float((ref - ref32).abs().max())
    diff = float((ours - ref).abs().max())
    tol = half_tolerance(error, scale, dtype)
    routed = _routed(model)
    ok, why = _judge((ours - ref).abs().amax(-1), tol, routed, "logits")
    label = case_label(spec_name, variant)
    first = None if ok else f"{why}; HF's own error {error:.3g}"
    result = ParityResult(
        spec_name,
        variant,
        ok,
        diff,
        float((ours.log_softmax(-1) - ref.log_softmax(-1)).abs().max()),
        atol=tol,
        first_divergence=first,
        first_hook=None if ok else "logits",
        message="ok" if ok else f"{label}: {dtype_name(dtype)} {first}",
    )
    if processed:
        with torch.no_grad():
            lp = load_processed()(tokens).float().log_softmax(-1)
        lp_ref, lp32 = ref.log_softmax(-1), ref32.log_softmax(-1)
        lp_tol = half_tolerance(float((lp_ref - lp32).abs().max()), scale, dtype)
        per_position = (lp - lp_ref).abs().amax(-1)
        result.processed_logprobs_max_diff = float(per_position.max())
        good, why = _judge(per_position, lp_tol, routed, "log-probs")
        if not good and result.ok:
            result.ok = False
            result.first_hook = "weight processing"
            result.first_divergence = f"weight processing ({why})"
            result.message = f"{label}: {dtype_name(dtype)} {result.first_divergence}"
    return result, ours


def half_result(
    model: Any,
    load_processed: Any,
    hf_model: torch.nn.Module,
    tokens: torch.Tensor,
    dtype: torch.dtype,
    case: tuple[str, str | None],
    *,
    hf: bool,
    processed: bool,
) -> tuple[ParityResult, torch.Tensor]:
    """The parity tool's half-precision case: :func:`compare_half`, or tlcore's logits alone.

    Args:
        model: tlcore's unprocessed model in ``dtype``.
        load_processed: ``() -> HookedTransformer``: the processed model in ``dtype``.
        hf_model: The HF reference in float32.
        tokens: ``[batch, pos]``.
        dtype: bfloat16 or float16.
        case: ``(spec name, variant)``.
        hf: Compare with HF (otherwise only tlcore's logits, for a snapshot check).
        processed: Also judge the processed model.

    Returns:
        ``(result, tlcore's logits as float32)``.
    """
    if hf:
        return compare_half(model, load_processed, hf_model, tokens, dtype, *case, processed)
    with torch.no_grad():
        logits = model(tokens).float()
    return ParityResult(case[0], case[1], True, float("nan"), message="ok"), logits

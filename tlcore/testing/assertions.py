"""Parity assertions for tests: raise with the first divergence instead of returning a result."""

from __future__ import annotations

from typing import Any

from tlcore.parity.compare import compare_spec
from tlcore.parity.result import ParityResult
from tlcore.spec.schema import ArchitectureSpec


def assert_parity(
    spec: ArchitectureSpec | str,
    variant: str | None = None,
    *,
    atol: float | None = None,
    processed: bool = True,
    **kwargs: Any,
) -> ParityResult:
    """Assert that a registered spec matches HF on its tiny seeded checkpoint.

    Builds the HF model of the spec's ``test_config`` (plus ``test_variants[variant]``), fills it
    from tlcore's seeded generator, saves it, loads it back through tlcore's real loader and
    compares logits, every layer's residual stream and (``processed``) the processed model's
    log-softmax (:func:`tlcore.parity.compare_spec`).

    The spec must be registered (by an installed plugin or the ``tlcore_plugin`` fixture): loading
    the checkpoint picks its spec from the HF config, as ``from_pretrained`` does.

    Args:
        spec: The spec or its architecture name.
        variant: A key of the spec's ``test_variants``.
        atol: Tolerance (default: the spec's ``parity.atol``).
        processed: Also compare the processed model (``from_pretrained`` defaults).
        **kwargs: Passed to :func:`~tlcore.parity.compare_spec` (``seed``, ``workdir``, ...).

    Returns:
        The passing result (its diffs, for reports).

    Raises:
        AssertionError: Naming the first diverging layer and hook, with the diffs.
    """
    result = compare_spec(spec, variant, atol=atol, processed=processed, **kwargs)
    if not result.ok:
        layers = ", ".join(f"{d:.3g}" for d in result.layer_max_diffs)
        raise AssertionError(
            f"parity failed: {result.message}\n"
            f"  atol {result.atol:g}; embed diff {result.embed_max_diff}; per-layer resid_post "
            f"diffs [{layers}]; logits diff {result.logits_max_diff:.3g}; processed "
            f"log-softmax diff {result.processed_logprobs_max_diff}"
        )
    return result

"""Compare a tlcore model with its HuggingFace reference: logits, log-probs and every layer.

``compare_spec`` builds the HF model of a spec's tiny test config, fills it from tlcore's own
seeded generator, writes it with ``save_pretrained``, loads it back through tlcore's real loader
and compares on a fixed token batch. On a mismatch the result names the first diverging layer and
the first diverging hook inside it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import nn

from tlcore.encoder_specs import encoder_specs
from tlcore.errors import SpecError
from tlcore.model import HookedTransformer
from tlcore.parity.encoders import compare_encoder, encoder_inputs, is_encoder_spec, load_encoder
from tlcore.parity.half import half_result
from tlcore.parity.probes import capture, decoder_layers, norm_output_probe, probe_layer
from tlcore.parity.processed import judge_processed, processed_diffs
from tlcore.parity.result import DEFAULT_ATOL, ParityResult, case_label, parity_tokens
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec
from tlcore.testing.tiny import DEFAULT_SEED, save_tiny_checkpoint

__all__ = [
    "CaseRun",
    "ParityResult",
    "case_label",
    "compare_model",
    "compare_spec",
    "parity_tokens",
    "probe_layer",
    "run_case",
]


def _hf_layer_io(
    hf_model: nn.Module, n_layers: int, tokens: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, nn.Module | None, torch.Tensor | None]:
    """Run HF: the first layer's input, every layer's output, logits, ``lm_head`` and its input."""
    layers = decoder_layers(hf_model, n_layers)
    targets = {"in": (layers[0], "input")}
    targets.update({f"out{i}": (layer, "output") for i, layer in enumerate(layers)})
    get_head = getattr(hf_model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, nn.Module):
        targets["head_in"] = (head, "input")
    else:
        head = None
    with capture(targets) as captured, torch.no_grad():
        logits = hf_model(tokens).logits
    return (
        captured["in"],
        [captured[f"out{i}"] for i in range(n_layers)],
        logits,
        head,
        captured.get("head_in"),
    )


def compare_model(
    model: Any,
    hf_model: nn.Module,
    tokens: Int[torch.Tensor, "batch pos"],
    atol: float = DEFAULT_ATOL,
    spec_name: str = "?",
    variant: str | None = None,
) -> ParityResult:
    """Compare an unprocessed tlcore model with an HF model on ``tokens``.

    Args:
        model: A :class:`tlcore.HookedTransformer` loaded without processing.
        hf_model: The HF reference (fp32, eager attention).
        tokens: ``[batch, pos]`` tokens.
        atol: Tolerance on logits and residual streams.
        spec_name: For the report.
        variant: For the report.

    Returns:
        The result (``ok`` false names the first diverging layer and hook).
    """
    return _compare_model(model, hf_model, tokens, atol, spec_name, variant)[0]


def _compare_model(
    model: Any,
    hf_model: nn.Module,
    tokens: torch.Tensor,
    atol: float,
    spec_name: str,
    variant: str | None,
) -> tuple[ParityResult, torch.Tensor]:
    """:func:`compare_model`, also returning tlcore's logits (for snapshots)."""
    n_layers = model.cfg.n_layers
    hf_in, hf_out, hf_logits, hf_head, hf_head_in = _hf_layer_io(hf_model, n_layers, tokens)
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_normalized"]
    names += [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    names = [n for n in names if n in model.hook_dict]  # post-norm models have no ln_final
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    embed_diff = float((cache["blocks.0.hook_resid_pre"] - hf_in).abs().max())
    layer_diffs = [
        float((cache[f"blocks.{i}.hook_resid_post"] - hf_out[i]).abs().max())
        for i in range(n_layers)
    ]
    logit_diff = float((logits - hf_logits).abs().max())
    logprob_diff = float((logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max())
    first, hook = None, None
    if embed_diff > atol:
        hook = "blocks.0.hook_resid_pre"
        first = f"{hook} (embedding; max diff {embed_diff:.3g})"
    else:
        for i, diff in enumerate(layer_diffs):
            if diff > atol:
                inner = [(n, d) for n, d in probe_layer(model, hf_model, tokens, i) if d > atol]
                if inner:
                    hook = inner[0][0]
                    first = (
                        f"{hook} (max diff {inner[0][1]:.3g}; "
                        f"blocks.{i}.hook_resid_post max diff {diff:.3g})"
                    )
                else:
                    hook = f"blocks.{i}.hook_resid_post"
                    first = f"{hook} (max diff {diff:.3g}; no finer hook located)"
                break
    if first is None and logit_diff > atol:
        hook, first = "unembed", f"unembed (logits max diff {logit_diff:.3g})"
        probe = None
        if hf_head is not None:
            probe = norm_output_probe("ln_final", model.ln_final, hf_head, "input")
        if probe is not None and hf_head_in is not None and probe.hooks[0] in cache.cache_dict:
            with torch.no_grad():
                ours = probe.value(cache)
            if ours.shape == hf_head_in.shape:
                diff = float((ours - hf_head_in).abs().max())
                if diff > atol:
                    hook, first = probe.place, f"{probe.place} (max diff {diff:.3g})"
    ok = first is None
    label = case_label(spec_name, variant)
    message = "ok" if ok else f"{label}: first divergence at {first}"
    result = ParityResult(
        spec_name,
        variant,
        ok,
        logit_diff,
        logprob_diff,
        None,
        layer_diffs,
        embed_diff,
        first,
        atol,
        message,
        first_hook=hook,
    )
    return result, logits.detach()


# -- spec-level comparison -----------------------------------------------------------------------


def _resolve_spec(spec: ArchitectureSpec | str) -> ArchitectureSpec:
    if isinstance(spec, str) and spec not in get_registry().specs and spec in encoder_specs():
        return encoder_specs()[spec]
    return get_registry().get_spec(spec) if isinstance(spec, str) else spec


def _registered_as_is(spec: ArchitectureSpec) -> bool:
    """Whether ``spec`` is the registered spec of its name (same content)."""
    registry = get_registry()
    if spec.name not in registry.specs:
        return False
    try:
        return registry.get_spec(spec.name).content_hash() == spec.content_hash()
    except Exception:  # noqa: BLE001 - a broken registered spec: use the given one instead
        return False


@dataclass
class CaseRun:
    """Everything one tiny-checkpoint run produced (the parity tool shares it across outputs)."""

    result: ParityResult
    tokens: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_case(
    spec: ArchitectureSpec | str,
    variant: str | None = None,
    *,
    hf: bool = True,
    processed: bool = True,
    atol: float | None = None,
    seed: int | None = None,
    tokens: torch.Tensor | None = None,
    workdir: str | Path | None = None,
    attn_implementation: str | None = None,
    inspect: Callable[[Any, torch.Tensor], dict[str, Any]] | None = None,
    checkpoint: tuple[str | Path, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> CaseRun:
    """Build a spec's tiny checkpoint once and derive everything the parity tool needs from it.

    Args:
        spec: A spec or an architecture name.
        variant: A named test variant.
        hf: Run the HF forward and compare (otherwise only tlcore's logits are produced).
        processed: Also compare the processed model's log-softmax (needs ``hf``).
        atol: Tolerance (default: the spec's ``parity.atol``).
        seed: Weight-fill seed (default :data:`tlcore.testing.tiny.DEFAULT_SEED`).
        tokens: Token batch (default: :func:`parity_tokens`).
        workdir: Where to write the checkpoint (default: a temporary folder).
        attn_implementation: HF reference attention (default: the spec's ``parity`` settings).
        inspect: ``inspect(model, tokens) -> dict`` called on the loaded unprocessed model; its
            answer is returned in ``extra``.
        checkpoint: ``(folder, hf_model)`` of this case already written with ``seed`` (a test
            session's shared checkpoint); ``workdir`` and ``attn_implementation`` are then unused.
        dtype: Load tlcore in this dtype. A half dtype compares with HF cast to it, judged
            against HF's own half-precision error (:mod:`tlcore.parity.half`); the logits
            returned (for snapshots) are then that dtype's, as float32.

    Returns:
        The run (``result.ok`` is true when ``hf`` is false and the model ran).

    Raises:
        SpecError: If the spec's own test config resolves to a different spec.
    """
    start = time.perf_counter()
    spec = _resolve_spec(spec)
    atol = spec.parity.atol if atol is None else atol
    attn_implementation = attn_implementation or spec.parity.attn_for(variant)
    seed = DEFAULT_SEED if seed is None else seed
    with contextlib.ExitStack() as stack:
        if checkpoint is not None:
            folder, hf_model = Path(checkpoint[0]), checkpoint[1]
        else:
            folder = (
                Path(workdir)
                if workdir is not None
                else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlcore-parity-")))
            )
            _, hf_model = save_tiny_checkpoint(
                spec, folder, variant, seed, attn_implementation=attn_implementation
            )
        if is_encoder_spec(spec):  # HookedEncoder / HookedEncoderDecoder: no weight processing
            return _run_encoder_case(spec, variant, folder, hf_model, hf, atol, tokens, start)
        # A registered spec loads through the real resolution path (hf.model_types, hf.match,
        # priorities), which must pick it; any other spec object is handed to the loader.
        given = None if _registered_as_is(spec) else spec
        model = HookedTransformer.from_pretrained_no_processing(
            str(folder), device="cpu", spec=given, dtype=dtype
        )
        if model.cfg.spec_name != spec.name:
            raise SpecError(
                f"spec '{spec.name}': the test config of {case_label(spec.name, variant)} "
                f"resolves to spec '{model.cfg.spec_name}' (check hf.match / hf.priority)"
            )
        tokens = parity_tokens(model.cfg.d_vocab) if tokens is None else tokens
        if dtype != torch.float32:
            result, logits = half_result(
                model,
                lambda: HookedTransformer.from_pretrained(
                    str(folder), device="cpu", spec=given, dtype=dtype
                ),
                hf_model,
                tokens,
                dtype,
                (spec.name, variant),
                hf=hf,
                processed=processed,
            )
            result.spec_hash = spec.content_hash()
            result.seconds = time.perf_counter() - start
            return CaseRun(result, tokens, logits.detach())
        if hf:
            result, _ = _compare_model(model, hf_model, tokens, atol, spec.name, variant)
        else:
            result = ParityResult(spec.name, variant, True, float("nan"), atol=atol, message="ok")
        # Snapshots store a plain forward (not run_with_cache's logits): writing and checking
        # must take the same numerical path, which differs from the cached one by fp32 noise.
        with torch.no_grad():
            logits = model(tokens).detach()
        if hf and processed:
            # Processing is exact maths: judged against the same checkpoint unprocessed, both
            # in float64 (tlcore.parity.processed); HF's float64 distance is information only.
            exact, vs_hf = processed_diffs(
                lambda done: (
                    HookedTransformer.from_pretrained
                    if done
                    else HookedTransformer.from_pretrained_no_processing
                )(str(folder), device="cpu", spec=given, dtype=torch.float64),
                hf_model,
                tokens,
            )
            judge_processed(result, exact, vs_hf)
        extra = inspect(model, tokens) if inspect is not None else {}
    result.spec_hash = spec.content_hash()
    result.seconds = time.perf_counter() - start
    return CaseRun(result, tokens, logits, extra)


def _run_encoder_case(
    spec: ArchitectureSpec,
    variant: str | None,
    folder: Path,
    hf_model: Any,
    hf: bool,
    atol: float,
    tokens: torch.Tensor | None,
    start: float,
) -> CaseRun:
    """:func:`run_case` for an encoder spec (the encoder table resolves the checkpoint)."""
    model = load_encoder(str(folder), hf_model)
    if model.cfg.spec_name != spec.name:
        raise SpecError(
            f"spec '{spec.name}': the test config of {case_label(spec.name, variant)} "
            f"resolves to spec '{model.cfg.spec_name}' (check hf.match / hf.priority)"
        )
    tokens = parity_tokens(model.cfg.d_vocab) if tokens is None else tokens
    if hf:
        # from_pretrained applies no weight processing to encoders (as TransformerLens's): there
        # is no processed model, so no processed check (processed_logprobs_max_diff stays None).
        result, _ = compare_encoder(model, hf_model, tokens, atol, spec.name, variant)
    else:
        result = ParityResult(spec.name, variant, True, float("nan"), atol=atol, message="ok")
    with torch.no_grad():
        logits = model(tokens, **encoder_inputs(model, tokens)).detach()
    result.spec_hash = spec.content_hash()
    result.seconds = time.perf_counter() - start
    return CaseRun(result, tokens, logits)


def compare_spec(
    spec: ArchitectureSpec | str,
    variant: str | None = None,
    atol: float | None = None,
    workdir: str | Path | None = None,
    processed: bool = True,
    seed: int | None = None,
    attn_implementation: str | None = None,
) -> ParityResult:
    """Prove a spec against HF on its tiny test config, through tlcore's real loading path.

    A spec object that is not registered (or differs from the registered one of its name) is
    handed to the loader directly (``from_pretrained(..., spec=...)``), so plugin authors and
    mutation tests can check a spec before shipping it.

    Args:
        spec: A spec or an architecture name.
        variant: A named test variant.
        atol: Tolerance (default: the spec's ``parity.atol``, 1e-4).
        workdir: Where to write the checkpoint (default: a temporary folder).
        processed: Also compare the processed model's log-softmax (``from_pretrained`` defaults).
        seed: Weight-fill seed.
        attn_implementation: HF reference attention (default: the spec's ``parity`` settings).

    Returns:
        The result.
    """
    return run_case(
        spec,
        variant,
        hf=True,
        processed=processed,
        atol=atol,
        seed=seed,
        workdir=workdir,
        attn_implementation=attn_implementation,
    ).result

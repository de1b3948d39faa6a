"""Compare a tlcore model with its HuggingFace reference: logits, log-probs and every layer.

``compare_spec`` builds the HF model of a spec's tiny test config, fills it from tlcore's own seeded
generator, writes it with ``save_pretrained``, loads it back through tlcore's real loader and compares
on a fixed token batch. On a mismatch the result names the first diverging layer and hook.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcore.spec.schema import ArchitectureSpec

DEFAULT_ATOL = 1e-4
TOKEN_SEED = 0


@dataclass
class ParityResult:
    """Outcome of one comparison (all diffs are max absolute differences, fp32)."""

    spec: str
    variant: str | None
    ok: bool
    logits_max_diff: float
    logprobs_max_diff: float | None = None
    processed_logprobs_max_diff: float | None = None
    layer_max_diffs: list[float] = field(default_factory=list)
    embed_max_diff: float | None = None
    first_divergence: str | None = None
    atol: float = DEFAULT_ATOL
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns:
            The fields.
        """
        return asdict(self)


def parity_tokens(d_vocab: int, batch: int = 2, pos: int = 12, seed: int = TOKEN_SEED) -> torch.Tensor:
    """The fixed token batch parity runs on (long enough for the test configs' sliding windows).

    Args:
        d_vocab: Vocabulary size.
        batch: Batch size.
        pos: Sequence length.
        seed: Seed.

    Returns:
        ``[batch, pos]`` token ids.

    Example:
        >>> parity_tokens(100, 1, 4).shape
        torch.Size([1, 4])
    """
    return torch.randint(0, d_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _decoder_layers(hf_model: nn.Module, n_layers: int) -> nn.ModuleList:
    lists = [m for _, m in hf_model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if not lists:
        raise RuntimeError(f"cannot find the HF model's list of {n_layers} decoder layers")
    return lists[0]


def _hf_layer_io(hf_model: nn.Module, n_layers: int, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Run HF, capturing the first layer's input and every layer's output."""
    layers = _decoder_layers(hf_model, n_layers)
    captured: dict[str, Any] = {"out": [None] * n_layers}

    def pre_hook(module: nn.Module, args: Any, kwargs: Any) -> None:
        captured["in"] = args[0] if args else kwargs["hidden_states"]

    def make_hook(i: int):  # noqa: ANN202
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured["out"][i] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    handles += [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            logits = hf_model(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    return captured["in"], captured["out"], logits


def compare_model(model: Any, hf_model: nn.Module, tokens: torch.Tensor, atol: float = DEFAULT_ATOL,
                  spec_name: str = "?", variant: str | None = None) -> ParityResult:
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
    n_layers = model.cfg.n_layers
    hf_in, hf_out, hf_logits = _hf_layer_io(hf_model, n_layers, tokens)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    embed_diff = float((cache["blocks.0.hook_resid_pre"] - hf_in).abs().max())
    layer_diffs = [float((cache[f"blocks.{i}.hook_resid_post"] - hf_out[i]).abs().max()) for i in range(n_layers)]
    logit_diff = float((logits - hf_logits).abs().max())
    logprob_diff = float((logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max())
    first = None
    if embed_diff > atol:
        first = f"hook_embed / blocks.0.hook_resid_pre (max diff {embed_diff:.3g})"
    else:
        for i, diff in enumerate(layer_diffs):
            if diff > atol:
                first = f"blocks.{i} ({_first_hook_in_layer(model, hf_model, tokens, i)}; " \
                        f"hook_resid_post max diff {diff:.3g})"
                break
    if first is None and logit_diff > atol:
        first = f"ln_final / unembed (logits max diff {logit_diff:.3g})"
    ok = first is None
    message = "ok" if ok else f"{spec_name}{'/' + variant if variant else ''}: first divergence at {first}"
    return ParityResult(spec_name, variant, ok, logit_diff, logprob_diff, None, layer_diffs, embed_diff,
                        first, atol, message)


def _first_hook_in_layer(model: Any, hf_model: nn.Module, tokens: torch.Tensor, layer: int) -> str:
    """Locate the sub-part of a diverging layer: attention or MLP output, by HF submodule names."""
    hf_layer = _decoder_layers(hf_model, model.cfg.n_layers)[layer]
    parts = {"attn": ("self_attn", "attn", "attention", "self_attention"),
             "mlp": ("mlp", "feed_forward", "block_sparse_moe")}
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for part, candidates in parts.items():
        for cand in candidates:
            sub = getattr(hf_layer, cand, None)
            if isinstance(sub, nn.Module):
                def hook(module: nn.Module, args: Any, output: Any, part: str = part) -> None:
                    captured[part] = output[0] if isinstance(output, tuple) else output
                handles.append(sub.register_forward_hook(hook))
                break
    try:
        with torch.no_grad():
            hf_model(tokens)
            _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{layer}.hook_attn_out",
                                                                  f"blocks.{layer}.hook_mlp_out"])
    finally:
        for handle in handles:
            handle.remove()
    for part, hook_name in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
        if part in captured:
            ours = cache[f"blocks.{layer}.{hook_name}"]
            if ours.shape == captured[part].shape:
                diff = float((ours - captured[part]).abs().max())
                if diff > DEFAULT_ATOL:
                    return f"first hook: blocks.{layer}.{hook_name}, max diff {diff:.3g}"
    return "first hook: not located below the layer output"


def compare_spec(spec: ArchitectureSpec | str, variant: str | None = None, atol: float | None = None,
                 workdir: str | Path | None = None, processed: bool = True, seed: int | None = None,
                 attn_implementation: str | None = None) -> ParityResult:
    """Prove a spec against HF on its tiny test config, through tlcore's real loading path.

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
    from tlcore.model import HookedTransformer
    from tlcore.registry import get_registry
    from tlcore.testing.tiny import DEFAULT_SEED, save_tiny_checkpoint

    if isinstance(spec, str):
        spec = get_registry().get_spec(spec)
    atol = spec.parity.atol if atol is None else atol
    attn_implementation = attn_implementation or spec.parity.attn_for(variant)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        _, hf_model = save_tiny_checkpoint(spec, folder, variant, seed if seed is not None else DEFAULT_SEED,
                                           attn_implementation=attn_implementation)
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
        tokens = parity_tokens(model.cfg.d_vocab)
        result = compare_model(model, hf_model, tokens, atol, spec.name, variant)
        if processed:
            processed_model = HookedTransformer.from_pretrained(str(folder), device="cpu")
            with torch.no_grad():
                ours = processed_model(tokens).log_softmax(-1)
                ref = hf_model(tokens).logits.log_softmax(-1)
            diff = float((ours - ref).abs().max())
            result.processed_logprobs_max_diff = diff
            if diff > atol and result.ok:
                result.ok = False
                result.first_divergence = f"weight processing (processed log-softmax max diff {diff:.3g})"
                result.message = f"{spec.name}: {result.first_divergence}"
    return result

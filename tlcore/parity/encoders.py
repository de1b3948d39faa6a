"""Parity of encoder and encoder-decoder specs: the parity tool's path for ``specs/encoders``.

The tiny checkpoint is built as for a decoder (the spec's ``parity.hf_auto_class`` names the HF
class), loaded with :class:`~tlcore.hooked_encoder.HookedEncoder` or
:class:`~tlcore.hooked_encoder_decoder.HookedEncoderDecoder`, and compared with HF on the logits and
on every layer's output, read from HF's own ``output_hidden_states``. Which hook holds a layer's
output is the block trait's declaration (:attr:`~tlcore.components.block.BlockTrait.output_hook`:
``hook_normalized_resid_post`` for BERT's post-norm blocks). An encoder-decoder's decoder reads
the parity tokens too, so its logits have the tokens' shape (what a snapshot stores).
"""

from __future__ import annotations

from typing import Any

import torch

from tlcore.encoder_specs import encoder_specs
from tlcore.parity.result import ParityResult, case_label
from tlcore.spec.schema import ArchitectureSpec


def is_encoder_spec(spec: ArchitectureSpec) -> bool:
    """Whether ``spec`` is one of the encoder table's specs (``specs/encoders``).

    Returns:
        True for ``bert``, ``t5``...

    Example:
        >>> is_encoder_spec(encoder_specs()["bert"])
        True
    """
    known = encoder_specs().get(spec.name)
    return known is not None and known.content_hash() == spec.content_hash()


def encoder_inputs(model: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The keyword inputs of a parity run: the decoder's tokens for an encoder-decoder.

    Args:
        model: The loaded tlcore model.
        tokens: The parity tokens ``[batch, pos]``.

    Returns:
        ``{"decoder_input": tokens}`` for an encoder-decoder, else ``{}``.
    """
    if hasattr(model, "decoder"):
        return {"decoder_input": tokens}
    return {}


def _stacks(model: Any) -> list[tuple[str, int, str, Any]]:
    """``(hook prefix, layers, output hook, final norm)`` per stack, in HF's order.

    The output hook is the block trait's declaration.
    """
    cfg = model.cfg
    if hasattr(model, "decoder"):
        return [
            ("encoder", len(model.encoder), cfg.trait("block").output_hook, model.encoder_final_ln),
            (
                "decoder",
                len(model.decoder),
                cfg.trait("decoder_block").output_hook,
                model.decoder_final_ln,
            ),
        ]
    return [("blocks", len(model.blocks), cfg.trait("block").output_hook, None)]


def compare_encoder(
    model: Any,
    hf_model: Any,
    tokens: torch.Tensor,
    atol: float,
    spec_name: str,
    variant: str | None,
) -> tuple[ParityResult, torch.Tensor]:
    """Compare a tlcore encoder (or encoder-decoder) with HF: logits and every layer's output.

    Args:
        model: The loaded tlcore model.
        hf_model: The HF reference.
        tokens: ``[batch, pos]``.
        atol: Tolerance.
        spec_name: For the report.
        variant: For the report.

    Returns:
        The result (layer diffs: the encoder's layers, then the decoder's) and tlcore's logits.
    """
    extra = encoder_inputs(model, tokens)
    hf_kwargs = {"decoder_input_ids": extra["decoder_input"]} if extra else {}
    with torch.no_grad():
        out = hf_model(input_ids=tokens, output_hidden_states=True, **hf_kwargs)
        logits, cache = model.run_with_cache(tokens, **extra)
    hidden = (
        [out.encoder_hidden_states, out.decoder_hidden_states] if extra else [out.hidden_states]
    )
    layer_diffs, first = [], None
    for (prefix, n_layers, output_hook, final_norm), states in zip(
        _stacks(model), hidden, strict=True
    ):
        for i in range(n_layers):
            hook = f"{prefix}.{i}.{output_hook}"
            ours = cache[hook]
            if i == n_layers - 1 and final_norm is not None:  # HF reports it normalised
                with torch.no_grad():
                    ours = final_norm(ours)
            diff = float((ours - states[i + 1]).abs().max())
            layer_diffs.append(diff)
            if first is None and diff > atol:
                first = f"{hook} (max diff {diff:.3g})"
    logit_diff = float((logits - out.logits).abs().max())
    logprob_diff = float((logits.log_softmax(-1) - out.logits.log_softmax(-1)).abs().max())
    if first is None and logit_diff > atol:
        first = f"unembed (logits max diff {logit_diff:.3g})"
    label = case_label(spec_name, variant)
    result = ParityResult(
        spec_name,
        variant,
        first is None,
        logit_diff,
        logprob_diff,
        None,
        layer_diffs,
        None,
        first,
        atol,
        "ok" if first is None else f"{label}: first divergence at {first}",
        first_hook=None if first is None else first.split(" ")[0],
    )
    return result, logits.detach()


def load_encoder(folder: str, hf_model: Any) -> Any:
    """Load a tiny encoder checkpoint: an encoder-decoder when its HF config says so.

    Args:
        folder: The checkpoint.
        hf_model: The HF model it was saved from.

    Returns:
        The model (CPU, float32).
    """
    from tlcore.hooked_encoder import HookedEncoder
    from tlcore.hooked_encoder_decoder import HookedEncoderDecoder

    cls: Any = HookedEncoderDecoder if hf_model.config.is_encoder_decoder else HookedEncoder
    return cls.from_pretrained(folder, device="cpu")

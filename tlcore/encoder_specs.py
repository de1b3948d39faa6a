"""Architecture specs of encoders and encoder-decoders (``specs/encoders/``).

They are written, validated and resolved exactly as decoder specs are (same schema, trait kinds,
expressions, weight ops and config guard); only the table differs. ``HookedTransformer`` resolves a
checkpoint among the decoder specs of the registry, :class:`~tlcore.hooked_encoder.HookedEncoder`
and :class:`~tlcore.hooked_encoder_decoder.HookedEncoderDecoder` among these, so a BERT or T5
checkpoint never loads as a decoder and decoder-wide checks (generation, causal-LM parity) never
meet an encoder.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from tlcore.builtin.plugin import specs_dir
from tlcore.errors import UnknownArchitectureError
from tlcore.registry import get_registry
from tlcore.spec.loader import merge_extends, read_spec_file, validate_spec
from tlcore.spec.schema import ArchitectureSpec


def encoder_specs_dir() -> Path:
    """The folder of the built-in encoder specs.

    Returns:
        ``specs/encoders`` (``_specs/encoders`` in a wheel).
    """
    return specs_dir() / "encoders"


@functools.cache
def encoder_specs() -> dict[str, ArchitectureSpec]:
    """Every encoder spec, validated against the registered trait kinds, by name.

    Returns:
        ``name -> spec``.

    Example:
        >>> sorted(encoder_specs())
        ['bert', 't5', 't5_gated']
    """
    registry = get_registry()
    docs = {}
    for path in sorted(encoder_specs_dir().glob("*.yaml")):
        doc = read_spec_file(path)
        docs[doc["name"]] = doc
    out = {}
    for name, doc in docs.items():
        if doc.get("extends"):  # one level, as the encoder specs use it
            doc = merge_extends(docs[doc["extends"]], doc)
        doc["source"] = "tlcore.builtin (encoders)"
        out[name] = validate_spec(doc, registry.trait_model, registry.trait_kinds)
    return out


def encoder_spec_for_hf_config(hf_config: Any, family: str) -> ArchitectureSpec:
    """The encoder spec covering an HF config.

    Args:
        hf_config: A ``PretrainedConfig`` or its dict.
        family: What the caller builds, for the error message (``HookedEncoder`` ...).

    Returns:
        The spec whose ``hf.model_types`` or ``hf.architectures`` match (highest priority first).

    Raises:
        UnknownArchitectureError: If none does, listing the model types that do.
    """
    data = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    model_type, classes = data.get("model_type"), set(data.get("architectures") or [])
    found = [
        spec
        for spec in encoder_specs().values()
        if (model_type in spec.hf.model_types or classes & set(spec.hf.architectures))
        and all(data.get(k) == v for k, v in spec.hf.match.items())
    ]
    if not found:
        types = sorted({t for s in encoder_specs().values() for t in s.hf.model_types})
        raise UnknownArchitectureError(
            f"{family} has no spec for model_type '{model_type}' "
            f"(architectures {sorted(classes) or '[]'}); encoder specs cover {', '.join(types)}. "
            f"Decoder-only checkpoints load with HookedTransformer."
        )
    return max(found, key=lambda s: s.hf.priority)

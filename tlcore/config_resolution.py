"""Resolving an architecture spec against an HF config into a :class:`HookedTransformerConfig`.

Apart from :mod:`tlcore.config` so that the config class stays a leaf: the spec loader checks a
spec's ``config:`` keys against the class's fields, and this module needs the spec loader.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tlcore.config import HookedTransformerConfig
from tlcore.errors import InvalidConfigError, SpecError
from tlcore.guard import RecordingMapping, check_config_guard, check_quantization
from tlcore.loading.text_tower import text_config_of
from tlcore.registry import get_registry
from tlcore.spec.expressions import evaluate
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.trait_resolution import TraitLookup, resolve_trait
from tlcore.spec.traits import SLOT_KINDS_FROM, SLOTS, Trait


def _architectures(hf_config: Any) -> list[str]:
    if isinstance(hf_config, dict):
        return list(hf_config.get("architectures") or [])
    return list(getattr(hf_config, "architectures", None) or [])


def _quantization(hf_config: Any) -> Any:
    if isinstance(hf_config, dict):
        return hf_config.get("quantization_config")
    return getattr(hf_config, "quantization_config", None)


_CFG_FIELDS = {f.name for f in dataclasses.fields(HookedTransformerConfig)}


def resolve_config(
    spec: ArchitectureSpec,
    hf_config: Any,
    *,
    trait_model: TraitLookup | None = None,
    check_guard: bool = True,
    **overrides: Any,
) -> HookedTransformerConfig:
    """Resolve a spec against an HF config into a :class:`HookedTransformerConfig`.

    Args:
        spec: The architecture spec.
        hf_config: An HF ``PretrainedConfig`` (or a plain dict of its fields).
        trait_model: ``(slot, kind) -> trait model`` (default: the plugin registry's).
        check_guard: Refuse HF fields with non-default values that the spec does not handle.
        **overrides: Config fields to set after resolution (``dtype``, ``n_ctx``, ...).

    Returns:
        The config.

    Raises:
        SpecError: If the spec cannot be resolved (missing fields, bad types).
        UnsupportedConfigError: If the guard finds an unhandled non-default HF field.
    """
    lookup = trait_model if trait_model is not None else get_registry().trait_model
    wrapper_architectures = _architectures(hf_config)
    wrapper_quantization = _quantization(hf_config) if spec.text_tower is not None else None
    hf_config = text_config_of(hf_config, spec.text_tower)  # a multimodal wrapper's language model
    hf_dict = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    hf = RecordingMapping(hf_dict)
    where = spec.source_file or f"<spec {spec.name}>"
    values: dict[str, Any] = {}
    for key, expr in spec.config.items():
        values[key] = evaluate(expr, hf, values, f"{where}: config.{key}")
    traits: dict[str, Trait] = {}
    for slot in SLOTS:
        if slot in spec.traits:
            traits[slot] = resolve_trait(
                spec.traits[slot],
                SLOT_KINDS_FROM.get(slot, slot),
                lookup,
                hf,
                values,
                f"{where}: traits.{slot}",
            )
    for slot in SLOTS:
        if slot in traits:
            traits[slot].apply_to_cfg(values)
    unknown = set(values) - _CFG_FIELDS
    extra = {k: values.pop(k) for k in unknown}
    architectures = hf_dict.get("architectures") or wrapper_architectures
    values.setdefault("original_architecture", (architectures or [None])[0])
    values["spec_name"] = spec.name
    values["spec_source"], values["spec_file"] = spec.source, spec.source_file
    values.update(overrides)
    if check_guard:
        check_quantization(spec, wrapper_quantization)  # a wrapper quantises all its towers
        extra["config_guard"] = check_config_guard(spec, hf_config, hf.read).as_dict()
    try:
        cfg = HookedTransformerConfig(**values, traits=traits, hf_config=hf_config, extra=extra)
    except TypeError as exc:
        raise SpecError(f"{where}: config: {exc}") from exc
    except InvalidConfigError as exc:
        origin = hf_dict.get("_name_or_path") or "the HF config"
        raise InvalidConfigError(f"{exc} (resolved from {origin} through {where})") from exc
    return cfg

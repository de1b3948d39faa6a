"""Tiny random HF checkpoints for a spec, filled from tlcore's own seeded generator.

The weights never depend on HF's init code: every parameter is drawn from a ``torch.Generator``
seeded here, in sorted-name order, with norm weights far from 1 and non-zero biases so that folding,
centring and attention patterns are all exercised.
"""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from typing import Any

import torch

from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec

DEFAULT_SEED = 1234


def tiny_hf_config(spec: ArchitectureSpec, variant: str | None = None, **overrides: Any) -> Any:
    """Build the HF config of a spec's ``test_config`` (plus a named variant and overrides).

    For a multimodal wrapper's language model (``parity.wrapper``) this is the text config inside
    the wrapper's (what the spec resolves); :func:`tiny_reference_config` gives the wrapper's.

    Args:
        variant: A key of ``spec.test_variants``.
        **overrides: Extra HF config fields.

    Returns:
        A transformers ``PretrainedConfig``.

    Raises:
        KeyError: For an unknown variant.
    """
    config = tiny_reference_config(spec, variant, **overrides)
    return config.text_config if spec.parity.wrapper is not None else config


def tiny_reference_config(
    spec: ArchitectureSpec, variant: str | None = None, **overrides: Any
) -> Any:
    """The HF config of the reference model parity builds (the wrapper's, for a text tower).

    Args:
        variant: A key of ``spec.test_variants``.
        **overrides: Extra HF config fields.

    Returns:
        A transformers ``PretrainedConfig``.

    Raises:
        KeyError: For an unknown variant.
    """
    from transformers import AutoConfig

    if spec.parity.hf_module:  # a plugin's own HF reference registers itself on import
        importlib.import_module(spec.parity.hf_module)
    # Deep copies: transformers normalises nested fields such as rope_parameters in place, which
    # would otherwise edit the registered spec (and change its content hash) behind its back.
    fields = copy.deepcopy(dict(spec.test_config))
    if variant is not None:
        if variant not in spec.test_variants:
            raise KeyError(
                f"spec '{spec.name}' has no test variant '{variant}' "
                f"(variants: {sorted(spec.test_variants)})"
            )
        fields.update(copy.deepcopy(spec.test_variants[variant]))
    fields.update(copy.deepcopy(overrides))
    model_type = spec.hf.model_types[0]
    if spec.parity.wrapper is not None:  # a multimodal wrapper's language model
        wrapper = copy.deepcopy(dict(spec.parity.wrapper))
        text = {"model_type": model_type, **fields}
        return AutoConfig.for_model(wrapper.pop("model_type"), text_config=text, **wrapper)
    config = AutoConfig.for_model(model_type, **fields)
    if spec.hf.architectures:
        config.architectures = [spec.hf.architectures[0]]
    return config


def fill_seeded_(model: torch.nn.Module, seed: int = DEFAULT_SEED) -> None:
    """Overwrite every parameter of an HF model from a seeded generator.

    Args:
        model: A transformers model.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = param.shape
            noise = torch.randn(shape, generator=generator, dtype=torch.float32)
            lowered = name.lower()
            if (
                "norm" in lowered
                or "ln" in lowered.split(".")[-2:][0]
                or lowered.endswith(("ln_f.weight",))
            ):
                value = 1.0 + 0.3 * noise if lowered.endswith("weight") else 0.2 * noise
            elif lowered.endswith("bias") or param.dim() == 1:
                value = 0.2 * noise
            elif "embed" in lowered or "wte" in lowered or "wpe" in lowered or "lm_head" in lowered:
                value = noise
            else:
                fan_in = shape[-1] if param.dim() >= 2 else shape[0]
                value = noise * (1.5 / math.sqrt(fan_in))
            param.copy_(value.to(param.dtype))


def hf_model_from_config(
    config: Any, auto_class: str = "AutoModelForCausalLM", **kwargs: Any
) -> Any:
    """HF's own model for a config: ``auto_class``'s, or else its image-text-to-text model.

    Multimodal wrappers (LLaVA, Mistral 3, Qwen2-VL...) have no causal-LM class.

    Args:
        config: A transformers config.
        auto_class: The transformers auto class (a spec's ``parity.hf_auto_class``: the encoder
            specs name ``AutoModelForMaskedLM`` or ``AutoModelForSeq2SeqLM``).
        **kwargs: ``from_config`` arguments (``dtype``, ``attn_implementation``...); MoE models
            also get ``experts_implementation="eager"`` where transformers accepts it.

    Returns:
        The model (randomly initialised).
    """
    import transformers

    auto: Any = getattr(transformers, auto_class)
    if type(config) not in auto._model_mapping:
        auto = transformers.AutoModelForImageTextToText
    try:
        return auto.from_config(config, experts_implementation="eager", **kwargs)
    except (TypeError, ValueError):
        return auto.from_config(config, **kwargs)


def build_tiny_hf_model(
    spec: ArchitectureSpec,
    variant: str | None = None,
    seed: int = DEFAULT_SEED,
    attn_implementation: str = "eager",
    **overrides: Any,
) -> Any:
    """Build and seed-fill the HF model of a spec's test config (fp32).

    Args:
        variant: Test variant name.
        seed: Fill seed.
        attn_implementation: HF attention implementation (``eager`` for exact parity).
        **overrides: Extra HF config fields.

    Returns:
        The HF model in eval mode.
    """
    config = tiny_reference_config(spec, variant, **overrides)
    model = hf_model_from_config(
        config,
        auto_class=spec.parity.hf_auto_class,
        dtype=torch.float32,
        attn_implementation=attn_implementation,
    )
    fill_seeded_(model, seed)
    return model.eval()


def save_tiny_checkpoint(
    spec: ArchitectureSpec,
    directory: str | Path,
    variant: str | None = None,
    seed: int = DEFAULT_SEED,
    attn_implementation: str = "eager",
    **overrides: Any,
) -> tuple[Path, Any]:
    """Write a tiny seeded checkpoint with ``save_pretrained`` (safetensors).

    Args:
        directory: Output folder.
        variant: Test variant name.
        seed: Fill seed.
        attn_implementation: HF attention implementation of the returned reference model.
        **overrides: Extra HF config fields.

    Returns:
        ``(folder, hf_model)``.
    """
    model = build_tiny_hf_model(spec, variant, seed, attn_implementation, **overrides)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory, model


def spec_cases(names: list[str]) -> list[tuple[str, str | None]]:
    """Every ``(spec, variant)`` pair parity checks for the named specs (``None`` = base config).

    Args:
        names: Architecture names.

    Returns:
        The pairs, base first, variants sorted.
    """
    registry = get_registry()
    return [
        (name, variant)
        for name in names
        for variant in [None, *sorted(registry.get_spec(name).test_variants)]
    ]

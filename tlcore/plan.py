"""Resolution's one output: the plan of a model, handed down to the builder, loader and processing.

Data flows one way: a spec (or a config written by hand) and an HF config are resolved, once, into a
:class:`ModelPlan`: the config, the component factory of every trait kind it uses, the weight map
with its ops, and the processing plan. The builder (:func:`tlcore.build.build_modules`), the
loader (:func:`tlcore.loading.loader.load_checkpoint`) and weight processing take the plan and
nothing else; components receive what they need from the builder and never look anything up in the
plugin registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tlcore.config import HookedTransformerConfig
from tlcore.config_resolution import resolve_config
from tlcore.errors import SpecError
from tlcore.loading.text_tower import text_config_of
from tlcore.loading.weight_map import WeightMap
from tlcore.loading_checks import check_first_n_layers
from tlcore.processing_plan import ProcessingPlan, processing_plan
from tlcore.registry import Registry, get_registry
from tlcore.spec.loader import validate_spec
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.traits import SLOT_KINDS_FROM, Trait
from tlcore.utils.frozen_map import FrozenMap

ComponentTable = Mapping[tuple[str, str], Callable[..., Any]]
"""``(slot, kind) -> component factory`` (``final_norm`` kinds under ``norm``)."""


@dataclass(frozen=True)
class ModelPlan:
    """Everything resolution decided about one model.

    Attributes:
        cfg: The resolved config. The model built from the plan owns it (flags such as
            ``use_attn_result`` and what processing applied are recorded there); the other fields
            are fixed.
        components: The factory of every trait kind the config uses, nested ones included.
        processing: Which weight-processing steps are exact for this model, and why.
        spec: The architecture spec (None for a config written by hand).
        weights: The spec's weight map with its ops (None without a spec: nothing to load).
    """

    cfg: HookedTransformerConfig
    components: ComponentTable
    processing: ProcessingPlan
    spec: ArchitectureSpec | None = None
    weights: WeightMap | None = None

    def component(self, slot: str, kind: str) -> Callable[..., Any]:
        """The factory of ``slot``/``kind``.

        Args:
            slot: The slot (``final_norm`` shares ``norm``'s kinds).

        Returns:
            The factory.

        Raises:
            SpecError: If the plan holds no such kind.
        """
        key = (SLOT_KINDS_FROM.get(slot, slot), kind)
        if key not in self.components:
            raise SpecError(f"the model plan has no component for {key[0]}/{kind}")
        return self.components[key]


def _nested_traits(trait: Trait, slot: str) -> Iterator[tuple[str, Trait]]:
    yield SLOT_KINDS_FROM.get(slot, slot), trait
    for name in type(trait).model_fields:
        value = getattr(trait, name)
        if isinstance(value, Trait):
            yield from _nested_traits(value, type(value).slot or slot)


def component_table(cfg: HookedTransformerConfig, registry: Registry) -> ComponentTable:
    """The factories of every trait kind ``cfg`` uses (nested traits such as qk-norms included).

    Args:
        cfg: A resolved config.
        registry: Where kinds are registered.

    Returns:
        ``(slot, kind) -> factory``, read-only.

    Raises:
        SpecError: For a kind no plugin registered.
    """
    table: dict[tuple[str, str], Callable[..., Any]] = {}
    slots = list(cfg.traits) + (["final_norm"] if "final_norm" not in cfg.traits else [])
    for slot in slots:
        for kinds_slot, trait in _nested_traits(cfg.trait(slot), slot):
            if (kinds_slot, trait.kind) not in registry.traits:
                raise SpecError(f"{kinds_slot} kind '{trait.kind}' is not registered")
            table[(kinds_slot, trait.kind)] = registry.component(kinds_slot, trait.kind)
    return FrozenMap(table)


def plan_for_config(
    cfg: HookedTransformerConfig | dict[str, Any], registry: Registry | None = None
) -> ModelPlan:
    """The plan of a model built from a config alone (no spec, no checkpoint).

    Args:
        cfg: A resolved config, or TransformerLens's fields (a dict or a config written by hand).
        registry: Where kinds are looked up (default: the plugin registry).

    Returns:
        The plan, without a weight map.
    """
    if isinstance(cfg, dict):  # TransformerLens accepts a plain dict of config fields
        cfg = HookedTransformerConfig(**cfg)
    registry = registry if registry is not None else get_registry()
    return ModelPlan(cfg, component_table(cfg, registry), processing_plan(cfg))


def checked_spec(spec: ArchitectureSpec, registry: Registry) -> ArchitectureSpec:
    """``spec`` validated against the registered trait kinds (as registration would).

    A spec object built by hand or edited from a registered one has only been checked against the
    spec schema; this also checks its slots, trait kinds and parameter names.

    Args:
        registry: The registry whose kinds apply.

    Returns:
        The validated spec.

    Raises:
        SpecError: Naming the field and the reason.
    """
    doc = spec.model_dump(by_alias=True)
    return validate_spec(doc, registry.trait_model, registry.trait_kinds)


def resolve_plan(
    spec: ArchitectureSpec,
    hf_config: Any,
    *,
    first_n_layers: int | None = None,
    registry: Registry | None = None,
    **overrides: Any,
) -> ModelPlan:
    """Resolve a spec against an HF config into the plan of one model.

    Args:
        spec: The architecture spec (registered or not: its trait kinds and weight ops must be).
        hf_config: An HF ``PretrainedConfig`` (or a dict of its fields).
        first_n_layers: Keep only the first n blocks (the weight map reads past the others).
        registry: Where kinds and ops are looked up (default: the plugin registry).
        **overrides: Config fields set after resolution (``dtype``, ``n_ctx``, ...).

    Returns:
        The plan.

    Raises:
        SpecError: If the spec cannot be resolved.
        UnsupportedConfigError: If the config guard refuses an HF field.
    """
    registry = registry if registry is not None else get_registry()
    spec = checked_spec(spec, registry)
    cfg = resolve_config(spec, hf_config, trait_model=registry.trait_model, **overrides)
    checkpoint_layers = cfg.n_layers
    check_first_n_layers(first_n_layers, checkpoint_layers)
    if first_n_layers is not None:
        cfg.n_layers = first_n_layers
    text = text_config_of(hf_config, spec.text_tower)
    hf = text.to_dict() if hasattr(text, "to_dict") else dict(text)
    if (
        text is not hf_config
    ):  # a wrapper's quantisation covers its text tower (the loader reads it)
        wrapper = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
        if wrapper.get("quantization_config"):
            hf.setdefault("quantization_config", wrapper["quantization_config"])
    ops = {name: op.fn for name, op in registry.weight_ops.items()}
    weights = WeightMap.build(spec, ops, cfg, hf, checkpoint_layers)
    return ModelPlan(cfg, component_table(cfg, registry), processing_plan(cfg), spec, weights)

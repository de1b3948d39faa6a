"""Resolving a spec's trait block against an HF config: expressions evaluated, the model validated.

Kept apart from :mod:`tlcore.spec.loader` because the config module resolves traits for
hand-written configs too, and the loader needs the config's field names: neither imports the other
through here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from tlcore.config_checks import check_trait_values
from tlcore.errors import SpecError
from tlcore.spec.expressions import evaluate
from tlcore.spec.traits import Trait

TraitLookup = Callable[[str, str], type[Trait] | None]
"""``(slot, kind) -> trait model or None``; the registry provides it."""


def format_validation(exc: ValidationError) -> str:
    """One line per pydantic error, naming the field: ``field 'a.b': message``.

    Args:
        exc: The validation error.

    Returns:
        The joined message.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"field '{loc}': {err['msg']}")
    return "; ".join(parts)


def resolve_trait(
    block: Mapping[str, Any],
    slot: str,
    lookup: TraitLookup,
    hf: Mapping[str, Any],
    cfg: Mapping[str, Any],
    where: str,
) -> Trait:
    """Evaluate a trait block's expressions and validate it fully (second pass).

    Parameters declared with ``json_schema_extra={"trait_slot": ...}`` hold nested traits (a norm
    inside an attention trait) and are resolved recursively.

    Args:
        block: The raw trait block.
        slot: The slot whose kinds apply.
        lookup: Trait lookup.
        hf: HF config mapping.
        cfg: Canonical config fields.
        where: Location for error messages.

    Returns:
        The validated trait instance.

    Raises:
        SpecError: Naming the field and the reason.
    """
    model = lookup(slot, block["kind"])
    assert model is not None, f"{where}: kind vanished from the registry"
    values: dict[str, Any] = {}
    for key, raw in block.items():
        nested = model.model_fields[key].json_schema_extra if key in model.model_fields else None
        value = evaluate(raw, hf, cfg, f"{where}.{key}")
        if isinstance(nested, dict) and nested.get("trait_slot") and isinstance(value, Mapping):
            value = resolve_trait(
                value, str(nested["trait_slot"]), lookup, hf, cfg, f"{where}.{key}"
            )
        values[key] = value
    try:
        trait = model.model_validate(values)
    except ValidationError as exc:
        raise SpecError(f"{where}: {format_validation(exc)}") from exc
    check_trait_values(trait, where)
    return trait

"""Reading spec files: bounded YAML, ``extends:`` merging and two-pass trait validation."""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tlcore.errors import SpecError
from tlcore.spec.bounds import read_yaml_file
from tlcore.spec.expressions import check_expression, is_expression
from tlcore.spec.schema import ArchitectureSpec
from tlcore.spec.trait_resolution import TraitLookup, format_validation, resolve_trait
from tlcore.spec.traits import OPTIONAL_SLOTS, SLOT_KINDS_FROM, SLOTS, Trait

__all__ = ["TraitLookup", "resolve_trait"]  # their home is tlcore.spec.trait_resolution

KindLister = Callable[[str], list[str]]
_NOT_SETTABLE = frozenset({"traits", "hf_config", "extra"})  # set by resolution, not by specs


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read one spec file as a plain mapping.

    Args:
        path: A ``.yaml``/``.yml`` file.

    Returns:
        The document, with ``source_file`` set.

    Raises:
        SpecError: If the file is not valid YAML (duplicate keys, alias bombs and excessive
            nesting included, see :mod:`tlcore.spec.bounds`) or not a mapping with a ``name``.
    """
    path = Path(path)
    doc = read_yaml_file(path)
    return check_spec_document(doc, str(path))


def check_spec_document(doc: Any, where: str) -> dict[str, Any]:
    """Check the outer shape of a spec document read from a file.

    Args:
        doc: The parsed document.
        where: The file, for messages.

    Returns:
        The document, with ``source_file`` set.

    Raises:
        SpecError: If it is not a mapping with a ``name`` string.
    """
    path = where
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a spec must be a mapping, got {type(doc).__name__}")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise SpecError(f"{path}: field 'name': required, a non-empty string")
    doc["source_file"] = str(path)
    return doc


def _merge_trait(parent: Any, child: Any) -> Any:
    if not isinstance(parent, Mapping) or not isinstance(child, Mapping):
        return copy.deepcopy(child)
    if "kind" in child and child["kind"] != parent.get("kind"):
        return copy.deepcopy(dict(child))
    merged = copy.deepcopy(dict(parent))
    merged.update(copy.deepcopy(dict(child)))
    return merged


def merge_extends(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a child spec document onto its parent (``extends:``).

    ``config``, ``test_config`` and ``test_variants`` merge key by key; a trait slot without
    ``kind`` (or with the parent's kind) updates the parent's parameters, one with another kind
    replaces it; weight rules replace the parent's rule with the same targets, new ones are
    appended, and ``drop_weights`` removes parent rules by target; guard lists and ``ignore_keys``
    are united; ``hf`` is the child's own.

    Args:
        parent: The fully merged parent document.
        child: The child document.

    Returns:
        The merged document (new object).
    """
    out = copy.deepcopy(dict(parent))
    out["hf"] = copy.deepcopy(child.get("hf", {}))
    for key in ("config", "test_config", "test_variants", "parity"):
        out[key] = {**out.get(key, {}), **copy.deepcopy(child.get(key, {}))}
    # A child drops an inherited test variant that does not apply to it with ``name: null``.
    out["test_variants"] = {k: v for k, v in out["test_variants"].items() if v is not None}
    traits = dict(out.get("traits", {}))
    for slot, block in child.get("traits", {}).items():
        traits[slot] = _merge_trait(traits.get(slot), block)
    out["traits"] = traits
    rules = list(out.get("weights", []))
    dropped = set(child.get("drop_weights", []))

    def targets(rule: Mapping[str, Any]) -> tuple[str, ...]:
        to = rule.get("to", [])
        return tuple([to] if isinstance(to, str) else to)

    rules = [r for r in rules if not (set(targets(r)) & dropped)]
    for rule in child.get("weights", []):
        index = next((n for n, r in enumerate(rules) if targets(r) == targets(rule)), None)
        if index is None:
            rules.append(copy.deepcopy(rule))
        else:
            rules[index] = copy.deepcopy(rule)
    out["weights"] = rules
    guard = dict(out.get("guard", {}))
    for key, values in child.get("guard", {}).items():
        if isinstance(values, dict):  # unsupported: {field: values}
            guard[key] = {**guard.get(key, {}), **values}
        else:
            guard[key] = sorted(set(guard.get(key, [])) | set(values))
    out["guard"] = guard
    ignored = set(out.get("ignore_keys", [])) | set(child.get("ignore_keys", []))
    if ignored:
        out["ignore_keys"] = sorted(ignored)
    for key in ("name", "description", "source_file", "extends"):
        if key in child:
            out[key] = child[key]
    out.pop("drop_weights", None)
    return out


def validate_spec(
    doc: Mapping[str, Any], lookup: TraitLookup, kinds: KindLister
) -> ArchitectureSpec:
    """Validate a merged spec document (first pass of trait validation).

    The trait blocks are checked against the model registered for their ``(slot, kind)``: unknown
    slots, unknown kinds and unknown parameter names fail here, and expressions are checked for
    syntax. Parameter *types* are checked when the spec is resolved against an HF config (second
    pass), because a parameter may be an expression until then.

    Args:
        doc: The merged document (``extends`` already applied).
        lookup: Returns the trait model for ``(slot, kind)`` or None.
        kinds: Lists the registered kinds of a slot (for error messages).

    Returns:
        The validated spec.

    Raises:
        SpecError: Naming the file, the field and the reason.
    """
    where = doc.get("source_file") or f"<spec {doc.get('name')}>"
    body = {k: v for k, v in doc.items() if k != "drop_weights"}
    try:
        spec = ArchitectureSpec.model_validate(body)
    except ValidationError as exc:
        raise SpecError(f"{where}: {format_validation(exc)}") from exc
    for slot in SLOTS:
        if slot not in spec.traits and slot not in OPTIONAL_SLOTS:
            raise SpecError(f"{where}: field 'traits.{slot}': required slot is missing")
    for slot, block in spec.traits.items():
        field = f"traits.{slot}"
        if slot not in SLOTS:
            raise SpecError(f"{where}: field '{field}': unknown slot (slots: {', '.join(SLOTS)})")
        check_trait_block(
            block, SLOT_KINDS_FROM.get(slot, slot), lookup, kinds, f"{where}: {field}"
        )
    check_config_keys(spec.config, where)
    for key, value in spec.config.items():
        check_expression(value, f"{where}: config.{key}")
    for n, rule in enumerate(spec.weights):
        if "{e}" in "".join(rule.to) and not any("{e}" in t for t in rule.to):
            raise SpecError(f"{where}: weights[{n}]: malformed expert template")
    return spec


def config_field_names() -> frozenset[str]:
    """The fields of :class:`~tlcore.config.HookedTransformerConfig` a spec's ``config:`` may set.

    Returns:
        Field names.
    """
    from tlcore.config import HookedTransformerConfig

    return frozenset(f.name for f in dataclasses.fields(HookedTransformerConfig)) - _NOT_SETTABLE


def check_config_keys(config: Mapping[str, Any], where: str) -> None:
    """Refuse ``config:`` keys that are not fields of the model config (a typo is not ignored).

    Args:
        config: The spec's ``config:`` block.
        where: The spec file, for messages.

    Raises:
        SpecError: Naming the unknown keys and the closest field names.
    """
    fields = config_field_names()
    unknown = [key for key in config if key not in fields]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.7)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise SpecError(
        f"{where}: field 'config': unknown config field(s) {', '.join(hints)}; a spec's config "
        f"block sets HookedTransformerConfig fields only (see tlcore.config)"
    )


def check_trait_block(
    block: Any, slot: str, lookup: TraitLookup, kinds: KindLister, where: str
) -> type[Trait]:
    """Check one trait block's kind and parameter names.

    Args:
        block: The raw ``{kind: ..., ...}`` mapping.
        slot: The slot whose kinds apply.
        lookup: Trait lookup.
        kinds: Kind lister.
        where: Location for error messages.

    Returns:
        The trait model.

    Raises:
        SpecError: For a missing or unknown kind, or unknown parameters.
    """
    if not isinstance(block, Mapping) or not isinstance(block.get("kind"), str):
        raise SpecError(f"{where}: a trait is a mapping with a 'kind' string")
    model = lookup(slot, block["kind"])
    if model is None:
        known = ", ".join(kinds(slot)) or "none registered"
        raise SpecError(f"{where}: unknown {slot} kind '{block['kind']}' (known: {known})")
    unknown = set(block) - set(model.model_fields)
    if unknown:
        raise SpecError(
            f"{where}: unknown parameter(s) {sorted(unknown)} for kind '{block['kind']}' "
            f"(parameters: {sorted(set(model.model_fields) - {'kind'})})"
        )
    for key, value in block.items():
        check_expression(value, f"{where}.{key}")
        nested = model.model_fields[key].json_schema_extra
        if isinstance(nested, dict) and nested.get("trait_slot") and isinstance(value, Mapping):
            if not is_expression(value):
                check_trait_block(value, str(nested["trait_slot"]), lookup, kinds, f"{where}.{key}")
    return model


def dump_model(model: BaseModel) -> dict[str, Any]:
    """Dump a pydantic model to plain JSON-able data.

    Args:
        model: Any pydantic model.

    Returns:
        A JSON-compatible dict.
    """
    return model.model_dump(mode="json", by_alias=True)

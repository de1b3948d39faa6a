"""The pydantic schema of an architecture spec (one YAML file in ``specs/architectures``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlcore.spec.traits import Trait


class HFMatch(BaseModel):
    """Which HuggingFace checkpoints a spec covers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_types: list[str] = Field(default_factory=list)
    architectures: list[str] = Field(default_factory=list)
    match: dict[str, Any] = Field(default_factory=dict)
    """HF config fields that must equal these values for this spec to apply (variant selection)."""
    priority: int = 0
    """When several specs match, the highest priority wins (a variant outranks its base)."""


class ConfigGuard(BaseModel):
    """Guard against silently wrong models: HF config fields a spec has looked at.

    A checkpoint whose HF config sets a field to a non-default value that is neither read by the
    spec (through ``config:``/trait expressions), nor listed in ``handled`` or ``ignored``, is
    refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    handled: list[str] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    unsupported: dict[str, list[Any]] = Field(default_factory=dict)
    """HF field → values the spec cannot build (a flag selecting a layout no trait has)."""

    @field_validator("unsupported", mode="before")
    @classmethod
    def _listify_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class WeightSource(BaseModel):
    """One way to obtain a canonical tensor group from HF state-dict keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: list[str] = Field(alias="from")
    ops: list[Any] = Field(default_factory=list)

    @field_validator("from_", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class WeightRule(BaseModel):
    """Canonical (TransformerLens) name templates ← HF key templates plus named transforms.

    ``{i}`` is the block index and ``{e}`` the expert index. The ops run on the list of source
    tensors and must produce one tensor per target (a target with ``{e}`` takes ``n_experts``
    tensors).
    ``alt`` lists other sources tried in order when the keys of the first are absent (on-disk
    layouts, tied weights saved once). A rule applies to a layer only where the model has its
    targets (dense layers of a MoE model have no experts). ``optional: true`` skips the rule when no
    source is present; a rule filling only biases TransformerLens always has (``b_Q``, ``b_O``,
    ``b_in``, ``b_out``, ``b_U``...) is optional without saying so: a checkpoint without them means
    zeros, and a misspelt key still fails (the checkpoint's real key is then unexpected).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: list[str]
    from_: list[str] = Field(alias="from")
    ops: list[Any] = Field(default_factory=list)
    alt: list[WeightSource] = Field(default_factory=list)
    optional: bool = False

    @field_validator("to", "from_", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def sources(self) -> list[WeightSource]:
        """Return the primary source followed by the alternatives.

        Returns:
            Sources in the order the loader tries them.
        """
        return [WeightSource(**{"from": self.from_, "ops": self.ops}), *self.alt]


class ParitySettings(BaseModel):
    """How the parity tool compares this spec with HF (defaults suit almost every architecture)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: float = 1e-4
    attn_implementation: str = "eager"
    """HF attention used as the reference; ``sdpa`` where HF's eager path is wrong (Falcon
    ALiBi)."""
    variant_attn_implementation: dict[str, str] = Field(default_factory=dict)
    """Per test variant override of ``attn_implementation``."""
    note: str = ""
    """Why a setting differs from the default (shown in the parity table)."""
    hf_module: str | None = None
    """A module to import before the reference is built: it registers an HF architecture that
    transformers does not ship (a plugin's own reference model) with ``AutoConfig`` and
    ``AutoModelForCausalLM``."""

    def attn_for(self, variant: str | None) -> str:
        """The HF attention implementation for a variant.

        Args:
            variant: Test variant name or None.

        Returns:
            ``eager`` or ``sdpa``.
        """
        return self.variant_attn_implementation.get(variant or "", self.attn_implementation)


class ArchitectureSpec(BaseModel):
    """A validated architecture spec: HF match, config mapping, traits, weight map, test config."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    description: str = ""
    extends: str | None = None
    hf: HFMatch = Field(default_factory=HFMatch)
    config: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    """Raw trait blocks (expressions not yet evaluated); validated per kind at load time."""
    weights: list[WeightRule] = Field(default_factory=list)
    guard: ConfigGuard = Field(default_factory=ConfigGuard)
    test_config: dict[str, Any] = Field(default_factory=dict)
    """A tiny HF config (overrides on the HF class defaults) used by parity checks."""
    test_variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named extra overrides on ``test_config`` that parity also checks."""
    parity: ParitySettings = Field(default_factory=ParitySettings)
    source_file: str | None = None
    source: str = "unknown"
    """The plugin that registered the spec."""

    def content_hash(self) -> str:
        """Hash the spec's behaviour-defining content (not its file path or source).

        Returns:
            A short sha256 hex digest.
        """
        # Defaults left out: a field added to the schema later, with a default this spec does not
        # override, must not make every stored snapshot look stale.
        data = self.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, exclude={"source_file", "source"}
        )
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        """The spec's file name, or ``<object>`` for specs registered as objects."""
        return Path(self.source_file).name if self.source_file else "<object>"


ResolvedTraits = dict[str, Trait]

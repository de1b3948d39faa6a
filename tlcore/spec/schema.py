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
    hf_auto_class: str = "AutoModelForCausalLM"
    """The transformers auto class the tiny reference is built with (``AutoModelForMaskedLM``,
    ``AutoModelForSeq2SeqLM`` for the encoder specs)."""
    hf_module: str | None = None
    """A module to import before the reference is built: it registers an HF architecture that
    transformers does not ship (a plugin's own reference model) with ``AutoConfig`` and
    ``AutoModelForCausalLM``."""
    wrapper: dict[str, Any] | None = None
    """The language model of a multimodal wrapper, which transformers builds only inside it: the
    wrapper's HF config fields (``model_type`` and a tiny ``vision_config``); ``test_config``
    becomes its ``text_config`` and the reference is the whole wrapper model."""

    def attn_for(self, variant: str | None) -> str:
        """The HF attention implementation for a variant.

        Args:
            variant: Test variant name or None.

        Returns:
            ``eager`` or ``sdpa``.
        """
        return self.variant_attn_implementation.get(variant or "", self.attn_implementation)


class TextTower(BaseModel):
    """How a wrapper checkpoint holds its language model.

    Example:
        >>> tower = TextTower(model_types=["llava"], keys={"model.": ["language_model.model."]},
        ...                   skip=["vision_tower."])
        >>> tower.text_key("language_model.model.norm.weight"), tower.text_key("vision_tower.x")
        ('model.norm.weight', None)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_types: list[str]
    """The wrapper HF model types (``gemma3``, ``llava``...)."""
    config: str = "text_config"
    """The attribute of the wrapper's HF config that is the language model's config."""
    keys: dict[str, list[str]] = Field(default_factory=dict)
    """Stand-alone causal-LM key prefix → the prefixes checkpoints spell it with."""
    skip: list[str] = Field(default_factory=list)
    """Checkpoint key prefixes of the other towers (never read)."""
    description: str = ""

    def text_key(self, key: str) -> str | None:
        """The causal-LM name of a checkpoint key (None for a key of another tower).

        The longest matching checkpoint prefix wins (``model.language_model.`` before ``model.``).

        Args:
            key: A checkpoint key.

        Returns:
            The name the language model's spec reads, or None.
        """
        if key.startswith(tuple(self.skip)):
            return None
        pairs = [(c, t) for t, spelt in self.keys.items() for c in spelt if key.startswith(c)]
        if not pairs:
            return key
        ckpt, text = max(pairs, key=lambda pair: len(pair[0]))
        return text + key[len(ckpt) :]


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
    ignore_keys: list[str] = Field(default_factory=list)
    """Regular expressions (``re.match``) of checkpoint keys no rule reads because the forward pass
    never uses them, as HF's ``_keys_to_ignore_on_load_unexpected`` (DeepSeek-V3's
    multi-token-prediction layer ``model.layers.61``); every other unused key is an error."""
    guard: ConfigGuard = Field(default_factory=ConfigGuard)
    test_config: dict[str, Any] = Field(default_factory=dict)
    """A tiny HF config (overrides on the HF class defaults) used by parity checks."""
    test_variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named extra overrides on ``test_config`` that parity also checks."""
    parity: ParitySettings = Field(default_factory=ParitySettings)
    text_tower: TextTower | None = None
    """Set on the spec of a multimodal wrapper's language model (by resolution, never in a file):
    the model is built from the wrapper's text sub-config and reads only the text tower's tensors
    (:mod:`tlcore.loading.text_tower`)."""
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

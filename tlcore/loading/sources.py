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

    Tensors are read lazily from memory-mapped files. Legacy ``pytorch_model.bin`` checkpoints load
    with ``torch.load(weights_only=True)`` (no pickled code runs).

    Args:
        path: The folder.

    Raises:
        CheckpointMismatchError: If the folder holds no weights.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        self._bin: dict[str, torch.Tensor] | None = None
        index_file = self.path / "model.safetensors.index.json"
        single = self.path / "model.safetensors"
        if index_file.exists():
            weight_map = json.loads(index_file.read_text())["weight_map"]
            self._index = {k: self.path / v for k, v in weight_map.items()}
        elif single.exists():
            from safetensors import safe_open

            with safe_open(single, framework="pt") as handle:
                self._index = dict.fromkeys(handle.keys(), single)
        else:
            shards = sorted(self.path.glob("*.safetensors"))
            bins = sorted(self.path.glob("pytorch_model*.bin"))
            if shards:
                from safetensors import safe_open

                for shard in shards:
                    with safe_open(shard, framework="pt") as handle:
                        self._index.update(dict.fromkeys(handle.keys(), shard))
            elif bins:
                self._bin = {}
                for file in bins:
                    self._bin.update(
                        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                    )
                self._index = dict.fromkeys(self._bin, file)
            else:
                raise CheckpointMismatchError(
                    f"{self.path}: no weights found (expected model.safetensors, a sharded "
                    f"model.safetensors.index.json, or pytorch_model.bin)"
                )

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

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor.

        Args:
            key: Its name.

        Returns:
            The tensor (CPU).
        """
        if self._bin is not None:
            return self._bin[key]
        file = self._index[key]
        if file not in self._handles:
            from safetensors import safe_open

            self._handles[file] = safe_open(file, framework="pt")
        return self._handles[file].get_tensor(key)

    def hf_config(self) -> dict[str, Any]:
        """Read ``config.json``.

        Returns:
            The HF config dict.
        """
        return json.loads((self.path / "config.json").read_text())

    def close(self) -> None:
        """Release file handles."""
        self._handles.clear()
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

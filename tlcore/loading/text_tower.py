"""Text towers: the language model inside a multimodal ``...ForConditionalGeneration`` checkpoint.

An image-text checkpoint (Gemma 3 4B/12B/27B, Mistral 3, LLaVA, Qwen2-VL...) holds a language
model, a vision tower and a projector. tlcore builds the language model as a ``HookedTransformer``:
its spec is the one the wrapper's text sub-config (``text_config``) resolves to, and the checkpoint
is presented to the loader under the key names of the stand-alone causal LM. Keys of the vision
tower and the projector are hidden from the loader, so their tensors are never read.

A :class:`TextTower` says, for the wrapper model types it covers, which sub-config holds the text
model, how its key prefixes are spelt in checkpoints (transformers 5's in-memory
``model.language_model.*`` and the on-disk ``language_model.model.*`` or ``model.*`` of hub
files), and which prefixes belong to the other towers.
"""

from __future__ import annotations

from typing import Any

import torch

from tlcore.errors import CheckpointFormatError
from tlcore.spec.schema import TextTower

__all__ = ["TextTower", "TextTowerSource", "text_config_of"]


class TextTowerSource:
    """A tensor source showing only a wrapper checkpoint's language model, under causal-LM names.

    Args:
        source: The checkpoint's source (``keys``/``get``, optionally ``release``/``n_files``).
        tower: The wrapper's text tower.

    Raises:
        CheckpointFormatError: If two checkpoint keys give the same causal-LM name.
    """

    def __init__(self, source: Any, tower: TextTower) -> None:
        self._source, self.tower = source, tower
        self._names: dict[str, str] = {}
        self.skipped: list[str] = []
        for key in sorted(source.keys()):
            name = tower.text_key(key)
            if name is None:
                self.skipped.append(key)
            elif name in self._names:
                raise CheckpointFormatError(
                    f"checkpoint keys '{self._names[name]}' and '{key}' both hold the language "
                    f"model's '{name}'"
                )
            else:
                self._names[name] = key
        self.n_files = getattr(source, "n_files", 1)

    def keys(self) -> set[str]:
        """The language model's tensor names (other towers' keys are left out).

        Returns:
            Names.
        """
        return set(self._names)

    def get(self, key: str, separate_map: bool = False) -> torch.Tensor:
        """Read one language-model tensor.

        Args:
            key: Its causal-LM name.
            separate_map: As :meth:`SafetensorsDirSource.get
                <tlcore.loading.sources.SafetensorsDirSource.get>`.

        Returns:
            The tensor.
        """
        if separate_map:
            return self._source.get(self._names[key], separate_map=True)
        return self._source.get(self._names[key])

    def release(self, key: str, tensor: torch.Tensor) -> None:
        """Hand a copied tensor's pages back to the wrapped source (when it can).

        Args:
            key: Its causal-LM name.
            tensor: The tensor :meth:`get` returned.
        """
        release = getattr(self._source, "release", None)
        if release is not None:
            release(self._names[key], tensor)


def text_config_of(hf_config: Any, tower: TextTower | None) -> Any:
    """The language model's config inside a wrapper config (the config itself without a tower).

    Args:
        hf_config: An HF config object or dict.
        tower: The wrapper's text tower, or None.

    Returns:
        The text sub-config (object or dict, as given).

    Raises:
        CheckpointFormatError: If the wrapper config has no such sub-config.
    """
    if tower is None:
        return hf_config
    if isinstance(hf_config, dict):
        sub = hf_config.get(tower.config)
    else:
        sub = getattr(hf_config, tower.config, None)
    if sub is None:
        raise CheckpointFormatError(
            f"model_type '{_model_type(hf_config)}' is a multimodal wrapper, but its config has "
            f"no '{tower.config}'"
        )
    return sub


def _model_type(config: Any) -> Any:
    return config.get("model_type") if isinstance(config, dict) else config.model_type

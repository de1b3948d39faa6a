"""`CacheStorage`: the activations of one forward pass and TransformerLens's access to them.

Keys are full hook names; indexing also takes `tlcore.utils.act_names.get_act_name` shorthands and
``(name, layer[, layer_type])`` tuples, with negative layers counted from the end. The analysis
methods build on this class (:mod:`tlcore.caching.residual`, :mod:`tlcore.caching.components`);
users meet all of it as `tlcore.cache.ActivationCache`.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any, TypeVar

import torch

from tlcore.errors import HookNameError
from tlcore.utils.act_names import get_act_name
from tlcore.utils.slicing import Slice, SliceInput

logger = logging.getLogger("tlcore.cache")

CacheKey = str | tuple
"""A full hook name, a shorthand (``"pattern0"``) or a tuple ``(name, layer[, layer_type])``."""

Self = TypeVar("Self", bound="CacheStorage")


class CacheStorage:
    """The activations of a forward pass, indexed by hook name (see ``ActivationCache``)."""

    def __init__(
        self,
        cache_dict: dict[str, torch.Tensor],
        model: Any,
        has_batch_dim: bool = True,
        has_embed: bool | None = None,
        has_pos_embed: bool | None = None,
    ) -> None:
        self.cache_dict = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim
        self.has_embed = "hook_embed" in cache_dict if has_embed is None else has_embed
        self.has_pos_embed = (
            "hook_pos_embed" in cache_dict if has_pos_embed is None else has_pos_embed
        )

    # ----- mapping interface -----

    def __getitem__(self, key: CacheKey) -> torch.Tensor:
        """Look up an activation by full name, shorthand or ``(name, layer[, layer_type])``.

        Args:
            key: The key; negative layers count back from ``model.cfg.n_layers``.

        Returns:
            The cached tensor.

        Raises:
            HookNameError: (a ``KeyError``) if the activation is not in this cache; the message
                lists close matches.
        """
        return self.cache_dict[self._resolve(key)]

    def __contains__(self, key: object) -> bool:
        try:
            self._resolve(key)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def keys(self) -> KeysView[str]:
        """The full hook names in the cache, in the order they were computed.

        Returns:
            A view of the keys.
        """
        return self.cache_dict.keys()

    def values(self) -> ValuesView[torch.Tensor]:
        """The cached tensors.

        Returns:
            A view of the values.
        """
        return self.cache_dict.values()

    def items(self) -> ItemsView[str, torch.Tensor]:
        """(hook name, tensor) pairs.

        Returns:
            A view of the items.
        """
        return self.cache_dict.items()

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict.keys())}"

    # ----- batch and device -----

    def remove_batch_dim(self: Self) -> Self:
        """Drop the batch dimension of a batch-size-1 cache, in place.

        Returns:
            This cache.

        Raises:
            ValueError: If the batch size is not 1.
        """
        if not self.has_batch_dim:
            logger.warning("Tried removing batch dimension after already having removed it.")
            return self
        batch_size = self._batch_size()
        if batch_size != 1:
            raise ValueError(
                f"Cannot remove batch dimension from cache with batch size {batch_size}"
            )
        for key, value in self.cache_dict.items():
            if value.ndim > 0 and value.size(0) == 1:
                self.cache_dict[key] = value[0]
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self: Self, batch_slice: Slice | SliceInput) -> Self:
        """A new cache holding only some batch items.

        Args:
            batch_slice: Which items (see `Slice`); an int also removes the batch dimension.

        Returns:
            A new `ActivationCache` sharing the model.

        Raises:
            ValueError: If this cache has no batch dimension and the slice is not the identity.
        """
        if not isinstance(batch_slice, Slice):
            batch_slice = Slice(batch_slice)
        if not self.has_batch_dim and batch_slice.mode != "identity":
            raise ValueError("Cannot index into a cache without a batch dim")
        batch_size = self._batch_size()
        # Entries whose leading axis is not the batch (MoE routing flattens batch and position)
        # are kept whole rather than sliced along the wrong axis.
        new_cache_dict = {
            name: batch_slice.apply(value, dim=0)
            if value.ndim > 0 and value.size(0) == batch_size
            else value
            for name, value in self.cache_dict.items()
        }
        return type(self)(
            new_cache_dict,
            self.model,
            has_batch_dim=self.has_batch_dim and batch_slice.mode != "int",
            has_embed=self.has_embed,
            has_pos_embed=self.has_pos_embed,
        )

    def to(self: Self, device: str | torch.device, move_model: bool = False) -> Self:
        """Move every cached tensor to a device, in place.

        Args:
            device: The target device (e.g. ``"cpu"`` to free accelerator memory).
            move_model: Also move the model (analysis methods need model and cache together).

        Returns:
            This cache.
        """
        self.cache_dict = {key: value.to(device) for key, value in self.cache_dict.items()}
        if move_model:
            self.model.to(device)
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """Turn PyTorch's autograd on or off globally (``torch.set_grad_enabled``).

        This is process-wide state, not the cache's, exactly as in TransformerLens. Prefer
        ``torch.no_grad()`` or ``torch.inference_mode()`` as a context manager.

        Args:
            mode: True enables gradients; False disables them.
        """
        logger.warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    # ----- helpers -----

    def _batch_size(self) -> int:
        """The batch size: the most common leading size among the cached tensors.

        A few entries have other leading axes (MoE routing is ``[batch * pos, ...]``); batched
        activations far outnumber them.
        """
        counts = Counter(value.size(0) for value in self.cache_dict.values() if value.ndim > 0)
        return counts.most_common(1)[0][0] if counts else 1

    def _resolve(self, key: CacheKey) -> str:
        """The full cache key for ``key``, or a `HookNameError` with close matches."""
        if isinstance(key, str):
            if key in self.cache_dict:
                return key
            name = get_act_name(key)
        elif isinstance(key, tuple) and key and isinstance(key[0], str):
            name = get_act_name(*self._absolute_layer(key))
        else:
            raise TypeError(
                f"ActivationCache keys are hook names or (name, layer[, layer_type]) tuples, "
                f"got {key!r}"
            )
        if name not in self.cache_dict:
            raise HookNameError(self._missing_message(key, name))
        return name

    def _absolute_layer(self, key: tuple) -> tuple:
        """``key`` with a negative layer index counted back from ``model.cfg.n_layers``."""
        if len(key) < 2 or not isinstance(key[1], int) or key[1] >= 0:
            return key
        cfg = getattr(self.model, "cfg", None)
        if cfg is None:
            raise ValueError(f"A negative layer in {key!r} needs the cache's model.cfg.n_layers")
        return (key[0], cfg.n_layers + key[1], *key[2:])

    def _missing_message(self, key: CacheKey, name: str) -> str:
        asked = f"{name!r}" if key == name else f"{name!r} (from {key!r})"
        close = difflib.get_close_matches(name, self.cache_dict, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return (
            f"{asked} is not in this ActivationCache ({len(self.cache_dict)} activations; "
            f"run_with_cache's names_filter or pos_slice may have left it out).{hint}"
        )

"""Hook points and the root module that manages them (TransformerLens 2.x semantics).

`HookedRootModule` is TransformerLens's root class: the hook registry and contexts of
`tlcore.hook_registry.HookRegistry` plus caching (`HookedRootModule.run_with_cache`). `HookPoint`
itself lives in `tlcore.hook_points` and is re-exported here, where TransformerLens users import
it from.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, overload

import torch

from tlcore.cache import ActivationCache
from tlcore.hook_checks import cacheable_names
from tlcore.hook_points import (
    Direction,
    DirectionOrBoth,
    HookFunction,
    HookPoint,
    LensHandle,
    reads_only,
)
from tlcore.hook_registry import HookRegistry, HookSpec, NamesFilter
from tlcore.utils.slicing import Slice, SliceInput

DeviceType = str | torch.device | None

__all__ = [
    "DeviceType",
    "Direction",
    "DirectionOrBoth",
    "HookFunction",
    "HookPoint",
    "HookSpec",
    "HookedRootModule",
    "LensHandle",
    "NamesFilter",
]


class HookedRootModule(HookRegistry):
    """A root module that manages hooks on its `HookPoint` s and caches activations.

    Subclasses build their layers in ``__init__`` and then call `setup`. Hooks are global state:
    `run_with_hooks`, `hooks` and `run_with_cache` remove the hooks they add when they finish
    (even on error); `add_hook` does not.
    """

    # ----- caching -----

    def get_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: DeviceType = None,
        remove_batch_dim: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
        pos_slice: Slice | SliceInput = None,
    ) -> tuple[dict[str, torch.Tensor], list[HookSpec], list[HookSpec]]:
        """Make hooks that store activations (and gradients) in a dict; they are not added.

        Args:
            names_filter: Which hook points to cache: None (all), a name, a list of names, or a
                predicate on names.
            incl_bwd: Also make backward hooks storing gradients as ``"<name>_grad"``.
            device: Where to store the tensors; None keeps them where they are.
            remove_batch_dim: Store ``tensor[0]`` (for batch size 1).
            cache: The dict to fill; a new one by default.
            pos_slice: Positions to keep (see `Slice`); an int keeps the position dimension.

        Returns:
            The cache dict, the forward hooks and the backward hooks (empty unless ``incl_bwd``).

        Raises:
            HookNameError: If ``names_filter`` names a hook point that does not exist.
            ValueError: If ``names_filter`` is not one of the accepted forms.
        """
        cache = {} if cache is None else cache
        save = partial(
            _save_activation,
            cache=cache,
            device=device,
            remove_batch_dim=remove_batch_dim,
            pos_slice=Slice.unwrap(pos_slice),
        )
        wanted = self._names_predicate(names_filter)
        selected = [name for name in self.hook_dict if wanted(name)]
        explicit = isinstance(names_filter, (str, Sequence, set, frozenset))
        selected = cacheable_names(self, selected, explicit)  # flag-gated points: as add_hook
        self.is_caching = True
        fwd_hooks: list[HookSpec] = [
            (name, reads_only(partial(save, suffix=""))) for name in selected
        ]
        bwd_hooks: list[HookSpec] = []
        if incl_bwd:
            bwd_hooks = [(name, partial(save, suffix="_grad")) for name in selected]
        return cache, fwd_hooks, bwd_hooks

    def add_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: DeviceType = None,
        remove_batch_dim: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
        pos_slice: Slice | SliceInput = None,
    ) -> dict[str, torch.Tensor]:
        """Add caching hooks that stay until `reset_hooks`; does not run the model.

        Args:
            names_filter: Which hook points to cache (see `get_caching_hooks`).
            incl_bwd: Also cache gradients as ``"<name>_grad"``.
            device: Where to store the tensors; None keeps them where they are.
            remove_batch_dim: Store ``tensor[0]`` (for batch size 1).
            cache: The dict to fill; a new one by default.
            pos_slice: Positions to keep (see `Slice`).

        Returns:
            The dict that the hooks fill as the model runs.
        """
        cache, fwd_hooks, bwd_hooks = self.get_caching_hooks(
            names_filter, incl_bwd, device, remove_batch_dim, cache, pos_slice
        )
        for name, fn in fwd_hooks:
            for _, hook_point in self._select_hook_points(name):
                hook_point.add_hook(fn, dir="fwd")
        for name, fn in bwd_hooks:
            for _, hook_point in self._select_hook_points(name):
                hook_point.add_hook(fn, dir="bwd")
        return cache

    def cache_all(
        self,
        cache: dict[str, torch.Tensor] | None,
        incl_bwd: bool = False,
        device: DeviceType = None,
        remove_batch_dim: bool = False,
    ) -> dict[str, torch.Tensor]:
        """TransformerLens's deprecated ``cache_all``: :meth:`add_caching_hooks` for every hook.

        Returns:
            The dict the hooks fill.
        """
        return self.add_caching_hooks(None, incl_bwd, device, remove_batch_dim, cache)

    def cache_some(
        self,
        cache: dict[str, torch.Tensor] | None,
        names: NamesFilter,
        incl_bwd: bool = False,
        device: DeviceType = None,
        remove_batch_dim: bool = False,
    ) -> dict[str, torch.Tensor]:
        """TransformerLens's deprecated ``cache_some``: :meth:`add_caching_hooks` for ``names``.

        Returns:
            The dict the hooks fill.
        """
        return self.add_caching_hooks(names, incl_bwd, device, remove_batch_dim, cache)

    @overload
    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = ...,
        device: DeviceType = ...,
        remove_batch_dim: bool = ...,
        incl_bwd: bool = ...,
        reset_hooks_end: bool = ...,
        clear_contexts: bool = ...,
        pos_slice: Slice | SliceInput = ...,
        return_cache_object: Literal[True] = ...,
        **model_kwargs: Any,
    ) -> tuple[Any, ActivationCache]: ...

    @overload
    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = ...,
        device: DeviceType = ...,
        remove_batch_dim: bool = ...,
        incl_bwd: bool = ...,
        reset_hooks_end: bool = ...,
        clear_contexts: bool = ...,
        pos_slice: Slice | SliceInput = ...,
        return_cache_object: Literal[False],
        **model_kwargs: Any,
    ) -> tuple[Any, dict[str, torch.Tensor]]: ...

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = None,
        device: DeviceType = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        pos_slice: Slice | SliceInput = None,
        return_cache_object: bool = True,
        **model_kwargs: Any,
    ) -> tuple[Any, ActivationCache | dict[str, torch.Tensor]]:
        """Run the model and return its output with the activations it computed.

        Args:
            *model_args: Positional arguments for the model.
            names_filter: Which hook points to cache: None (all), a name, a list of names, or a
                predicate on names.
            device: Where to store activations; None keeps them on the model's device.
            remove_batch_dim: Drop the batch dimension (for batch size 1).
            incl_bwd: Call ``backward()`` on the output (which must be a scalar, e.g. a loss) and
                cache gradients as ``"<name>_grad"``.
            reset_hooks_end: Remove the caching hooks when done.
            clear_contexts: Also empty every hook point's ``ctx`` when done.
            pos_slice: Positions to keep (see `Slice`); an int keeps the position dimension.
            return_cache_object: Return an `ActivationCache`; False returns a plain dict.
            **model_kwargs: Keyword arguments for the model.

        Returns:
            The model output and the cache.

        Raises:
            HookNameError: If ``names_filter`` names a hook point that does not exist.
            ValueError: If ``incl_bwd`` is set and the output is not a scalar tensor.
        """
        cache_dict, fwd_hooks, bwd_hooks = self.get_caching_hooks(
            names_filter, incl_bwd, device, remove_batch_dim=remove_batch_dim, pos_slice=pos_slice
        )
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            model_out = self(*model_args, **model_kwargs)
            if incl_bwd:
                if not (isinstance(model_out, torch.Tensor) and model_out.numel() == 1):
                    raise ValueError(
                        "incl_bwd=True calls backward() on the model output, which must be a "
                        "scalar (e.g. return_type='loss')"
                    )
                model_out.backward()
        if return_cache_object:
            return model_out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return model_out, cache_dict


# Hooks whose activations are [batch, head, query_pos, key_pos]: positions are the query axis.
_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")
_FLATTENED_PARENTS = (".experts.", ".q_norm.", ".k_norm.")


def _pos_dim(name: str) -> int | None:
    """The position dimension (counting the batch dimension) of a hook's activation, if any.

    TransformerLens picks -3 for a few attention names and -2 otherwise, which slices the head axis
    of ``hook_rot_q``/``hook_q_input``/``hook_attn_in`` and the batch axis of ``hook_tokens``.
    Every HookedTransformer activation is ``[batch, pos, ...]`` except attention patterns, so we
    count from the front instead. MoE routing/expert hooks and q/k-norm hooks flatten the batch
    and position axes together, so there is no position axis to slice.
    """
    last = name.rsplit(".", 1)[-1]
    if last in _PATTERN_HOOKS:
        return 2
    if last.startswith("hook_expert") or any(part in name for part in _FLATTENED_PARENTS):
        return None
    return 1


def _save_activation(
    tensor: torch.Tensor,
    hook: HookPoint,
    *,
    suffix: str,
    cache: dict[str, torch.Tensor],
    device: DeviceType,
    remove_batch_dim: bool,
    pos_slice: Slice,
) -> None:
    """A caching hook: store a detached (and optionally moved and sliced) copy under the name."""
    assert hook.name is not None, "caching hooks need named hook points (call setup())"
    value = tensor.detach()
    if device is not None:
        value = value.to(device)
    pos_dim = _pos_dim(hook.name)
    if remove_batch_dim:
        value = value[0]
        pos_dim = None if pos_dim is None else pos_dim - 1
    if pos_slice.mode != "identity" and pos_dim is not None and value.ndim > pos_dim:
        value = pos_slice.apply(value, dim=pos_dim)
    cache[hook.name + suffix] = value

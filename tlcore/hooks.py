"""Hook points and the root module that manages them (TransformerLens 2.x semantics).

A `HookPoint` is an identity module placed at every named activation. A hook function
``fn(tensor, *, hook)`` attached to it sees the activation (forward) or the gradient with respect to
it (backward) and may return a replacement. `HookedRootModule` finds every hook point in a model
by its module name and adds, removes and scopes hooks: `HookedRootModule.run_with_hooks`,
`HookedRootModule.hooks`, `HookedRootModule.run_with_cache`.

Hooks are global state on the modules. The context manager and ``run_*`` helpers remove what they
added even when the forward pass raises; hooks added with `HookedRootModule.add_hook` stay until
`HookedRootModule.reset_hooks` (permanent hooks survive that too, unless asked).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, cast, overload

import torch
import torch.nn as nn
from jaxtyping import Shaped
from torch.utils.hooks import RemovableHandle

from tlcore.cache import ActivationCache
from tlcore.errors import HookNameError
from tlcore.hook_checks import cacheable_names, check_hook_result, hook_points_for, hooks_entered
from tlcore.utils.slicing import Slice, SliceInput

Direction = Literal["fwd", "bwd"]
DirectionOrBoth = Literal["fwd", "bwd", "both"]
NamesFilter = Callable[[str], bool] | Sequence[str] | str | None
DeviceType = str | torch.device | None


class HookFunction(Protocol):
    """A hook: called with the activation (or its gradient) and the `HookPoint` it fired on.

    It returns ``None`` to leave the tensor unchanged, or a tensor to use instead.
    """

    def __call__(self, tensor: torch.Tensor, *, hook: HookPoint) -> Any:  # noqa: D102
        ...


HookSpec = tuple[str | Callable[[str], bool], Callable[..., Any]]
"""One entry of ``fwd_hooks``/``bwd_hooks``: (hook name or predicate on names, hook function)."""


@dataclass
class LensHandle:
    """A registered hook, as TransformerLens records it.

    Attributes:
        hook: PyTorch's handle, used to remove the hook.
        is_permanent: Permanent hooks survive `HookedRootModule.reset_hooks` unless asked.
        context_level: The `HookedRootModule.hooks` nesting level that added it; None outside one.
    """

    hook: RemovableHandle
    is_permanent: bool = False
    context_level: int | None = None


class HookPoint(nn.Module):
    """An identity module marking a named activation that hooks can read or replace.

    Its ``name`` is set by `HookedRootModule.setup` to the module's full name in the model. ``ctx``
    is a dict hooks may use to keep state between calls.

    Backward hooks receive the gradient with respect to this point's output (after any forward
    hook replaced it). They are attached to the output tensor during the forward pass, so the hooks
    registered when the forward pass went through this point are the ones that fire in the
    backward pass, as with PyTorch module backward hooks.

    Examples:
        >>> import torch
        >>> hp = HookPoint()
        >>> hp.add_hook(lambda x, hook: x * 2)
        >>> hp(torch.ones(2))
        tensor([2., 2.])
        >>> hp.has_hooks
        True
        >>> hp.remove_hooks()
        >>> hp(torch.ones(2))
        tensor([1., 1.])
    """

    def __init__(self) -> None:
        super().__init__()
        self.fwd_hooks: list[LensHandle] = []
        self.bwd_hooks: list[LensHandle] = []
        self.ctx: dict[Any, Any] = {}
        self.name: str | None = None
        # Backward hook functions by handle id, and the forward hook that attaches them.
        self._bwd_fns: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._bwd_attacher: RemovableHandle | None = None

    def forward(self, x: Shaped[torch.Tensor, "..."]) -> Shaped[torch.Tensor, "..."]:
        """Return the input unchanged; hooks do the work.

        Args:
            x: The activation at this point.

        Returns:
            ``x`` itself.
        """
        return x

    @property
    def has_hooks(self) -> bool:
        """Whether any forward hook is registered (caching hooks included).

        Components read this to decide whether an activation must be materialised at all (e.g.
        attention patterns, which the fused attention kernel never forms).
        """
        return len(self._forward_hooks) > (self._bwd_attacher is not None)

    def add_hook(
        self,
        hook: HookFunction | Callable[..., Any],
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> None:
        """Register a hook on this point.

        A forward hook receives the activation and may return a replacement. A backward hook
        receives the gradient with respect to this point's output and may return a replacement
        gradient (a tensor, or a one-tensor tuple); like PyTorch module backward hooks, each
        backward hook sees the incoming gradient and the last replacement wins. Hooks run in
        registration order; ``prepend`` puts this one first.

        Args:
            hook: ``fn(tensor, *, hook)`` returning None or a replacement tensor.
            dir: ``"fwd"`` or ``"bwd"``.
            is_permanent: Keep the hook through `HookedRootModule.reset_hooks`.
            level: The context level that owns the hook (set by `HookedRootModule.hooks`).
            prepend: Run this hook before those already registered.

        Raises:
            ValueError: If ``dir`` is not ``"fwd"`` or ``"bwd"``.
        """
        if dir == "fwd":

            def fwd_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> Any:
                return check_hook_result(self, output, hook(output, hook=self), hook)

            fwd_hook.__name__ = repr(hook)
            pt_handle = self.register_forward_hook(fwd_hook, prepend=prepend)
            handles = self.fwd_hooks
        elif dir == "bwd":
            pt_handle = RemovableHandle(self._bwd_fns)
            self._bwd_fns[pt_handle.id] = hook
            if prepend:
                self._bwd_fns.move_to_end(pt_handle.id, last=False)
            if self._bwd_attacher is None:
                self._bwd_attacher = self.register_forward_hook(_attach_backward_hooks)
            handles = self.bwd_hooks
        else:
            raise ValueError(f"Invalid direction {dir!r}: expected 'fwd' or 'bwd'")
        if self._bwd_attacher is not None:
            # Gradients are taken w.r.t. the final output, so attach after every forward hook.
            cast("OrderedDict[int, Any]", self._forward_hooks).move_to_end(self._bwd_attacher.id)

        handle = LensHandle(pt_handle, is_permanent, level)
        if prepend:
            handles.insert(0, handle)
        else:
            handles.append(handle)

    def add_perma_hook(
        self, hook: HookFunction | Callable[..., Any], dir: Direction = "fwd"
    ) -> None:
        """Register a permanent hook (kept by `HookedRootModule.reset_hooks`).

        Args:
            hook: ``fn(tensor, *, hook)`` returning None or a replacement tensor.
            dir: ``"fwd"`` or ``"bwd"``.
        """
        self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(
        self,
        dir: DirectionOrBoth = "fwd",
        including_permanent: bool = False,
        level: int | None = None,
    ) -> None:
        """Remove hooks from this point.

        Args:
            dir: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: Also remove permanent hooks (whatever their level).
            level: Remove only non-permanent hooks added at this context level; None for all.

        Raises:
            ValueError: If ``dir`` is not one of the three directions.
        """
        if dir not in ("fwd", "bwd", "both"):
            raise ValueError(f"Invalid direction {dir!r}: expected 'fwd', 'bwd' or 'both'")

        def keep(handles: list[LensHandle]) -> list[LensHandle]:
            kept = []
            for handle in handles:
                removable = not handle.is_permanent and (
                    level is None or handle.context_level == level
                )
                if including_permanent or removable:
                    handle.hook.remove()
                else:
                    kept.append(handle)
            return kept

        if dir in ("fwd", "both"):
            self.fwd_hooks = keep(self.fwd_hooks)
        if dir in ("bwd", "both"):
            self.bwd_hooks = keep(self.bwd_hooks)
            if not self._bwd_fns and self._bwd_attacher is not None:
                self._bwd_attacher.remove()
                self._bwd_attacher = None

    def clear_context(self) -> None:
        """Empty ``ctx``, the dict hooks use to keep state."""
        self.ctx = {}

    def layer(self) -> int:
        """The block index of a hook named ``blocks.{layer}....``.

        Returns:
            The layer index.

        Raises:
            ValueError: If the hook has no name yet or its name is not inside a block.
        """
        if self.name is None:
            raise ValueError("Name cannot be None: call setup() on the root module first")
        parts = self.name.split(".")
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"Hook {self.name!r} is not inside a block ('blocks.{{layer}}....')")
        return int(parts[1])


def _attach_backward_hooks(
    hook_point: HookPoint, inputs: Any, output: torch.Tensor
) -> torch.Tensor | None:
    """Forward hook: make the backward hooks registered now fire on this output's gradient."""
    hook_fns = list(hook_point._bwd_fns.values())
    if not (hook_fns and torch.is_grad_enabled()):
        return None
    if not (isinstance(output, torch.Tensor) and output.requires_grad):
        return None
    # A fresh tensor, so the gradient is exactly the one flowing back through this point: the
    # input object may have other consumers, and a view would lose its hooks on an in-place op
    # (full module backward hooks instead forbid in-place ops and miss replaced outputs).
    output = output.clone()

    def run_hooks(grad: torch.Tensor) -> torch.Tensor | None:
        replacement = None
        for fn in hook_fns:
            result = fn(grad, hook=hook_point)
            if result is not None:
                replacement = result[0] if isinstance(result, tuple) else result
                check_hook_result(hook_point, grad, replacement, fn, "gradient")
        return replacement

    output.register_hook(run_hooks)
    return output


class HookedRootModule(nn.Module):
    """A root module that knows all its `HookPoint` s by name and manages hooks on them.

    Subclasses build their layers in ``__init__`` and then call `setup`. Hook entries name a hook
    point by its full module name (``"blocks.0.attn.hook_pattern"``) or by a predicate on names.

    Hooks are global state: `run_with_hooks`, `hooks` and `run_with_cache` remove the hooks they
    add when they finish (even on error); `add_hook` does not.
    """

    mod_dict: dict[str, nn.Module]
    hook_dict: dict[str, HookPoint]

    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.is_caching = False
        self.context_level = 0
        self.mod_dict = {}
        self.hook_dict = {}

    def setup(self) -> None:
        """Index every submodule and hook point by its full name.

        Call at the end of ``__init__``, after all layers exist. Sets each module's ``name``.
        """
        self.mod_dict = {}
        self.hook_dict = {}
        for name, module in self.named_modules():
            if name == "":
                continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                self.hook_dict[name] = module

    def hook_points(self) -> Iterable[HookPoint]:
        """All hook points, in module order.

        Returns:
            A view of the hook points.
        """
        return self.hook_dict.values()

    # ----- removing hooks -----

    def remove_all_hook_fns(
        self,
        direction: DirectionOrBoth = "both",
        including_permanent: bool = False,
        level: int | None = None,
    ) -> None:
        """Remove hooks from every hook point.

        Args:
            direction: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: Also remove permanent hooks.
            level: Remove only hooks added at this context level; None for all.
        """
        for hook_point in self.hook_points():
            hook_point.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        """Empty every hook point's ``ctx``."""
        for hook_point in self.hook_points():
            hook_point.clear_context()

    def reset_hooks(
        self,
        clear_contexts: bool = True,
        direction: DirectionOrBoth = "both",
        including_permanent: bool = False,
        level: int | None = None,
    ) -> None:
        """Remove hooks (not permanent ones, unless asked) and optionally clear hook contexts.

        Args:
            clear_contexts: Also empty every hook point's ``ctx``.
            direction: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: Also remove permanent hooks.
            level: Remove only hooks added at this context level; None for all.
        """
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent, level=level)
        self.is_caching = False

    # ----- adding hooks -----

    def check_hooks_to_add(
        self,
        hook_point: HookPoint,
        hook_point_name: str,
        hook: Callable[..., Any],
        dir: Direction = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> None:
        """Check a hook before `add_hook` registers it; a no-op here.

        Models override this to refuse hooks on points their current flags leave unused (as
        TransformerLens's ``HookedTransformer`` does for ``hook_result`` and friends).

        Args:
            hook_point: The hook point.
            hook_point_name: Its full name.
            hook: The hook function.
            dir: ``"fwd"`` or ``"bwd"``.
            is_permanent: Whether the hook is permanent.
            prepend: Whether the hook goes first.
        """

    def check_and_add_hook(
        self,
        hook_point: HookPoint,
        hook_point_name: str,
        hook: Callable[..., Any],
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> None:
        """Run `check_hooks_to_add`, then register the hook.

        Args:
            hook_point: The hook point.
            hook_point_name: Its full name.
            hook: The hook function.
            dir: ``"fwd"`` or ``"bwd"``.
            is_permanent: Keep the hook through `reset_hooks`.
            level: The context level that owns the hook.
            prepend: Run this hook before those already registered.
        """
        self.check_hooks_to_add(
            hook_point,
            hook_point_name,
            hook,
            dir=dir,
            is_permanent=is_permanent,
            prepend=prepend,
        )
        hook_point.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def add_hook(
        self,
        name: str | Callable[[str], bool],
        hook: HookFunction | Callable[..., Any],
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> None:
        """Add a hook that stays until removed (unlike `run_with_hooks` and `hooks`).

        Args:
            name: A hook name, or a predicate selecting every hook point whose name it accepts.
            hook: ``fn(tensor, *, hook)`` returning None or a replacement tensor.
            dir: ``"fwd"`` or ``"bwd"``.
            is_permanent: Keep the hook through `reset_hooks`.
            level: The context level that owns the hook.
            prepend: Run this hook before those already registered.

        Raises:
            HookNameError: If ``name`` is a string that names no hook point.
        """
        for hook_point_name, hook_point in self._select_hook_points(name):
            self.check_and_add_hook(
                hook_point,
                hook_point_name,
                hook,
                dir=dir,
                is_permanent=is_permanent,
                level=level,
                prepend=prepend,
            )

    def add_perma_hook(
        self,
        name: str | Callable[[str], bool],
        hook: HookFunction | Callable[..., Any],
        dir: Direction = "fwd",
    ) -> None:
        """Add a permanent hook (kept by `reset_hooks` unless ``including_permanent``).

        Args:
            name: A hook name, or a predicate on hook names.
            hook: ``fn(tensor, *, hook)`` returning None or a replacement tensor.
            dir: ``"fwd"`` or ``"bwd"``.
        """
        self.add_hook(name, hook, dir=dir, is_permanent=True)

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookedRootModule]:
        """Add hooks for the duration of a ``with`` block.

        Contexts nest: each has its own level, and on exit removes only the hooks it added.
        Backward hooks fire for the forward passes run inside the block, also when ``backward()``
        is called after it.

        Args:
            fwd_hooks: (name or predicate, hook function) pairs for the forward pass.
            bwd_hooks: The same for the backward pass.
            reset_hooks_end: Remove this context's hooks on exit.
            clear_contexts: Also empty every hook point's ``ctx`` on exit.

        Yields:
            The model.

        Raises:
            HookNameError: If a hook name names no hook point, or names one that needs a flag
                that is off (as `add_hook`); nothing is added then. A predicate skips such points.
            HookConcurrencyError: If another thread's hooks are active on this model: hook one
                model from one thread at a time.

        Examples:
            >>> import torch
            >>> class Double(HookedRootModule):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.hook_x = HookPoint()
            ...         self.setup()
            ...     def forward(self, x):
            ...         return self.hook_x(x) * 2
            >>> model = Double()
            >>> with model.hooks(fwd_hooks=[("hook_x", lambda x, hook: x + 1)]):
            ...     model(torch.zeros(1))
            tensor([2.])
            >>> model(torch.zeros(1))
            tensor([0.])
        """
        # Resolve every name first, so a typo changes nothing and runs nothing.
        directions: tuple[tuple[Direction, Sequence[HookSpec]], ...] = (
            ("fwd", fwd_hooks),
            ("bwd", bwd_hooks),
        )
        planned = [
            (hook_point, fn, direction)
            for direction, specs in directions
            for name, fn in specs
            for hook_point in hook_points_for(self, name, fn, direction)  # as add_hook checks
        ]
        with hooks_entered(self):  # one thread's hooks at a time on one model
            self.context_level += 1
            try:
                for hook_point, fn, direction in planned:
                    hook_point.add_hook(fn, dir=direction, level=self.context_level)
                yield self
            finally:
                if reset_hooks_end:
                    self.reset_hooks(
                        clear_contexts, including_permanent=False, level=self.context_level
                    )
                self.context_level -= 1

    def run_with_hooks(
        self,
        *model_args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """Run the forward pass with temporary hooks.

        Backward hooks given here are attached to the activations of this forward pass, so they
        fire when you call ``backward()`` on its output after this returns, even though the hooks
        themselves are already removed.

        Args:
            *model_args: Positional arguments for ``forward``.
            fwd_hooks: (name or predicate, hook function) pairs for the forward pass.
            bwd_hooks: The same for the backward pass.
            reset_hooks_end: Remove the hooks added here when done.
            clear_contexts: Also empty every hook point's ``ctx`` when done.
            **model_kwargs: Keyword arguments for ``forward``.

        Returns:
            What ``forward`` returns.

        Raises:
            HookNameError: If a hook name names no hook point; nothing runs then.
        """
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts) as hooked_model:
            return hooked_model.forward(*model_args, **model_kwargs)

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
        fwd_hooks: list[HookSpec] = [(name, partial(save, suffix="")) for name in selected]
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

    # ----- name resolution -----

    def _select_hook_points(self, name: str | Callable[[str], bool]) -> list[tuple[str, HookPoint]]:
        """The hook points a hook entry refers to: one by name, or all a predicate accepts."""
        if isinstance(name, str):
            return [(name, self._hook_point(name))]
        if callable(name):
            return [(n, hp) for n, hp in self.hook_dict.items() if name(n)]
        raise TypeError(f"A hook is selected by a name or a predicate on names, got {name!r}")

    def _hook_point(self, name: str) -> HookPoint:
        """The hook point called ``name``, or a `HookNameError` listing close matches."""
        hook_point = self.hook_dict.get(name)
        if hook_point is None:
            raise HookNameError(self._unknown_hook_message(name))
        return hook_point

    def _unknown_hook_message(self, name: str) -> str:
        if not self.hook_dict:
            return f"No hook point named {name!r}: this model has no hook points (was setup() run?)"
        if name in self.mod_dict:
            problem = f"{name!r} is a module, not a hook point"
        else:
            problem = f"No hook point named {name!r}"
        close = difflib.get_close_matches(name, self.hook_dict, n=5, cutoff=0.6)
        hint = f"Did you mean: {', '.join(close)}?" if close else "No close matches."
        return f"{problem}. {hint} List them all with model.hook_dict.keys()."

    def _names_predicate(self, names_filter: NamesFilter) -> Callable[[str], bool]:
        """Turn any accepted ``names_filter`` into a predicate, checking explicit names exist."""
        if names_filter is None:
            return lambda name: True
        if isinstance(names_filter, str):
            self._hook_point(names_filter)
            single = names_filter
            return lambda name: name == single
        if callable(names_filter):
            return names_filter
        if isinstance(names_filter, (Sequence, set, frozenset)):
            wanted = set(names_filter)
            for name in names_filter:
                self._hook_point(name)
            return lambda name: name in wanted
        raise ValueError(
            "names_filter must be None, a hook name, a list of hook names, or a predicate on names"
        )


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

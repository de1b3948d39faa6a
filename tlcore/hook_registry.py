"""`HookRegistry`: finds a model's hook points by name and adds, removes and scopes hooks.

A hook function ``fn(tensor, *, hook)`` attached to a `HookPoint` sees the activation (forward) or
the gradient with respect to it (backward) and may return a replacement. Hook entries name a hook
point by its full module name (``"blocks.0.attn.hook_pattern"``) or by a predicate on names.

Hooks are global state on the modules. The context manager and ``run_with_hooks`` remove what they
added even when the forward pass raises; hooks added with `HookRegistry.add_hook` stay until
`HookRegistry.reset_hooks` (permanent hooks survive that too, unless asked). Caching lives one
level up, in `tlcore.hooks.HookedRootModule`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch.nn as nn

from tlcore.errors import HookNameError
from tlcore.hook_checks import hook_points_for, hooks_entered
from tlcore.hook_points import Direction, DirectionOrBoth, HookFunction, HookPoint

HookSpec = tuple[str | Callable[[str], bool], Callable[..., Any]]
"""One entry of ``fwd_hooks``/``bwd_hooks``: (hook name or predicate on names, hook function)."""
NamesFilter = Callable[[str], bool] | Sequence[str] | str | None


class HookRegistry(nn.Module):
    """A module that knows all its `HookPoint` s by name and manages hooks on them.

    Subclasses build their layers in ``__init__`` and then call `setup`. `run_with_hooks` and
    `hooks` remove the hooks they add when they finish (even on error); `add_hook` does not.
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
            hook_point_name: Its full name.
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
            hook_point_name: Its full name.
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
    ) -> Iterator[HookRegistry]:
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
            HookNameError: If a hook name names no hook point; nothing is added then.

        Examples:
            >>> import torch
            >>> class Double(HookRegistry):
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

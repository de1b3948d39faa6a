"""`HookPoint`: an identity module at a named activation, where hooks read or replace it.

TransformerLens's import path is ``transformer_lens.hook_points``; tlcore's is
``tlcore.hook_points`` (``tlcore.hooks`` re-exports these names). The components import only this
module, so the model's building blocks do not depend on the hook registry or the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import torch
import torch.nn as nn
from jaxtyping import Shaped
from torch.utils.hooks import RemovableHandle

from tlcore.hook_checks import check_hook_result

Direction = Literal["fwd", "bwd"]
DirectionOrBoth = Literal["fwd", "bwd", "both"]


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

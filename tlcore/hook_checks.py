"""Checks around hooks: what a hook returns, which points a hook context may use, and threads.

- A forward hook may return None (keep the activation) or a tensor that replaces it; anything else
  (another shape, dtype or device, a non-tensor) would fail later with an error naming no hook,
  or silently change the model, so :func:`check_hook_result` raises
  :class:`~tlcore.errors.HookReturnError` naming the hook point and what it expects. Backward
  hooks' replacement gradients are checked the same way.
- :func:`hook_points_for` gives the hook points a ``hooks()`` / ``run_with_hooks`` /
  ``run_with_cache`` entry refers to, running the model's ``check_hooks_to_add`` as ``add_hook``
  does: a hook named explicitly at a point that only fires behind a flag (``hook_result`` with
  ``use_attn_result`` off, ...) raises; a predicate simply skips such points, which would never
  fire.
- Hooks live on the model's modules, so one model must not be hooked from two threads at once:
  :func:`hooks_entered` makes ``hooks()`` raise :class:`~tlcore.errors.HookConcurrencyError` if
  another thread's hooks are active on the same model. Use one model (``copy.deepcopy``) per
  thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tlcore.errors import HookConcurrencyError, HookNameError, HookReturnError

_THREADS_ATTR = "_tlcore_hook_threads"
_LOCK = threading.Lock()


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return str(name)


def check_hook_result(
    hook_point: Any, activation: torch.Tensor, result: Any, fn: Any, what: str = "activation"
) -> Any:
    """Check what a hook returned against the tensor it replaces.

    Args:
        hook_point: The ``HookPoint`` (its ``name`` goes in the message).
        activation: The activation (or gradient) the hook received.
        result: What the hook returned.
        fn: The hook function.
        what: ``"activation"`` or ``"gradient"``.

    Returns:
        ``result`` unchanged (None or a matching tensor).

    Raises:
        HookReturnError: Naming the hook point, the hook, and the expected shape and dtype.
    """
    if result is None or not isinstance(activation, torch.Tensor):
        return result
    name = getattr(hook_point, "name", None) or "<unnamed hook point>"
    expected = f"shape {tuple(activation.shape)}, dtype {activation.dtype}"
    if not isinstance(result, torch.Tensor):
        raise HookReturnError(
            f"hook {_describe(fn)} at '{name}' returned a {type(result).__name__}; return None to "
            f"keep the {what}, or a tensor with its {expected}"
        )
    if result.shape != activation.shape:
        raise HookReturnError(
            f"hook {_describe(fn)} at '{name}' returned shape {tuple(result.shape)}; the {what} "
            f"it replaces has {expected}"
        )
    if result.dtype != activation.dtype:
        raise HookReturnError(
            f"hook {_describe(fn)} at '{name}' returned dtype {result.dtype}; the {what} it "
            f"replaces has {expected} (cast with .to({activation.dtype}))"
        )
    if result.device != activation.device:
        raise HookReturnError(
            f"hook {_describe(fn)} at '{name}' returned a tensor on {result.device}; the {what} "
            f"it replaces is on {activation.device}"
        )
    return result


def hook_points_for(
    model: Any, name: str | Callable[[str], bool], fn: Any, direction: str
) -> list[Any]:
    """The hook points a hook-context entry selects, checked as ``add_hook`` checks them.

    Args:
        model: A ``HookedRootModule``.
        name: A hook name or a predicate on names.
        fn: The hook function.
        direction: ``"fwd"`` or ``"bwd"``.

    Returns:
        The hook points.

    Raises:
        HookNameError: If a name names no hook point, or an explicitly named point needs a flag
            that is off (the model's ``check_hooks_to_add`` says which).
    """
    selected = model._select_hook_points(name)
    if isinstance(name, str):
        for point_name, point in selected:
            model.check_hooks_to_add(point, point_name, fn, dir=direction)
        return [point for _, point in selected]
    return [point for point_name, point in selected if is_enabled(model, point_name, point)]


def is_enabled(model: Any, point_name: str, point: Any) -> bool:
    """Tell whether a hook point fires under the model's current flags.

    Args:
        model: A ``HookedRootModule``.
        point_name: The hook point's name.
        point: The hook point.

    Returns:
        False if the model's ``check_hooks_to_add`` refuses it.
    """
    try:
        model.check_hooks_to_add(point, point_name, None)
    except HookNameError:
        return False
    return True


def cacheable_names(model: Any, names: list[str], explicit: bool) -> list[str]:
    """The names ``run_with_cache`` caches: explicit names are checked, others filtered.

    Args:
        model: A ``HookedRootModule``.
        names: The hook names the ``names_filter`` selected.
        explicit: The filter named them (a string or a list) rather than selecting them (None or
            a predicate).

    Returns:
        The names to cache.

    Raises:
        HookNameError: If an explicitly named point needs a flag that is off.
    """
    if explicit:
        for name in names:
            model.check_hooks_to_add(model.hook_dict[name], name, None)
        return names
    return [name for name in names if is_enabled(model, name, model.hook_dict[name])]


@contextlib.contextmanager
def hooks_entered(model: Any) -> Iterator[None]:
    """Mark this thread's hooks as active on ``model`` for the duration of a hook context.

    Args:
        model: The model.

    Yields:
        Nothing.

    Raises:
        HookConcurrencyError: If another thread's hook context is active on the same model.
    """
    me = threading.get_ident()
    with _LOCK:
        owners = model.__dict__.setdefault(_THREADS_ATTR, {})
        others = [t for t, depth in owners.items() if t != me and depth > 0]
        if others:
            raise HookConcurrencyError(
                f"hooks are active on this {type(model).__name__} in another thread; hooks live "
                f"on the model's modules, so each would run the other's. Hook one model per "
                f"thread (copy.deepcopy(model) for each)"
            )
        owners[me] = owners.get(me, 0) + 1
    try:
        yield
    finally:
        with _LOCK:
            owners[me] -= 1
            if not owners[me]:
                del owners[me]

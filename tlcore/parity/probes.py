"""Where tlcore and HuggingFace first disagree inside a layer: probes the components declare.

A probe pairs a tlcore value (a hook, or a value computed from hooks) with a tensor of the HF
reference (a module's input or output) that must be equal on a correct model. Nothing here knows
a layout or a component kind: the block's wiring says which norm feeds each branch and whether a
post-norm sits before the branch's output hook; each branch module says which HF module it is
(``hf_names``), which of its hooks equal which HF tensors (``hf_probes``) and which HF child
produces its output (``hf_output_names``); each norm says whether its ``hook_normalized`` is its
output or precedes its weight (then the probe compares the norm's output computed from the hook).
A plugin's components that declare these get the first-divergence search for free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import nn

from tlcore.components.norms import Norm
from tlcore.components.residual_io import ResidualIO


@dataclass(frozen=True)
class Probe:
    """One comparable point: a tlcore value and the HF tensor it must equal.

    Attributes:
        place: What is reported when it diverges: a hook name, or a module (``blocks.0.ln1``) for
            a value computed from hooks.
        hooks: The cache entries the value is computed from.
        value: ``value(cache) -> tensor``.
        hf_module: The HF module whose input or output is compared.
        which: ``input`` or ``output``.
    """

    place: str
    hooks: tuple[str, ...]
    value: Callable[[Any], torch.Tensor]
    hf_module: nn.Module
    which: str


def hook_probe(hook: str, hf_module: nn.Module, which: str) -> Probe:
    """A probe comparing a hook's value itself.

    Args:
        hook: The full hook name.
        which: ``input`` or ``output``.

    Returns:
        The probe.
    """
    return Probe(hook, (hook,), lambda cache: cache[hook], hf_module, which)


def norm_output_probe(name: str, norm: Any, hf_module: nn.Module, which: str) -> Probe | None:
    """A probe comparing a norm's output (from its ``hook_normalized``) with an HF tensor.

    Args:
        name: The norm's module name (``blocks.0.ln1``).
        norm: The norm module (a :class:`~tlcore.components.norms.Norm`, else no probe).
        hf_module: The HF module whose input or output is the norm's output.
        which: ``input`` or ``output``.

    Returns:
        The probe, reported at the hook when it holds the output itself, else at the norm.
    """
    if not isinstance(norm, Norm):
        return None
    hook = f"{name}.hook_normalized"
    if not norm.hook_before_affine:
        return hook_probe(hook, hf_module, which)
    return Probe(
        name, (hook,), lambda cache: norm.output_from_normalized(cache[hook]), hf_module, which
    )


def decoder_layers(hf_model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The HF model's list of decoder layers (the first ``ModuleList`` of ``n_layers``)."""
    lists = [
        m
        for _, m in hf_model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == n_layers
    ]
    # A multimodal wrapper also holds a vision tower's layers: its language model's come first.
    text = getattr(getattr(hf_model, "model", None), "language_model", None)
    if isinstance(text, nn.Module):
        lists = [m for m in lists if any(m is sub for sub in text.modules())] or lists
    if not lists:
        raise RuntimeError(f"cannot find the HF model's list of {n_layers} decoder layers")
    return lists[0]


def child(module: nn.Module | None, names: tuple[str, ...]) -> nn.Module | None:
    """The first of ``names`` that is a submodule of ``module``, or None."""
    for name in names:
        sub = getattr(module, name, None) if module is not None else None
        if isinstance(sub, nn.Module):
            return sub
    return None


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("hidden_states", kwargs.get("input"))
    return value if isinstance(value, torch.Tensor) else None


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def capture(targets: dict[Any, tuple[nn.Module, str]]) -> Iterator[dict[Any, torch.Tensor]]:
    """Record ``input`` or ``output`` tensors of HF submodules while the model runs.

    Args:
        targets: ``key -> (module, "input" | "output")``.

    Yields:
        ``key -> tensor`` (filled as the modules run).
    """
    captured: dict[Any, torch.Tensor] = {}
    handles = []
    for key, (module, which) in targets.items():
        if which == "input":

            def pre(mod: nn.Module, args: Any, kwargs: Any, key: Any = key) -> None:
                value = _first_tensor(args, kwargs)
                if value is not None:
                    # Cloned: HF layers may update a module's output in place afterwards
                    # (Falcon adds attention into the MLP output with +=).
                    captured[key] = value.detach().clone()

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(mod: nn.Module, args: Any, output: Any, key: Any = key) -> None:
                captured[key] = _output_tensor(output).detach().clone()

            handles.append(module.register_forward_hook(post))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def layer_probes(model: Any, hf_layer: nn.Module, layer: int) -> list[Probe]:
    """The probes of one block, in forward order, from the block's and components' declarations.

    Only pairs that mean the same thing in both libraries are listed, so that a correct model never
    shows a false divergence (the parity tests check this on every spec).

    Args:
        model: A tlcore model.
        hf_layer: The HF decoder layer of the same index.

    Returns:
        The probes.
    """
    block = model.blocks[layer]
    prefix = f"blocks.{layer}"
    probes: list[Probe] = []
    for branch in block.wiring.branches:
        module = getattr(block, branch.name)
        if not isinstance(module, ResidualIO):
            continue
        hf_branch = child(hf_layer, module.hf_names)
        if hf_branch is None:
            continue
        norm = getattr(block, branch.norm, None) if branch.norm is not None else None
        if norm is not None:  # the norm reading the stream: its output is the branch input
            probe = norm_output_probe(f"{prefix}.{branch.norm}", norm, hf_branch, "input")
            probes += [probe] if probe is not None else []
        for declared in module.hf_probes():
            hf_module = child(hf_branch, declared.hf_names) if declared.hf_names else hf_branch
            if hf_module is not None:
                hook = f"{prefix}.{branch.name}.{declared.hook}"
                probes.append(hook_probe(hook, hf_module, declared.which))
        if branch.post_norm is None:  # else the output hook sits after a norm HF applies later
            out = child(hf_branch, module.hf_output_names) or hf_branch
            probes.append(hook_probe(f"{prefix}.{branch.out_hook}", out, "output"))
    return probes


def run_probes(
    model: Any, probes: list[Probe], hf_model: nn.Module, tokens: torch.Tensor
) -> list[tuple[str, float]]:
    """Run both models once and compare every probe.

    Args:
        model: The tlcore model.
        hf_model: Its HF reference.
        tokens: ``[batch, pos]`` tokens.

    Returns:
        ``(place, max abs diff)`` for every probe both sides produced with matching shapes.
    """
    names = sorted({hook for p in probes for hook in p.hooks if hook in model.hook_dict})
    targets = {n: (p.hf_module, p.which) for n, p in enumerate(probes)}
    with capture(targets) as captured, torch.no_grad():
        hf_model(tokens)
        _, cache = model.run_with_cache(tokens, names_filter=names)
    out = []
    for n, probe in enumerate(probes):
        if n not in captured or not all(h in cache.cache_dict for h in probe.hooks):
            continue
        with torch.no_grad():
            ours, ref = probe.value(cache), captured[n]
        if ours.dim() == 4 and ref.dim() == 3:  # [batch, pos, head, d_head] vs [batch, pos, h*d]
            ours = ours.flatten(-2)
        if ours.shape != ref.shape:
            continue
        out.append((probe.place, float((ours - ref).abs().max())))
    return out


def probe_layer(
    model: Any, hf_model: nn.Module, tokens: Int[torch.Tensor, "batch pos"], layer: int
) -> list[tuple[str, float]]:
    """Compare every value of one block that has an HF counterpart.

    Args:
        model: An unprocessed tlcore model.
        hf_model: Its HF reference.
        tokens: ``[batch, pos]`` tokens.

    Returns:
        ``(place, max abs diff)`` in forward order (heads flattened to match HF's layout).
    """
    hf_layer = decoder_layers(hf_model, model.cfg.n_layers)[layer]
    return run_probes(model, layer_probes(model, hf_layer, layer), hf_model, tokens)

"""How a block is wired into the residual stream, declared as data the block layout owns.

A block layout (the ``block`` slot) states, for each branch (attention, MLP; later other mixers):
which residual the branch reads (``hook_resid_pre`` or ``hook_resid_mid``), the norm that reads
it into the branch (or none), the post-norm between the branch output and its output hook (or
none), the output hook, and how that hook's value enters the residual stream (identity, a constant
multiplier, a learned per-channel gate...). A layout whose stream is renormalised after an add
(post-norm) names those norms in :attr:`BlockWiring.stream_norms` and is not additive.

Everything that reasons about the residual stream reads this declaration instead of a table of
layout names: ``ActivationCache``'s decompositions, weight processing (what ``fold_ln`` folds and
whether centring is exact) and the parity tool's probes. A plugin's layout declares its wiring and
gets all three.

Example:
    >>> wiring = BlockWiring((Branch("attn", norm="ln1"), Branch("mlp", "hook_resid_mid", "ln2")))
    >>> wiring.norm_names, wiring.additive, wiring.branch("mlp").out_hook
    (('ln1', 'ln2'), True, 'hook_mlp_out')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

ResidualHook = Literal["hook_resid_pre", "hook_resid_mid", "hook_resid_mid_cross"]


class ResidMap(Protocol):
    """A map from a branch's output hook to what the residual stream receives.

    It is linear and acts on the last (``d_model``) axis the same way at every position, so the
    pieces of a branch output (heads, neurons, biases) map to pieces of its contribution.
    """

    @property
    def preserves_mean(self) -> bool:
        """A zero-mean vector stays zero-mean (centring the writing weights stays exact)."""
        ...

    def channel(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """Apply the map to ``[..., d_model]`` (``block`` holds any parameters it reads)."""
        ...


@dataclass(frozen=True)
class Scale:
    """Multiply by a constant before the add (Granite's ``residual_multiplier``)."""

    factor: float
    preserves_mean: bool = True

    def channel(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """``x * factor``."""
        return x * self.factor


@dataclass(frozen=True)
class ChannelGate:
    """Multiply by a learned per-channel vector, the block's parameter ``param`` ``[d_model]``."""

    param: str
    preserves_mean: bool = False

    def channel(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """``x * block.<param>``."""
        gate = getattr(block, self.param)
        return x * gate.to(x)


@dataclass(frozen=True)
class Branch:
    """One branch of a block: the module at ``block.<name>`` and how it meets the residual stream.

    Attributes:
        name: The block attribute of the branch module (``attn``, ``mlp``); also the stem of its
            output hook (``hook_attn_out``) and of its ``decompose_resid`` labels.
        reads: The block hook whose value the branch reads.
        norm: The block attribute of the norm between that residual and the branch, or None.
        post_norm: The norm between the branch output and its output hook, or None.
        to_resid: Maps from the output hook's value to what is added to the residual stream.
    """

    name: str
    reads: ResidualHook = "hook_resid_pre"
    norm: str | None = None
    post_norm: str | None = None
    to_resid: tuple[ResidMap, ...] = ()

    @property
    def out_hook(self) -> str:
        """The block hook on the branch output (after its post-norm): ``hook_{name}_out``."""
        return f"hook_{self.name}_out"

    def into_resid(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """What the residual stream receives from ``x``, a value (or piece) of the output hook.

        Args:
            x: ``[..., d_model]``.
            block: The block (its gates).

        Returns:
            ``x`` through every map of :attr:`to_resid`.
        """
        for step in self.to_resid:
            x = step.channel(x, block)
        return x

    @property
    def preserves_mean(self) -> bool:
        """Whether a zero-mean write to the branch output reaches the stream zero-mean."""
        return self.post_norm is None and all(step.preserves_mean for step in self.to_resid)


@dataclass(frozen=True)
class BlockWiring:
    """A block layout's wiring: its branches in forward order and its stream norms.

    Attributes:
        branches: The branches, in the order the block runs them.
        stream_norms: Norms applied to the residual stream itself after an add (post-norm
            layouts: ``ln1(x + attn x)``). With any, the stream is not a sum of branch outputs.
    """

    branches: tuple[Branch, ...]
    stream_norms: tuple[str, ...] = ()

    @property
    def additive(self) -> bool:
        """Whether ``resid_post = resid_pre + Σ branch contributions`` (no stream norm)."""
        return not self.stream_norms

    def branch(self, name: str) -> Branch | None:
        """The branch called ``name``, or None."""
        return next((b for b in self.branches if b.name == name), None)

    @property
    def input_norms(self) -> tuple[str, ...]:
        """The norms reading the residual stream into a branch (each once, in forward order)."""
        return tuple(dict.fromkeys(b.norm for b in self.branches if b.norm is not None))

    @property
    def norm_names(self) -> tuple[str, ...]:
        """Every norm the block owns (input, post and stream norms), each once."""
        names = [n for b in self.branches for n in (b.norm, b.post_norm) if n is not None]
        return tuple(dict.fromkeys([*names, *self.stream_norms]))

    @property
    def has_resid_mid(self) -> bool:
        """Whether some branch reads ``hook_resid_mid`` (parallel layouts have none)."""
        return any(b.reads == "hook_resid_mid" for b in self.branches)

    def mlp_input_branches(self, name: str = "mlp") -> tuple[Branch, ...]:
        """The branches whose outputs the ``name`` branch reads within the same block.

        Args:
            name: The reading branch.

        Returns:
            The earlier branches when it reads ``hook_resid_mid``, else none.
        """
        target = self.branch(name)
        if target is None or target.reads != "hook_resid_mid":
            return ()
        return self.branches[: self.branches.index(target)]

"""What a component reads from and writes to the residual stream, declared by the component.

Weight processing needs to know which parameters read the residual stream (``fold_ln`` folds a
norm's weight into them, and centres them for LayerNorm) and which write to it
(``center_writing_weights``). Each component that takes part says so through
:meth:`ResidualIO.residual_readers` and :meth:`ResidualIO.residual_writers`; processing never
looks at a component's class or kind.

The parity tool asks the same components which of their hooks equal a HuggingFace module's input
or output (:meth:`ResidualIO.hf_probes`), so its first-divergence search covers a plugin's
components too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class Reader:
    """A linear map reading the residual stream: ``module.<weight>`` (``d_model`` on ``axis``).

    ``module.<bias>`` is its bias (it may be None; folding a LayerNorm bias creates it).
    """

    module: nn.Module
    weight: str
    bias: str
    axis: int


@dataclass(frozen=True)
class Writer:
    """A parameter whose last axis is written into the residual stream (``W_O``, ``b_out``...)."""

    module: nn.Module
    name: str


@dataclass(frozen=True)
class HFProbe:
    """A hook of this component that equals a tensor of the HuggingFace reference module.

    Attributes:
        hook: The hook's name relative to the component (``hook_q``).
        hf_names: Candidate child names of the HF module (the first present one is used); empty
            means the HF module itself.
        which: ``input`` (the child's first positional input) or ``output``.
    """

    hook: str
    hf_names: tuple[str, ...]
    which: Literal["input", "output"]


class ResidualIO:
    """Declarations of a component that reads the residual stream and writes back to it.

    Class attributes name the HF reference's modules for the parity tool: :attr:`hf_names` are
    the candidate names of the component's own HF module inside a decoder layer, and
    :attr:`hf_output_names` the child whose output equals this component's output (before any
    post-norm of the block).
    """

    hf_names: tuple[str, ...] = ()
    hf_output_names: tuple[str, ...] = ()

    def residual_readers(self) -> list[Reader]:
        """The linear maps that read the (normalised) residual stream, for ``fold_ln``.

        Returns:
            Readers; weight processing refuses the model when a component returns none.
        """
        return []

    def residual_writers(self) -> list[Writer]:
        """The parameters that write to the residual stream, for ``center_writing_weights``.

        Returns:
            Writers (their last axis is ``d_model``).
        """
        return []

    def output_bias(self) -> torch.Tensor | None:
        """The bias added to every position's output (``b_O``, ``b_out``), or None.

        Returns:
            ``[d_model]`` or None.
        """
        return None

    def hf_probes(self) -> list[HFProbe]:
        """Hooks of this component that equal HF tensors on a correct model (parity probes).

        Returns:
            Probes in forward order; list only pairs that mean the same thing in both libraries.
        """
        return []

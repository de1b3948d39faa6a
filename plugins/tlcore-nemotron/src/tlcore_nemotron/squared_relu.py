"""The ``mlp/squared_relu`` trait: a plain two-layer MLP whose activation is ``relu(x)²``.

tlcore's activation table has no ReLU² and is not a plugin hook, so the plugin brings a trait
kind whose component is tlcore's own :class:`~tlcore.components.mlp.MLP` with the activation
swapped. Keeping the core class keeps its parameter names (``W_in``, ``b_in``, ``W_out``,
``b_out``), its hooks (``hook_pre`` = ``W_in x + b_in``, ``hook_post`` = ``relu(hook_pre)²``) and
weight processing, which recognises ``MLP`` instances.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float

from tlcore.components.mlp import MLP
from tlcore.spec import Trait


def squared_relu(x: Float[torch.Tensor, "*shape"]) -> Float[torch.Tensor, "*shape"]:
    """``relu(x)²``, as HF's ``ReLUSquaredActivation`` (``hidden_act: relu2``) computes it.

    Args:
        x: Pre-activations.

    Returns:
        Activations.

    Example:
        >>> squared_relu(torch.tensor([-2.0, 3.0]))
        tensor([0., 9.])
    """
    return torch.square(torch.relu(x))


class SquaredReLUMLPTrait(Trait):
    """A non-gated MLP ``W_out · relu(W_in x + b_in)² + b_out``."""

    slot = "mlp"
    linear_io = True
    kind: Literal["squared_relu"] = "squared_relu"
    act: Literal["relu2"] = "relu2"
    """The HF ``hidden_act`` this trait implements; a spec passes ``{hf: hidden_act}`` so that a
    checkpoint asking for another activation is refused instead of computed wrongly."""
    bias: bool = False
    """Whether the checkpoint has MLP biases (HF ``mlp_bias``); absent ones are zeros."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("act_fn", self.act)
        cfg.setdefault("gated_mlp", False)


class SquaredReLUMLP(MLP):
    """tlcore's plain MLP with the ReLU² activation.

    Args:
        d_model: Input/output width.
        d_mlp: Hidden width.
        dtype: Parameter dtype.
    """

    def __init__(self, d_model: int, d_mlp: int, dtype: torch.dtype) -> None:
        # The base class looks its activation up by name; "relu" is a placeholder replaced below.
        super().__init__(d_model, d_mlp, "relu", dtype)
        self.act_fn = squared_relu


def make_squared_relu_mlp(trait: SquaredReLUMLPTrait, cfg: Any, layer: int) -> SquaredReLUMLP:
    """Component factory for ``mlp/squared_relu`` (the ``mlp`` slot's factory signature).

    Args:
        trait: The resolved trait.

    Returns:
        The MLP module.
    """
    return SquaredReLUMLP(cfg.d_model, cfg.d_mlp, cfg.dtype)

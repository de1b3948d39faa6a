"""Names TransformerLens modules define that tlcore has no module for.

Only what libraries written for TransformerLens import: the loss type aliases of
``transformer_lens.HookedTransformer`` and the component base class ``CanBeUsedAsMLP`` (SAELens
annotates with it), which tlcore's MLP components satisfy in ``isinstance`` checks.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import nn

SingleLoss = Float[torch.Tensor, ""]
"""A scalar loss (``return_type="loss"``)."""
LossPerToken = Float[torch.Tensor, "batch pos-1"]
"""Per-token losses (``loss_per_token=True``)."""
Loss = SingleLoss | LossPerToken

SUPPORTED_ACTIVATIONS: dict[str, Any]


def _mlp_classes() -> tuple[type, ...]:
    from tlcore.components.mlp import MLP
    from tlcore.components.moe import MoE

    return (MLP, MoE)


class _UsableAsMLP(type(nn.Module)):  # type: ignore[misc]
    def __instancecheck__(cls, obj: Any) -> bool:
        return type.__instancecheck__(cls, obj) or isinstance(obj, _mlp_classes())

    def __subclasscheck__(cls, sub: type) -> bool:
        return type.__subclasscheck__(cls, sub) or issubclass(sub, _mlp_classes())


class CanBeUsedAsMLP(nn.Module, metaclass=_UsableAsMLP):
    """TransformerLens's base of everything usable as a block's MLP.

    tlcore's plain, gated and mixture-of-experts MLPs count as instances (``isinstance`` and
    ``issubclass`` say so), so type checks in code written for TransformerLens pass.
    """


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_ACTIVATIONS":  # TransformerLens's name for its activation table
        from tlcore.utils.activations import ACTIVATION_FN_DICT

        return ACTIVATION_FN_DICT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

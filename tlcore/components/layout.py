"""Memory layout of projection weights: TransformerLens's shapes, ``F.linear``'s memory order.

``W_Q`` has TransformerLens's shape ``[head_index, d_model, d_head]`` but is stored as a permuted
view of a contiguous ``[head_index, d_head, d_model]`` buffer, which is exactly HF's
``q_proj.weight``. The forward pass then hands ``F.linear`` a contiguous weight and runs HF's own
kernel with no copy. Values and shapes never change; only ``.stride()`` does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

LayoutKind = Literal["in_heads", "out_heads", "matrix"]


def linear_layout(param: torch.Tensor, kind: LayoutKind | str) -> torch.Tensor:
    """Re-stride a TransformerLens-shaped weight so its ``F.linear`` view is contiguous.

    Args:
        param: The weight.
        kind: ``"in_heads"`` (``W_Q``-like ``[n, d_model, d_head]``), ``"out_heads"`` (``W_O``,
            ``[n, d_head, d_model]``), or ``"matrix"`` (``[d_in, d_out]``: ``W_in``, ``W_out``,
            ``W_U``).

    Returns:
        A tensor equal to ``param`` with the preferred strides (``param`` itself when it already
        has them: no copy).

    Example:
        >>> w = torch.arange(6.0).reshape(2, 3)
        >>> out = linear_layout(w, "matrix")
        >>> torch.equal(out, w), out.T.is_contiguous()
        (True, True)
    """
    if kind == "in_heads":
        return param.permute(0, 2, 1).contiguous().permute(0, 2, 1)
    if kind == "out_heads":
        n, d_head, d_model = param.shape
        return param.reshape(n * d_head, d_model).T.contiguous().T.view(n, d_head, d_model)
    return param.T.contiguous().T


class LinearLayout(nn.Module):
    """Base for modules with projection weights: names each weight's layout kind.

    The loader lays each weight out as it assigns it (so no second copy of the model ever exists);
    :meth:`optimize_layout_` re-lays weights after something replaced them (weight processing).
    """

    linear_layouts: ClassVar[dict[str, LayoutKind]] = {}

    def optimize_layout_(self) -> None:
        """Re-stride this module's own projection weights for ``F.linear`` (values unchanged)."""
        for name, kind in self.linear_layouts.items():
            param = self._parameters.get(name)
            if param is not None and param.device.type != "meta":
                param.data = linear_layout(param.data, kind)

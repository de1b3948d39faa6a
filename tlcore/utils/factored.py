"""TransformerLens's matrix helpers: ``transpose``, ``get_corner`` and ``composition_scores``."""

from __future__ import annotations

import torch
from jaxtyping import Float

from tlcore.factored_matrix import FactoredMatrix, FactoredMatrixShapeError


def transpose(tensor: Float[torch.Tensor, "... a b"]) -> Float[torch.Tensor, "... b a"]:
    """Swap the last two dimensions of a tensor, whatever its leading dimensions.

    Args:
        tensor: A tensor with at least two dimensions.

    Returns:
        A view of ``tensor`` with its last two dimensions swapped.

    Examples:
        >>> transpose(torch.zeros(4, 2, 3)).shape
        torch.Size([4, 3, 2])
    """
    return tensor.transpose(-1, -2)


def get_corner(tensor: torch.Tensor | FactoredMatrix, n: int = 3) -> torch.Tensor:
    """Return the top-left corner of a tensor or factored matrix: the first ``n`` along every dim.

    For a `FactoredMatrix` only the corner of the product is formed, never the whole product.

    Args:
        tensor: A tensor or a `FactoredMatrix`.
        n: How many entries to keep along each dimension.

    Returns:
        A dense tensor of shape ``min(n, size)`` along every dimension.

    Examples:
        >>> get_corner(torch.arange(16).reshape(4, 4), 2)
        tensor([[0, 1],
                [4, 5]])
    """
    if isinstance(tensor, FactoredMatrix):
        return tensor[tuple(slice(n) for _ in range(tensor.ndim))].AB
    return tensor[tuple(slice(n) for _ in range(tensor.ndim))]


def composition_scores(
    left: FactoredMatrix, right: FactoredMatrix, broadcast_dims: bool = True
) -> Float[torch.Tensor, "*leading"]:
    """Composition score ``||L R||_F / (||L||_F ||R||_F)`` of two factored matrices.

    This measures how much the output space of ``left`` feeds the input space of ``right``
    (e.g. a head's OV circuit into a later head's QK circuit). Computed from the factors' SVDs,
    so no dense product is formed.

    Args:
        left: The earlier matrix, ``[*left_leading, ldim, d]``.
        right: The later matrix, ``[*right_leading, d, rdim]``.
        broadcast_dims: If True, score every pair: the result has shape
            ``[*left_leading, *right_leading]``. If False, leading dims broadcast elementwise.

    Returns:
        The composition scores, in ``[0, 1]``.

    Raises:
        FactoredMatrixShapeError: If ``left.rdim != right.ldim``.

    Examples:
        >>> left = FactoredMatrix(torch.randn(2, 6, 3), torch.randn(2, 3, 8))
        >>> right = FactoredMatrix(torch.randn(4, 8, 3), torch.randn(4, 3, 6))
        >>> composition_scores(left, right).shape
        torch.Size([2, 4])
    """
    if broadcast_dims:
        l_leading, r_leading = left.ndim - 2, right.ndim - 2
        for i in range(l_leading):
            right = right.unsqueeze(i)
        for i in range(r_leading):
            left = left.unsqueeze(i + l_leading)
    if left.rdim != right.ldim:
        raise FactoredMatrixShapeError(
            "Composition scores require left.rdim == right.ldim, shapes were "
            f"left: {tuple(left.shape)}, right: {tuple(right.shape)}"
        )
    # Dropping the orthogonal outer factors leaves every norm below unchanged.
    new_left = left.collapse_l()
    new_right = right.collapse_r()
    l_norms = new_left.norm(dim=(-2, -1))
    r_norms = new_right.norm(dim=(-2, -1))
    comp_norms = (new_left @ new_right).norm(dim=(-2, -1))
    return comp_norms / r_norms / l_norms

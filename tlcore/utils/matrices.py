"""Small tensor checks and reshapes (``transformer_lens.utils``)."""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float

__all__ = ["check_structure", "is_lower_triangular", "is_square", "repeat_along_head_dimension"]


def is_square(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 2-D square matrix.

    Example:
        >>> is_square(torch.zeros(3, 3)), is_square(torch.zeros(3, 4)), is_square(torch.zeros(3))
        (True, False, False)
    """
    return x.ndim == 2 and x.shape[0] == x.shape[1]


def is_lower_triangular(x: torch.Tensor) -> bool:
    """Whether ``x`` is square and equal to its lower triangle (zeros above the diagonal).

    Example:
        >>> is_lower_triangular(torch.tril(torch.ones(3, 3))), is_lower_triangular(torch.ones(3, 3))
        (True, False)
    """
    return is_square(x) and x.equal(x.tril())


def check_structure(t1: torch.Tensor, t2: torch.Tensor, *, verbose: bool = False) -> None:
    """Print whether two matrices order their neighbouring rows and columns alike (a debug aid).

    For each pair of adjacent rows (then columns) it compares ``a[i] >= a[i + 1]`` elementwise in
    both matrices and prints ``PASSED`` or the indices that disagree, as TransformerLens does.

    Args:
        t1: A 2-D tensor.
        t2: A 2-D tensor of the same shape.
        verbose: Also print each disagreeing comparison.

    Raises:
        ValueError: If the tensors are not 2-D of one shape.

    Example:
        >>> check_structure(torch.eye(3), 2 * torch.eye(3))
        PASSED
    """
    if t1.ndim != 2 or t1.shape != t2.shape:
        raise ValueError(
            f"check_structure needs two 2-D tensors of one shape: {t1.shape}, {t2.shape}"
        )
    n_rows, n_cols = t1.shape
    if verbose:
        print("Checking rows")
    row_mismatch = []
    for i in range(n_rows - 1):
        r1, r2 = t1[i].ge(t1[i + 1]), t2[i].ge(t2[i + 1])
        if (r1 != r2).any():
            row_mismatch.append(i)
            if verbose:
                print(f"\trows {i}:{i + 1}\n\tt1: {r1.tolist()}\n\tt2: {r2.tolist()}")
    if verbose:
        print("Checking columns")
    col_mismatch = []
    for j in range(n_cols - 1):
        c1, c2 = t1[:, j].ge(t1[:, j + 1]), t2[:, j].ge(t2[:, j + 1])
        if (c1 != c2).any():
            col_mismatch.append(j)
            if verbose:
                print(f"\tcolumns {j}:{j + 1}\n\tt1: {c1.tolist()}\n\tt2: {c2.tolist()}")
    if not row_mismatch and not col_mismatch:
        print("PASSED")
    elif row_mismatch:
        print(f"row mismatch: {row_mismatch}")
    else:
        print(f"column mismatch: {col_mismatch}")


def repeat_along_head_dimension(
    tensor: Float[torch.Tensor, "batch pos d_model"],
    n_heads: int,
    clone_tensor: bool = True,
) -> Float[torch.Tensor, "batch pos n_heads d_model"]:
    """One copy of the residual stream per head (the split-qkv-input layout).

    Args:
        tensor: ``[batch, pos, d_model]``.
        n_heads: Number of copies.
        clone_tensor: Copy the memory; False returns an expanded view whose heads share storage.

    Returns:
        ``[batch, pos, n_heads, d_model]``.

    Example:
        >>> repeat_along_head_dimension(torch.zeros(2, 3, 4), 5).shape
        torch.Size([2, 3, 5, 4])
    """
    repeated = einops.repeat(
        tensor, "batch pos d_model -> batch pos n_heads d_model", n_heads=n_heads
    )
    return repeated.clone() if clone_tensor else repeated

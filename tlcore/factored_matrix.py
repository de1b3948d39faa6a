"""Low-rank matrices kept as a product of two factors.

`FactoredMatrix` represents ``A @ B`` without forming it. Interpretability work multiplies weight
matrices whose product is large but low rank: a head's QK circuit ``W_Q @ W_K.T`` is
``d_model x d_model`` yet has rank ``d_head``. Keeping the two factors makes products, SVDs,
eigenvalues and norms cost ``O(d_model * d_head**2)`` instead of ``O(d_model**3)``.

The API matches TransformerLens 2.x's ``transformer_lens.FactoredMatrix`` (names, shapes and the
``(U, S, V)`` SVD convention), so notebooks written against it run unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from tlcore.errors import TlcoreError
from tlcore.factored_spectrum import SpectrumMixin

__all__ = ["FactoredMatrix", "FactoredMatrixShapeError"]

Scalar = int | float | complex | torch.Tensor


class FactoredMatrixShapeError(TlcoreError, ValueError, AssertionError, RuntimeError):
    """Shapes that cannot form, multiply or index a `FactoredMatrix`.

    It is a `ValueError`, and also the `AssertionError` / `RuntimeError` that TransformerLens raised
    for the same mistakes, so code catching those keeps working.
    """


def _as_index_entry(entry: Any) -> Any:
    """Turn list/tuple/NumPy index entries into tensors so each consumes dims predictably."""
    if isinstance(entry, (list, tuple, np.ndarray)):
        entry = torch.as_tensor(np.asarray(entry))
    if isinstance(entry, torch.Tensor) and entry.dtype == torch.uint8:
        # Old-style byte masks: torch warns and treats them as bool; do so explicitly.
        entry = entry.bool()
    return entry


def _dims_consumed(entry: Any) -> int:
    """Number of indexed dimensions an index entry consumes (``None`` consumes none)."""
    if entry is None:
        return 0
    if isinstance(entry, torch.Tensor) and entry.dtype == torch.bool:
        return max(entry.ndim, 1)
    return 1


def _keepdim(entry: Any) -> Any:
    """Index a matrix dimension without dropping it: an int ``i`` becomes the slice ``i:i+1``."""
    if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
        i = int(entry)
        return slice(i, i + 1 if i != -1 else None)
    if isinstance(entry, torch.Tensor) and entry.ndim == 0 and entry.dtype != torch.bool:
        return _keepdim(int(entry.item()))
    return entry


class FactoredMatrix(SpectrumMixin):
    """A matrix ``M = A @ B`` stored as its two factors, with leading (batch) dimensions.

    ``A`` has shape ``[..., ldim, mdim]`` and ``B`` ``[..., mdim, rdim]``; their leading dims
    broadcast, so ``M`` has shape ``[*leading, ldim, rdim]`` and rank at most ``mdim``. A model's
    ``QK`` is a `FactoredMatrix` of shape ``[n_layers, n_heads, d_model, d_model]`` with
    ``mdim = d_head``.

    Multiplying by a matrix keeps the factorisation, folding the new factor into whichever side
    keeps the hidden dimension smallest; multiplying by a vector returns a dense vector.

    Attributes:
        A: The left factor, broadcast to ``[*leading, ldim, mdim]``.
        B: The right factor, broadcast to ``[*leading, mdim, rdim]``.

    Examples:
        >>> A, B = torch.randn(5, 2), torch.randn(2, 4)
        >>> m = FactoredMatrix(A, B)
        >>> m
        FactoredMatrix: Shape(torch.Size([5, 4])), Hidden Dim(2)
        >>> torch.allclose(m.AB, A @ B)
        True
        >>> U, S, V = m.svd()
        >>> torch.allclose(U @ torch.diag_embed(S) @ V.mT, A @ B, atol=1e-5)
        True
    """

    A: torch.Tensor
    B: torch.Tensor

    def __init__(
        self,
        A: Float[torch.Tensor, "... ldim mdim"],
        B: Float[torch.Tensor, "... mdim rdim"],
    ) -> None:
        """Build the factored matrix ``A @ B``.

        Args:
            A: Left factor ``[..., ldim, mdim]``.
            B: Right factor ``[..., mdim, rdim]``; its leading dims must broadcast with ``A``'s.

        Raises:
            FactoredMatrixShapeError: If a factor has fewer than two dims, the inner dimensions
                differ, or the leading dimensions do not broadcast.
        """
        if A.ndim < 2 or B.ndim < 2:
            raise FactoredMatrixShapeError(
                f"Factors must have at least 2 dims, got A: {tuple(A.shape)}, B: {tuple(B.shape)}"
            )
        if A.shape[-1] != B.shape[-2]:
            raise FactoredMatrixShapeError(
                "Factored matrix must match on inner dimension, shapes were "
                f"A: {tuple(A.shape)}, B: {tuple(B.shape)}"
            )
        try:
            leading = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except RuntimeError as err:
            raise FactoredMatrixShapeError(
                f"Shape mismatch: cannot broadcast leading dimensions of A {tuple(A.shape)} and "
                f"B {tuple(B.shape)}"
            ) from err
        # Broadcasting up front (stride-0 views, no copy) lets indexing and products treat A and
        # B as having identical leading dims.
        self.A = A.broadcast_to(leading + A.shape[-2:])
        self.B = B.broadcast_to(leading + B.shape[-2:])
        self._svd_cache: tuple[torch.Tensor, torch.Tensor, tuple[Any, Any, Any]] | None = None

    # ----------------------------------------------------------------------------- shape

    @property
    def ldim(self) -> int:
        """Number of rows of the product."""
        return self.A.shape[-2]

    @property
    def mdim(self) -> int:
        """Hidden (inner) dimension: an upper bound on the rank."""
        return self.A.shape[-1]

    @property
    def rdim(self) -> int:
        """Number of columns of the product."""
        return self.B.shape[-1]

    @property
    def shape(self) -> torch.Size:
        """Shape of the product, ``[*leading, ldim, rdim]``."""
        return torch.Size(self.A.shape[:-2] + (self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        """Number of dimensions of the product."""
        return len(self.shape)

    @property
    def has_leading_dims(self) -> bool:
        """Whether the matrix carries leading (batch) dimensions."""
        return self.ndim > 2

    @property
    def pair(
        self,
    ) -> tuple[
        Float[torch.Tensor, "*leading ldim mdim"], Float[torch.Tensor, "*leading mdim rdim"]
    ]:
        """The factors ``(A, B)``."""
        return (self.A, self.B)

    def __repr__(self) -> str:
        """Summarise shape and hidden dimension, in TransformerLens's format."""
        return f"FactoredMatrix: Shape({self.shape}), Hidden Dim({self.mdim})"

    # ----------------------------------------------------------------------------- products

    @property
    def AB(self) -> Float[torch.Tensor, "*leading ldim rdim"]:
        """The dense product ``A @ B``: can be large, so use it only when needed."""
        return self.A @ self.B

    @property
    def BA(self) -> Float[torch.Tensor, "*leading mdim mdim"]:
        """The reverse product ``B @ A``, defined only for square matrices (``ldim == rdim``).

        Raises:
            FactoredMatrixShapeError: If ``ldim != rdim``.
        """
        if self.ldim != self.rdim:
            raise FactoredMatrixShapeError(
                f"Can only take BA if ldim == rdim, shape was {tuple(self.shape)}"
            )
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        """The transpose ``B^T @ A^T``, still factored."""
        return FactoredMatrix(self.B.transpose(-2, -1), self.A.transpose(-2, -1))

    def __matmul__(
        self, other: torch.Tensor | FactoredMatrix
    ) -> FactoredMatrix | Float[torch.Tensor, "... ldim"]:
        """Multiply on the right: ``self @ other``.

        A matrix (or `FactoredMatrix`) keeps the result factored; a vector ``[rdim]`` gives a
        dense ``[..., ldim]`` tensor.

        Raises:
            FactoredMatrixShapeError: If ``other``'s rows do not match ``rdim``.
        """
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        if not isinstance(other, torch.Tensor):
            return NotImplemented
        if other.ndim < 2:
            if other.shape[-1] != self.rdim:
                raise FactoredMatrixShapeError(
                    f"Right vector must have {self.rdim} entries, got {tuple(other.shape)}"
                )
            # Multiply right to left so no ldim x rdim matrix is ever formed.
            return (self.A @ (self.B @ other.unsqueeze(-1))).squeeze(-1)
        if other.shape[-2] != self.rdim:
            raise FactoredMatrixShapeError(
                "Right matrix must match on inner dimension, shapes were "
                f"self: {tuple(self.shape)}, other: {tuple(other.shape)}"
            )
        # The new hidden dim is min(mdim, rdim): fold `other` into B, or B into A.
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(
        self, other: torch.Tensor | FactoredMatrix
    ) -> FactoredMatrix | Float[torch.Tensor, "... rdim"]:
        """Multiply on the left: ``other @ self``.

        A matrix keeps the result factored; a vector ``[ldim]`` gives a dense ``[..., rdim]``.

        Raises:
            FactoredMatrixShapeError: If ``other``'s columns do not match ``ldim``.
        """
        if isinstance(other, FactoredMatrix):
            return other.A @ (other.B @ self)
        if not isinstance(other, torch.Tensor):
            return NotImplemented
        if other.shape[-1] != self.ldim:
            raise FactoredMatrixShapeError(
                "Left matrix must match on inner dimension, shapes were "
                f"self: {tuple(self.shape)}, other: {tuple(other.shape)}"
            )
        if other.ndim < 2:
            return ((other.unsqueeze(-2) @ self.A) @ self.B).squeeze(-2)
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Scalar) -> FactoredMatrix:
        """Multiply by a scalar (a number or a one-element tensor), scaling the factor ``A``.

        Raises:
            FactoredMatrixShapeError: If ``scalar`` is a tensor with more than one element.
        """
        if isinstance(scalar, torch.Tensor):
            if scalar.numel() != 1:
                raise FactoredMatrixShapeError(
                    f"Tensor must be a scalar for use with * but was of shape "
                    f"{tuple(scalar.shape)}. For matrix multiplication, use @ instead."
                )
            # A [1, 1] tensor would otherwise add leading dims by broadcasting.
            scalar = scalar.reshape(())
        elif not isinstance(scalar, (int, float, complex)):
            return NotImplemented
        return FactoredMatrix(self.A * scalar, self.B)

    def __rmul__(self, scalar: Scalar) -> FactoredMatrix:
        """Scalar multiplication from the left; the same as from the right."""
        return self.__mul__(scalar)

    def get_corner(self, k: int = 3) -> torch.Tensor:
        """The top-left ``k x k`` corner of the product (and first ``k`` of each leading dim).

        Only the corner rows of ``A`` and columns of ``B`` are multiplied.
        """
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[tuple(slice(k) for _ in range(corner.ndim))]

    # ----------------------------------------------------------------------------- indexing

    def unsqueeze(self, k: int) -> FactoredMatrix:
        """Insert a leading dimension of size one at position ``k``.

        Negative ``k`` counts from the end of the full shape, as ``torch.unsqueeze`` does, but
        may not land inside the two matrix dimensions.

        Raises:
            FactoredMatrixShapeError: If ``k`` would split the matrix dimensions.
        """
        pos = k + self.ndim + 1 if k < 0 else k
        if not 0 <= pos <= self.ndim - 2:
            raise FactoredMatrixShapeError(
                f"Can only unsqueeze a leading dimension (positions 0..{self.ndim - 2} of "
                f"{tuple(self.shape)}), got {k}"
            )
        return FactoredMatrix(self.A.unsqueeze(pos), self.B.unsqueeze(pos))

    def __getitem__(self, idx: Any) -> FactoredMatrix:
        """Index the matrix without forming it.

        Entries first index the leading dims; an entry that reaches the row (``ldim``) dim
        indexes ``A``'s rows and one that reaches the column (``rdim``) dim indexes ``B``'s
        columns. Integer indices into the two matrix dims keep that dim (``i`` acts as
        ``i:i+1``), so the result is always a `FactoredMatrix`. Row and column indices apply
        independently (outer indexing). ``...``, ``None``, slices, integer and boolean tensors
        are supported.

        Raises:
            ValueError: If the index has more entries than the matrix has dimensions.
            IndexError: If it contains more than one ``...``.
            FactoredMatrixShapeError: If a boolean mask spans both leading and matrix dims.

        Examples:
            >>> m = FactoredMatrix(torch.randn(3, 5, 2), torch.randn(3, 2, 7))
            >>> m[0].shape, m[:, 1].shape, m[..., 1:3, 4].shape
            (torch.Size([5, 7]), torch.Size([3, 1, 7]), torch.Size([3, 2, 1]))
        """
        entries = [_as_index_entry(e) for e in (idx if isinstance(idx, tuple) else (idx,))]
        n_ellipsis = sum(e is Ellipsis for e in entries)
        if n_ellipsis > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        consumed = sum(_dims_consumed(e) for e in entries if e is not Ellipsis)
        if consumed > self.ndim:
            raise ValueError(
                f"{idx} is too long an index for a FactoredMatrix of shape {self.shape}"
            )
        if n_ellipsis:
            at = next(i for i, e in enumerate(entries) if e is Ellipsis)
            entries[at : at + 1] = [slice(None)] * (self.ndim - consumed)

        n_leading = self.ndim - 2
        leading: list[Any] = []
        row: Any = slice(None)
        col: Any = slice(None)
        dim = 0
        for entry in entries:
            width = _dims_consumed(entry)
            if dim + width <= n_leading:
                leading.append(entry)
            elif width != 1 or entry is None:
                raise FactoredMatrixShapeError(
                    f"Index entry {entry!r} spans leading and matrix dims of {tuple(self.shape)}"
                )
            elif dim == n_leading:
                row = _keepdim(entry)
            else:
                col = _keepdim(entry)
            dim += width

        A, B = self.A, self.B
        if leading:
            A, B = A[tuple(leading)], B[tuple(leading)]
        return FactoredMatrix(A[..., row, :], B[..., :, col])

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
from jaxtyping import Complex, Float

from tlcore.errors import TlcoreError

__all__ = [
    "FactoredMatrix",
    "FactoredMatrixShapeError",
    "composition_scores",
    "get_corner",
    "transpose",
]

Scalar = int | float | complex | torch.Tensor


class FactoredMatrixShapeError(TlcoreError, ValueError, AssertionError, RuntimeError):
    """Shapes that cannot form, multiply or index a `FactoredMatrix`.

    It is a `ValueError`, and also the `AssertionError` / `RuntimeError` that TransformerLens raised
    for the same mistakes, so code catching those keeps working.
    """


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


class FactoredMatrix:
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

    # ----------------------------------------------------------------------------- spectrum

    def svd(
        self,
    ) -> tuple[
        Float[torch.Tensor, "*leading ldim rank"],
        Float[torch.Tensor, "*leading rank"],
        Float[torch.Tensor, "*leading rdim rank"],
    ]:
        """Singular value decomposition ``(U, S, V)`` with ``M = U @ diag(S) @ V.mT``.

        As in TransformerLens, the third element is ``V`` (shape ``[..., rdim, rank]``), not
        ``V^H``. ``rank = min(ldim, mdim, rdim)``; singular values come in descending order.

        Computed from the SVDs of the two factors and of a small ``rank x rank`` middle matrix,
        so it never forms the product. The result is cached on the instance (recomputed if ``A``
        or ``B`` is reassigned, not if either is edited in place). 16-bit factors are decomposed
        in float32 and the results cast back.

        Returns:
            ``U`` with orthonormal columns, singular values ``S``, and ``V`` with orthonormal
            columns.

        Examples:
            >>> m = FactoredMatrix(torch.randn(6, 2), torch.randn(2, 5))
            >>> U, S, V = m.svd()
            >>> U.shape, S.shape, V.shape
            (torch.Size([6, 2]), torch.Size([2]), torch.Size([5, 2]))
        """
        cached = self._svd_cache
        if cached is not None and cached[0] is self.A and cached[1] is self.B:
            return cached[2]
        out_dtype = torch.promote_types(self.A.dtype, self.B.dtype)
        # LAPACK has no 16-bit SVD.
        work_dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
        A, B = self.A.to(work_dtype), self.B.to(work_dtype)
        Ua, Sa, Vha = torch.linalg.svd(A, full_matrices=False)
        Ub, Sb, Vhb = torch.linalg.svd(B, full_matrices=False)
        # M = Ua (diag(Sa) Vha Ub diag(Sb)) Vhb; only the small middle needs decomposing.
        middle = (Sa[..., :, None] * Vha) @ (Ub * Sb[..., None, :])
        Um, Sm, Vhm = torch.linalg.svd(middle, full_matrices=False)
        U = (Ua @ Um).to(out_dtype)
        V = (Vhm @ Vhb).mT.to(out_dtype)
        S = Sm.to(out_dtype)
        result = (U, S, V)
        self._svd_cache = (self.A, self.B, result)
        return result

    @property
    def U(self) -> Float[torch.Tensor, "*leading ldim rank"]:
        """Left singular vectors, ``[..., ldim, rank]``."""
        return self.svd()[0]

    @property
    def S(self) -> Float[torch.Tensor, "*leading rank"]:
        """Singular values in descending order, ``[..., rank]``."""
        return self.svd()[1]

    @property
    def V(self) -> Float[torch.Tensor, "*leading rdim rank"]:
        """Right singular vectors as columns, ``[..., rdim, rank]``: ``M = U diag(S) V^T``."""
        return self.svd()[2]

    @property
    def Vh(self) -> Float[torch.Tensor, "*leading rdim rank"]:
        """The same tensor as `V`, under TransformerLens 2.x's (misleading) name.

        Despite the name this is *not* ``V^H``: ``M = U @ diag(S) @ Vh.mT``.
        """
        return self.svd()[2]

    @property
    def eigenvalues(self) -> Complex[torch.Tensor, "*leading mdim"]:
        """Eigenvalues of the product, computed from the small ``mdim x mdim`` matrix ``BA``.

        ``AB`` and ``BA`` share their non-zero eigenvalues (if ``BAv = kv`` then
        ``AB(Av) = k(Av)``); ``AB``'s remaining ``ldim - mdim`` eigenvalues are zero. Only defined
        for square products. 16-bit inputs are computed in float32 (complex64 result).

        Raises:
            FactoredMatrixShapeError: If ``ldim != rdim``.
        """
        matrix = self.BA
        if matrix.dtype in (torch.float16, torch.bfloat16):
            matrix = matrix.to(torch.float32)
        return torch.linalg.eig(matrix).eigenvalues

    def norm(self) -> Float[torch.Tensor, "*leading"]:
        """Frobenius norm of the product: the root of the sum of squared singular values.

        Examples:
            >>> A, B = torch.randn(4, 2), torch.randn(2, 3)
            >>> torch.allclose(FactoredMatrix(A, B).norm(), (A @ B).norm(), atol=1e-5)
            True
        """
        return self.S.pow(2).sum(-1).sqrt()

    def make_even(self) -> FactoredMatrix:
        """Return the balanced factorisation ``(U sqrt(S), sqrt(S) V^T)`` of the same matrix.

        Each factor then carries half of every singular value and has orthogonal columns (left)
        or rows (right).
        """
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * transpose(self.V))

    def get_corner(self, k: int = 3) -> torch.Tensor:
        """The top-left ``k x k`` corner of the product (and first ``k`` of each leading dim).

        Only the corner rows of ``A`` and columns of ``B`` are multiplied.
        """
        return get_corner(self.A[..., :k, :] @ self.B[..., :, :k], k)

    def collapse_l(self) -> Float[torch.Tensor, "*leading rank rdim"]:
        """Drop the orthogonal left factor ``U``, returning ``diag(S) V^T`` (``[..., rank, rdim]``).

        ``M = U @ collapse_l()``, and since ``U`` is orthonormal, norms of products with ``M`` on
        the right are unchanged.
        """
        return self.S[..., :, None] * transpose(self.V)

    def collapse_r(self) -> Float[torch.Tensor, "*leading ldim rank"]:
        """Drop the orthogonal right factor ``V``, returning ``U diag(S)`` (``[..., ldim, rank]``).

        ``M = collapse_r() @ V.mT``: the mirror image of `collapse_l`.
        """
        return self.U * self.S[..., None, :]

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

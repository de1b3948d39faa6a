"""The spectrum of a `~tlcore.factored_matrix.FactoredMatrix`: SVD, eigenvalues, norms, balancing.

Everything here is computed from the two factors and small ``mdim``-sized matrices, never from the
(possibly huge) product.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from jaxtyping import Complex, Float

Self = TypeVar("Self", bound="SpectrumMixin")


class SpectrumMixin:
    """``svd``, ``U``/``S``/``V``/``Vh``, ``eigenvalues``, ``norm``, ``make_even``, collapses."""

    A: torch.Tensor
    B: torch.Tensor
    _svd_cache: tuple[torch.Tensor, torch.Tensor, tuple[Any, Any, Any]] | None

    @property
    def BA(self) -> torch.Tensor:  # noqa: D102 - FactoredMatrix documents it
        raise NotImplementedError

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
            >>> from tlcore.factored_matrix import FactoredMatrix
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
            >>> from tlcore.factored_matrix import FactoredMatrix
            >>> A, B = torch.randn(4, 2), torch.randn(2, 3)
            >>> torch.allclose(FactoredMatrix(A, B).norm(), (A @ B).norm(), atol=1e-5)
            True
        """
        return self.S.pow(2).sum(-1).sqrt()

    def make_even(self: Self) -> Self:
        """Return the balanced factorisation ``(U sqrt(S), sqrt(S) V^T)`` of the same matrix.

        Each factor then carries half of every singular value and has orthogonal columns (left)
        or rows (right).
        """
        root = self.S.sqrt()
        factor: Any = type(self)
        return factor(self.U * root[..., None, :], root[..., :, None] * self.V.mT)

    def collapse_l(self) -> Float[torch.Tensor, "*leading rank rdim"]:
        """Drop the orthogonal left factor ``U``, returning ``diag(S) V^T`` (``[..., rank, rdim]``).

        ``M = U @ collapse_l()``, and since ``U`` is orthonormal, norms of products with ``M`` on
        the right are unchanged.
        """
        return self.S[..., :, None] * self.V.mT

    def collapse_r(self) -> Float[torch.Tensor, "*leading ldim rank"]:
        """Drop the orthogonal right factor ``V``, returning ``U diag(S)`` (``[..., ldim, rank]``).

        ``M = collapse_r() @ V.mT``: the mirror image of `collapse_l`.
        """
        return self.U * self.S[..., None, :]

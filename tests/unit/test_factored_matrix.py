"""FactoredMatrix: every property checked against the dense product computed independently."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tlcore.factored_matrix import FactoredMatrix, FactoredMatrixShapeError
from tlcore.utils import composition_scores, get_corner

DT = torch.float64


def _randn(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT)


# (A shape, B shape): plain, tall/wide, square low rank, QK-like
# [n_layers, n_heads, d_model, d_head] and broadcasting leading dims.
CASES = {
    "square": ((6, 3), (3, 6)),
    "rect": ((7, 2), (2, 5)),
    "wide_mdim": ((3, 8), (8, 4)),
    "qk_like": ((2, 3, 8, 4), (2, 3, 4, 8)),
    "broadcast": ((4, 1, 6, 3), (5, 3, 6)),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor, FactoredMatrix]:
    a_shape, b_shape = CASES[request.param]
    A = _randn(*a_shape, seed=1)
    B = _randn(*b_shape, seed=2)
    return A, B, FactoredMatrix(A, B)


def _dense(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    # Independent of FactoredMatrix: torch's broadcasting matmul.
    return torch.matmul(A, B)


# ------------------------------------------------------------------------------ construction


def test_shape_dims_and_broadcast(case):
    A, B, m = case
    dense = _dense(A, B)
    assert m.shape == dense.shape
    assert m.ndim == dense.ndim
    assert (m.ldim, m.mdim, m.rdim) == (A.shape[-2], A.shape[-1], B.shape[-1])
    assert m.has_leading_dims == (dense.ndim > 2)
    assert m.A.shape[:-2] == m.B.shape[:-2] == dense.shape[:-2]
    assert_close(m.AB, dense)
    assert m.pair[0] is m.A and m.pair[1] is m.B


def test_constructor_keeps_factors_unbroadcast_when_possible():
    A, B = _randn(5, 3, seed=0), _randn(2, 4, 3, 7, seed=1)
    m = FactoredMatrix(A, B)
    assert m.A.shape == (2, 4, 5, 3)
    assert torch.equal(m.B, B)
    assert m.shape == (2, 4, 5, 7)


def test_inner_mismatch_is_clear_error():
    with pytest.raises(FactoredMatrixShapeError, match="inner dimension"):
        FactoredMatrix(torch.ones(2, 3, 4), torch.ones(2, 3, 5))
    # Catchable both idiomatically and as TransformerLens's AssertionError.
    with pytest.raises(ValueError):
        FactoredMatrix(torch.ones(3, 4), torch.ones(5, 2))
    with pytest.raises(AssertionError):
        FactoredMatrix(torch.ones(3, 4), torch.ones(5, 2))


def test_broadcast_mismatch_is_runtime_error():
    with pytest.raises(RuntimeError, match="[Mm]ismatch"):
        FactoredMatrix(torch.ones(9, 5, 3), torch.ones(2, 4, 3, 7))


def test_repr():
    m = FactoredMatrix(torch.ones(5, 3), torch.ones(3, 7))
    assert repr(m) == "FactoredMatrix: Shape(torch.Size([5, 7])), Hidden Dim(3)"


# ------------------------------------------------------------------------------ products


def test_BA_and_T(case):
    A, B, m = case
    dense = _dense(A, B)
    assert_close(m.T.AB, dense.transpose(-1, -2))
    assert isinstance(m.T, FactoredMatrix)
    if m.ldim == m.rdim:
        assert_close(m.BA, torch.matmul(B, A))
    else:
        with pytest.raises(AssertionError):
            _ = m.BA


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "other_shape"),
    [
        ((2, 3), (3, 4), (4, 5)),  # rdim > mdim: other folded into B
        ((2, 6), (6, 4), (4, 5)),  # rdim < mdim: product becomes (AB, other)
        ((2, 4), (4, 4), (4, 5)),
        ((3, 2, 3), (3, 3, 4), (4, 5)),  # leading dims on the factored side
        ((2, 3), (3, 4), (2, 7, 4, 5)),  # leading dims on the tensor side
    ],
)
def test_matmul_tensor_keeps_factorisation(a_shape, b_shape, other_shape):
    A, B, other = _randn(*a_shape, seed=3), _randn(*b_shape, seed=4), _randn(*other_shape, seed=5)
    m = FactoredMatrix(A, B)
    product = m @ other
    assert isinstance(product, FactoredMatrix)
    assert_close(product.AB, torch.matmul(_dense(A, B), other))
    assert product.mdim == min(m.mdim, m.rdim)
    assert product.ldim == m.ldim and product.rdim == other.shape[-1]


@pytest.mark.parametrize(
    ("other_shape", "a_shape", "b_shape"),
    [
        ((6, 3), (3, 4), (4, 6)),  # ldim < mdim
        ((2, 6), (6, 4), (4, 2)),  # ldim > mdim: other folded into A
        ((2, 2), (2, 4), (4, 2)),
        ((2, 5, 6), (6, 4), (4, 2)),
    ],
)
def test_rmatmul_tensor_keeps_factorisation(other_shape, a_shape, b_shape):
    A, B, other = _randn(*a_shape, seed=6), _randn(*b_shape, seed=7), _randn(*other_shape, seed=8)
    m = FactoredMatrix(A, B)
    product = other @ m
    assert isinstance(product, FactoredMatrix)
    assert_close(product.AB, torch.matmul(other, _dense(A, B)))
    assert product.mdim == min(m.mdim, m.ldim)


def test_matmul_vectors_return_dense(case):
    A, B, m = case
    dense = _dense(A, B)
    v_right = _randn(m.rdim, seed=9)
    v_left = _randn(m.ldim, seed=10)
    out_right = m @ v_right
    out_left = v_left @ m
    assert isinstance(out_right, torch.Tensor) and isinstance(out_left, torch.Tensor)
    assert_close(out_right, torch.matmul(dense, v_right))
    assert_close(out_left, torch.matmul(v_left, dense))


def test_matmul_factored_matrix(case):
    A, B, m = case
    C, D = _randn(m.rdim, 2, seed=11), _randn(2, 5, seed=12)
    other = FactoredMatrix(C, D)
    product = m @ other
    assert isinstance(product, FactoredMatrix)
    assert_close(product.AB, torch.matmul(_dense(A, B), C @ D))
    assert product.mdim <= min(m.mdim, other.mdim, m.rdim)


def test_matmul_shape_errors():
    m = FactoredMatrix(torch.ones(3, 2), torch.ones(2, 4))
    with pytest.raises(FactoredMatrixShapeError):
        _ = m @ torch.ones(5, 2)
    with pytest.raises(FactoredMatrixShapeError):
        _ = torch.ones(2, 5) @ m
    with pytest.raises(FactoredMatrixShapeError):
        _ = m @ torch.ones(3)


@pytest.mark.parametrize("scalar", [3, -0.5, torch.tensor(2.0), torch.tensor([[1.5]])])
def test_scalar_multiplication(case, scalar):
    A, B, m = case
    expected = _dense(A, B) * (scalar.item() if isinstance(scalar, torch.Tensor) else scalar)
    for scaled in (m * scalar, scalar * m):
        assert isinstance(scaled, FactoredMatrix)
        assert scaled.shape == m.shape
        assert_close(scaled.AB, expected.to(DT))


def test_scalar_multiplication_rejects_tensors():
    m = FactoredMatrix(torch.ones(3, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="scalar"):
        _ = m * torch.ones(3)


# ------------------------------------------------------------------------------ spectrum


def test_svd_matches_dense(case):
    A, B, m = case
    dense = _dense(A, B)
    rank = min(m.ldim, m.mdim, m.rdim)
    U, S, V = m.svd()
    assert U.shape == (*m.shape[:-2], m.ldim, rank)
    assert S.shape == (*m.shape[:-2], rank)
    # TransformerLens's convention: the third element is V (rdim x rank), not V^H.
    assert V.shape == (*m.shape[:-2], m.rdim, rank)
    assert_close(S, torch.linalg.svdvals(dense)[..., :rank])
    assert_close(U @ torch.diag_embed(S) @ V.mT, dense)
    eye = torch.eye(rank, dtype=DT).expand(*m.shape[:-2], rank, rank)
    assert_close(U.mT @ U, eye)
    assert_close(V.mT @ V, eye)
    assert m.U is U and m.S is S and m.V is V and m.Vh is V


def test_svd_is_cached_and_invalidated_by_reassignment():
    m = FactoredMatrix(_randn(4, 3, seed=0), _randn(3, 4, seed=1))
    first = m.svd()
    assert all(x is y for x, y in zip(first, m.svd()))
    m.A = _randn(4, 3, seed=2)
    assert_close(m.S, torch.linalg.svdvals(m.A @ m.B)[:3])


def test_norm_matches_dense_frobenius(case):
    A, B, m = case
    expected = torch.linalg.matrix_norm(_dense(A, B), ord="fro")
    assert m.norm().shape == m.shape[:-2]
    assert_close(m.norm(), expected)


def _match_eigenvalues(found: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Greedily pair each found eigenvalue with its nearest unused dense eigenvalue."""
    remaining = list(dense)
    for value in found:
        distances = torch.stack([(value - d).abs() for d in remaining])
        best = int(distances.argmin())
        assert distances[best] < 1e-8, f"eigenvalue {value} not among {dense}"
        remaining.pop(best)
    return torch.stack(remaining) if remaining else torch.zeros(0, dtype=dense.dtype)


@pytest.mark.parametrize("case_name", ["square", "qk_like", "broadcast"])
def test_eigenvalues_match_dense(case_name):
    a_shape, b_shape = CASES[case_name]
    A, B = _randn(*a_shape, seed=1), _randn(*b_shape, seed=2)
    m = FactoredMatrix(A, B)
    eig = m.eigenvalues
    dense = torch.linalg.eigvals(_dense(A, B))
    assert eig.shape == (*m.shape[:-2], m.mdim)
    for found, full in zip(eig.reshape(-1, m.mdim), dense.reshape(-1, m.ldim)):
        # AB's other ldim - mdim eigenvalues are zero.
        rest = _match_eigenvalues(found, full)
        assert rest.abs().max() < 1e-8


def test_eigenvalues_need_square():
    with pytest.raises(AssertionError):
        _ = FactoredMatrix(torch.ones(4, 2), torch.ones(2, 3)).eigenvalues


def test_sixteen_bit_spectrum_runs_in_float32():
    A = _randn(8, 3, seed=0).to(torch.bfloat16)
    B = _randn(3, 8, seed=1).to(torch.bfloat16)
    m = FactoredMatrix(A, B)
    assert m.eigenvalues.dtype == torch.complex64
    assert m.S.dtype == torch.bfloat16
    dense = (A.float() @ B.float()).double()
    assert_close(m.S.double(), torch.linalg.svdvals(dense)[:3], atol=0.05, rtol=0.02)


def test_collapse_and_make_even(case):
    A, B, m = case
    dense = _dense(A, B)
    rank = min(m.ldim, m.mdim, m.rdim)
    left, right = m.collapse_l(), m.collapse_r()
    assert left.shape == (*m.shape[:-2], rank, m.rdim)
    assert right.shape == (*m.shape[:-2], m.ldim, rank)
    assert_close(m.U @ left, dense)
    assert_close(right @ m.V.mT, dense)
    # Dropping an orthogonal factor keeps the Frobenius norm.
    assert_close(torch.linalg.matrix_norm(left), torch.linalg.matrix_norm(dense))

    even = m.make_even()
    assert_close(even.AB, dense)
    # Balanced: both factors' Gram matrices equal diag(S).
    diag_s = torch.diag_embed(torch.linalg.svdvals(dense)[..., :rank])
    assert_close(even.A.mT @ even.A, diag_s)
    assert_close(even.B @ even.B.mT, diag_s)


def test_composition_scores_match_dense():
    left = FactoredMatrix(_randn(2, 6, 3, seed=0), _randn(2, 3, 8, seed=1))
    right = FactoredMatrix(_randn(4, 8, 2, seed=2), _randn(4, 2, 5, seed=3))
    scores = composition_scores(left, right)
    assert scores.shape == (2, 4)
    for i in range(2):
        for j in range(4):
            L, R = left.AB[i], right.AB[j]
            expected = torch.linalg.matrix_norm(L @ R) / (
                torch.linalg.matrix_norm(L) * torch.linalg.matrix_norm(R)
            )
            assert_close(scores[i, j], expected)
    elementwise = composition_scores(left[:1], right[:1], broadcast_dims=False)
    assert_close(elementwise, scores[:1, :1].reshape(1))


# ------------------------------------------------------------------------------ indexing


def test_get_corner(case):
    A, B, m = case
    dense = _dense(A, B)
    assert_close(m.get_corner(2), dense[tuple(slice(2) for _ in range(dense.ndim))])
    assert_close(get_corner(m, 2), get_corner(dense, 2))


def test_unsqueeze():
    m = FactoredMatrix(_randn(3, 4, 2, seed=0), _randn(3, 2, 5, seed=1))
    dense = m.AB
    for k in (0, 1, -3, -4):
        assert_close(m.unsqueeze(k).AB, dense.unsqueeze(k))
    for bad in (2, -1, -2):
        with pytest.raises(FactoredMatrixShapeError):
            m.unsqueeze(bad)


def _keep(i: int) -> slice:
    return slice(i, i + 1 if i != -1 else None)


INDEX_CASES = [
    # (index into FactoredMatrix, equivalent index into the dense product)
    ((0,), (0,)),
    ((1, 2), (1, 2)),
    ((slice(None), 1), (slice(None), 1)),
    ((-1,), (-1,)),
    ((0, 1, 3), (0, 1, _keep(3))),
    ((0, 1, -1), (0, 1, _keep(-1))),
    ((0, 1, 2, 4), (0, 1, _keep(2), _keep(4))),
    ((0, 1, -1, -1), (0, 1, _keep(-1), _keep(-1))),
    ((Ellipsis, 1), (Ellipsis, _keep(1))),
    ((Ellipsis, 1, slice(None)), (Ellipsis, _keep(1), slice(None))),
    ((Ellipsis, slice(1, 4), slice(2, 6)), (Ellipsis, slice(1, 4), slice(2, 6))),
    ((None, Ellipsis, slice(1, 4), slice(None)), (None, Ellipsis, slice(1, 4), slice(None))),
    ((torch.tensor([1, 0]), Ellipsis, 1), (torch.tensor([1, 0]), Ellipsis, _keep(1))),
    ((Ellipsis, torch.tensor([1, 3]), slice(None)), (Ellipsis, torch.tensor([1, 3]), slice(None))),
    ((Ellipsis, [0, 4]), (Ellipsis, torch.tensor([0, 4]))),
    ((torch.tensor([True, False]),), (torch.tensor([True, False]),)),
    (
        (torch.tensor([[True, False, True], [False, True, True]]), Ellipsis, 2),
        (torch.tensor([[True, False, True], [False, True, True]]), Ellipsis, _keep(2)),
    ),
]


@pytest.mark.parametrize(("index", "dense_index"), INDEX_CASES)
def test_getitem_matches_dense(index, dense_index):
    m = FactoredMatrix(_randn(2, 3, 5, 2, seed=0), _randn(2, 3, 2, 7, seed=1))
    result = m[index]
    assert isinstance(result, FactoredMatrix)
    assert result.mdim == m.mdim
    assert_close(result.AB, m.AB[dense_index])


def test_getitem_row_and_column_tensors_index_independently():
    m = FactoredMatrix(_randn(5, 2, seed=0), _randn(2, 7, seed=1))
    rows, cols = torch.tensor([0, 3]), torch.tensor([6])
    assert_close(m[rows, cols].AB, m.AB[rows][:, cols])


def test_getitem_does_not_form_product(monkeypatch):
    m = FactoredMatrix(_randn(3, 5, 2, seed=0), _randn(3, 2, 7, seed=1))
    expected = m.AB[1, 1:4, 2:6]

    def forbid(self):
        raise AssertionError("indexing formed the product")

    monkeypatch.setattr(FactoredMatrix, "AB", property(forbid))
    result = m[1, 1:4, 2:6]
    monkeypatch.undo()
    assert_close(result.AB, expected)


def test_getitem_errors():
    m = FactoredMatrix(torch.ones(2, 5, 2), torch.ones(2, 2, 7))
    with pytest.raises(ValueError, match="too long an index"):
        _ = m[0, 0, 0, 0]
    with pytest.raises(ValueError, match="too long an index"):
        _ = m[..., 0, 0, 0, 0]
    with pytest.raises(IndexError):
        _ = m[..., ...]

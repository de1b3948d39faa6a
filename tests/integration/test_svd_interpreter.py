"""SVDInterpreter: the vectors it returns are the right singular vectors of the named matrix.

Each returned column is ``v_i @ W_U``; W_U has full row rank (d_vocab > d_model), so ``v_i`` is
recovered exactly with W_U's pseudo-inverse and checked against the SVD identities: orthonormal,
``A^T A v_i = s_i^2 v_i`` with ``s_i`` the i-th largest singular value of ``A``.
"""

from __future__ import annotations

import pytest
import torch

import tlcore
from tlcore.model import HookedTransformer
from tlcore.svd_interpreter import SVDInterpreter


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tiny_checkpoint):
    folder, _ = tiny_checkpoint(request.param)
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu").double()


def recovered(model, vectors):
    columns = vectors[:, 0, :].T.double()  # [k, d_vocab]
    return columns @ torch.linalg.pinv(model.W_U.detach())  # [k, d_model]


def check_right_singular_vectors(matrix, v):
    k = v.shape[0]
    torch.testing.assert_close(v @ v.T, torch.eye(k, dtype=v.dtype), atol=1e-8, rtol=0)
    gram = matrix.T @ matrix
    s = torch.linalg.svdvals(matrix)[:k]
    torch.testing.assert_close(v @ gram, (s**2)[:, None] * v, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close((matrix @ v.T).norm(dim=0), s, atol=1e-8, rtol=1e-8)


def test_ov_vectors(model):
    svd = SVDInterpreter(model)
    layer, head, k = 1, 3, 5
    vectors = svd.get_singular_vectors("OV", layer, num_vectors=k, head_index=head)
    assert vectors.shape == (model.cfg.d_vocab, 1, k)
    attn = model.blocks[layer].attn
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    W_V = (attn._W_V if group > 1 else attn.W_V)[head // group]  # GQA: the head's kv head
    ov = (W_V @ attn.W_O[head]).detach()
    check_right_singular_vectors(ov, recovered(model, vectors))
    other = svd.get_singular_vectors("OV", layer, num_vectors=k, head_index=0)
    assert not torch.allclose(other.abs(), vectors.abs())


def test_w_in_includes_unfolded_norm_weights(model):
    layer, k = 0, 6
    vectors = SVDInterpreter(model).get_singular_vectors("w_in", layer, num_vectors=k)
    block = model.blocks[layer]
    w_in = block.mlp.W_in.detach().T  # [d_mlp, d_model]
    scaled = w_in * block.ln2.w.detach()
    assert not torch.allclose(scaled, w_in)  # the tiny checkpoint's norm weights are not 1
    check_right_singular_vectors(scaled, recovered(model, vectors))
    with pytest.raises(AssertionError):
        check_right_singular_vectors(w_in, recovered(model, vectors))


def test_w_out_vectors(model):
    layer, k = 1, 4
    vectors = SVDInterpreter(model).get_singular_vectors("w_out", layer, num_vectors=k)
    w_out = model.blocks[layer].mlp.W_out.detach()
    check_right_singular_vectors(w_out, recovered(model, vectors))


def test_default_ten_vectors_and_top_level_export(model):
    vectors = tlcore.SVDInterpreter(model).get_singular_vectors("w_out", 0)
    assert vectors.shape == (model.cfg.d_vocab, 1, 10)


def test_errors(model):
    svd = SVDInterpreter(model)
    with pytest.raises(ValueError, match="Head index"):
        svd.get_singular_vectors("OV", 0)
    with pytest.raises(ValueError, match="Vector type"):
        svd.get_singular_vectors("QK", 0, head_index=0)
    with pytest.raises(ValueError, match="Layer index"):
        svd.get_singular_vectors("w_in", model.cfg.n_layers)
    with pytest.raises(ValueError, match="Head index"):
        svd.get_singular_vectors("OV", 0, head_index=model.cfg.n_heads)
    with pytest.raises(ValueError, match="num_vectors"):
        svd.get_singular_vectors("OV", 0, num_vectors=model.cfg.d_head + 1, head_index=0)

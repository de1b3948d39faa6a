"""tlcore.head_detector: TL's detection patterns, and a hand-planted previous-token head found.

The model has no norms, so the first block's attention reads ``W_E[token] + W_pos[pos]`` directly.
Positions get orthogonal one-hot embeddings; in head (0, PLANTED) ``W_Q`` maps position i to
direction i and ``W_K`` maps position j to direction j + 1, so query i scores key i - 1 highest by
a wide margin: that head attends to the previous token and nothing else.
"""

from __future__ import annotations

import pytest
import torch

from tlcore.head_detector import (
    HEAD_NAMES,
    compute_head_attention_similarity_score,
    detect_head,
    get_duplicate_token_head_detection_pattern,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
    get_supported_heads,
)
from tlcore.model import HookedTransformer

N_CTX = 24
PLANTED = (0, 2)
TEXT = "The cat sat on the mat and the cat sat on the hat"


@pytest.fixture(scope="module")
def gpt2_tok():
    from tlcore_offline_models import gpt2_tokenizer

    try:
        return gpt2_tokenizer()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model(gpt2_tok):
    cfg = dict(
        n_layers=2,
        d_model=N_CTX,
        n_heads=4,
        d_head=N_CTX,
        d_mlp=8,
        d_vocab=50257,
        n_ctx=N_CTX,
        act_fn="relu",
        normalization_type=None,
        seed=0,
    )
    model = HookedTransformer(cfg, tokenizer=gpt2_tok)
    layer, head = PLANTED
    with torch.no_grad():
        model.embed.W_E.mul_(0.1)  # tokens barely matter; positions decide the planted pattern
        model.pos_embed.W_pos.copy_(torch.eye(N_CTX))
        attn = model.blocks[layer].attn
        attn.W_Q[head] = 100.0 * torch.eye(N_CTX)  # query at position i: 100 e_i
        attn.W_K[head] = torch.diag(torch.ones(N_CTX - 1), 1)  # key at position j: e_{j+1}
    return model


def test_planted_previous_token_head_scores_highest(model):
    scores = detect_head(model, TEXT, "previous_token_head")
    assert scores.shape == (2, 4)
    n = model.to_tokens(TEXT).shape[1]
    # Row 0 can only attend to itself; every other row puts ~all attention on its predecessor.
    assert scores[PLANTED].item() == pytest.approx((n - 1) / n, abs=1e-3)
    others = scores.clone()
    others[PLANTED] = -1
    assert others.max() < 0.5
    excluded = detect_head(model, TEXT, "previous_token_head", exclude_bos=True)
    assert excluded[PLANTED].item() > 0.99  # without position 0 (and row 0) it is exact
    abs_scores = detect_head(model, TEXT, "previous_token_head", error_measure="abs")
    assert abs_scores.argmax().item() == PLANTED[0] * 4 + PLANTED[1]


def test_planted_head_is_not_a_duplicate_or_induction_head(model):
    for name in ("duplicate_token_head", "induction_head"):
        scores = detect_head(model, TEXT, name)
        assert scores[PLANTED].item() < 0.05, name


def test_tensor_pattern_heads_subset_and_cache(model):
    tokens = model.to_tokens(TEXT)
    pattern = get_previous_token_head_detection_pattern(tokens)
    by_name = detect_head(model, TEXT, "previous_token_head")
    torch.testing.assert_close(detect_head(model, TEXT, pattern), by_name)
    subset = detect_head(model, TEXT, pattern, heads=[PLANTED, (1, 0)])
    assert subset[PLANTED] == by_name[PLANTED] and subset[1, 0] == by_name[1, 0]
    assert (subset == -1).sum() == 8 - 2
    as_dict = detect_head(model, TEXT, pattern, heads={0: [2], 1: [0]})
    torch.testing.assert_close(as_dict, subset)
    _, cache = model.run_with_cache(tokens, remove_batch_dim=True)
    before = cache["pattern", 0].clone()
    with_cache = detect_head(
        model, TEXT, pattern, cache=cache, exclude_bos=True, exclude_current_token=True
    )
    assert torch.equal(cache["pattern", 0], before)  # the cache is not edited
    torch.testing.assert_close(
        with_cache,
        detect_head(model, TEXT, pattern, exclude_bos=True, exclude_current_token=True),
    )


def test_list_of_texts_averages(model):
    texts = [TEXT, "One two three four five six"]
    mean = torch.stack([detect_head(model, t, "previous_token_head") for t in texts]).mean(0)
    torch.testing.assert_close(detect_head(model, texts, "previous_token_head"), mean)


def test_errors(model):
    tokens = model.to_tokens(TEXT)
    n = tokens.shape[1]
    with pytest.raises(ValueError, match="head names"):
        detect_head(model, TEXT, "copy_head")
    with pytest.raises(ValueError, match="error_measure"):
        detect_head(model, TEXT, "previous_token_head", error_measure="max")
    with pytest.raises(ValueError, match="lower triangular"):
        detect_head(model, TEXT, torch.ones(n, n))
    with pytest.raises(ValueError, match="lower triangular"):
        detect_head(model, TEXT, torch.zeros(n + 1, n + 1))
    with pytest.raises(ValueError, match="context window"):
        detect_head(model, " a" * 40, "previous_token_head")


def test_detection_patterns_match_their_definitions():
    tokens = torch.tensor([[5, 8, 5, 9, 8, 5]])
    n = tokens.shape[1]
    prev = get_previous_token_head_detection_pattern(tokens)
    dup = get_duplicate_token_head_detection_pattern(tokens)
    ind = get_induction_head_detection_pattern(tokens)
    t = tokens[0].tolist()
    for i in range(n):
        for j in range(n):
            assert prev[i, j] == (j == i - 1)
            assert dup[i, j] == (j < i and t[j] == t[i])
            # Induction: attend to the token right after an earlier copy of the current token.
            assert ind[i, j] == (1 <= j <= i and t[j - 1] == t[i] and j - 1 < i)
    assert HEAD_NAMES == ["previous_token_head", "duplicate_token_head", "induction_head"]


def test_similarity_score_measures(capsys):
    attention = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.8, 0.1]])
    detection = get_previous_token_head_detection_pattern(torch.zeros(3))
    kwargs = {"exclude_bos": False, "exclude_current_token": False}
    mul = compute_head_attention_similarity_score(
        attention, detection, error_measure="mul", **kwargs
    )
    assert mul == pytest.approx((0.5 + 0.8) / 3)
    absolute = compute_head_attention_similarity_score(
        attention, detection, error_measure="abs", **kwargs
    )
    # |diff| sums to 1 + (0.5 + 0.5) + (0.1 + 0.2 + 0.1) = 2.4; mean * size = 2.4 / 3
    assert absolute == pytest.approx(1 - round(2.4 / 3, 3))
    no_bos = compute_head_attention_similarity_score(
        attention, detection, error_measure="mul", exclude_bos=True, exclude_current_token=False
    )
    assert no_bos == pytest.approx(0.8 / (0.5 + 0.8 + 0.1))  # column 0 dropped from both sums
    neither = compute_head_attention_similarity_score(
        attention, detection, error_measure="mul", exclude_bos=True, exclude_current_token=True
    )
    assert neither == pytest.approx(1.0)  # only (2, 1) is left, and it is a previous-token entry
    assert attention[0, 0] == 1.0  # inputs untouched
    with pytest.raises(ValueError, match="square"):
        compute_head_attention_similarity_score(
            torch.ones(2, 3), detection, error_measure="mul", **kwargs
        )
    get_supported_heads()
    assert "previous_token_head" in capsys.readouterr().out

"""sample_logits: greedy, filtering sets, penalties and empirical frequencies under fixed seeds."""

from __future__ import annotations

import pytest
import torch

from tlcore.utils.sampling import sample_logits

N = 200_000  # samples per frequency check: std of a frequency <= 0.0012


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frequencies(logits_row: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
    """Empirical distribution of N draws, taken as one batch of N identical rows."""
    batch = logits_row.expand(N, -1)
    tokens = kwargs.pop("tokens", None)
    if tokens is not None:
        tokens = tokens.expand(N, -1)
    samples = sample_logits(batch, tokens=tokens, generator=_gen(seed), **kwargs)
    assert samples.shape == (N,)
    return torch.bincount(samples, minlength=logits_row.shape[-1]).double() / N


def _assert_distribution(freqs: torch.Tensor, probs: torch.Tensor) -> None:
    probs = probs.double()
    assert torch.all(freqs[probs == 0] == 0), f"sampled outside the support: {freqs}"
    assert (freqs - probs).abs().max() < 0.006, f"frequencies {freqs} vs probabilities {probs}"


LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0])


def test_temperature_zero_is_argmax_and_ignores_filters():
    logits = torch.randn(6, 20, generator=_gen(1))
    expected = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, temperature=0.0), expected)
    assert torch.equal(sample_logits(logits, temperature=0.0, top_k=3, top_p=0.2), expected)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_frequencies_follow_tempered_softmax(temperature):
    freqs = _frequencies(LOGITS, temperature=temperature)
    _assert_distribution(freqs, (LOGITS / temperature).softmax(-1))


def test_deterministic_under_generator_and_global_seed():
    logits = torch.randn(64, 30, generator=_gen(2))
    a = sample_logits(logits, generator=_gen(7))
    b = sample_logits(logits, generator=_gen(7))
    c = sample_logits(logits, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(3)
    d = sample_logits(logits, top_p=0.9)
    torch.manual_seed(3)
    e = sample_logits(logits, top_p=0.9)
    assert torch.equal(d, e)


def test_global_rng_draws_match_transformerlens_categorical():
    # TransformerLens samples with Categorical(logits=...).sample() on the global RNG.
    logits = torch.randn(32, 40, generator=_gen(4))
    torch.manual_seed(11)
    ours = torch.stack([sample_logits(logits, temperature=0.7) for _ in range(20)])
    torch.manual_seed(11)
    reference = torch.stack(
        [torch.distributions.Categorical(logits=logits / 0.7).sample() for _ in range(20)]
    )
    assert torch.equal(ours, reference)


def test_top_k_keeps_exactly_the_k_largest():
    freqs = _frequencies(LOGITS, top_k=3)
    kept = torch.tensor([True, True, True, False, False])
    _assert_distribution(freqs, LOGITS.masked_fill(~kept, -torch.inf).softmax(-1))


def test_top_k_keeps_ties_at_the_boundary():
    freqs = _frequencies(torch.tensor([1.0, 3.0, 1.0, 0.0]), top_k=2)
    expected = torch.tensor([1.0, 3.0, 1.0, -torch.inf]).softmax(-1)
    _assert_distribution(freqs, expected)


# Probabilities 0.5, 0.3, 0.15, 0.05 (in a scrambled vocabulary order).
NUCLEUS_PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])
NUCLEUS_LOGITS = NUCLEUS_PROBS.log()


@pytest.mark.parametrize(
    ("top_p", "nucleus"),
    [
        (0.4, [1]),  # the top token alone reaches 0.4
        (0.5 - 1e-4, [1]),
        (0.75, [1, 3]),  # 0.5 < 0.75 <= 0.8
        (0.85, [1, 3, 0]),  # 0.8 < 0.85 <= 0.95
        (0.96, [1, 3, 0, 2]),
        (1.0, [1, 3, 0, 2]),
    ],
)
def test_top_p_samples_from_the_minimal_nucleus(top_p, nucleus):
    freqs = _frequencies(NUCLEUS_LOGITS, top_p=top_p)
    kept = torch.zeros(4, dtype=torch.bool)
    kept[nucleus] = True
    assert torch.equal(freqs > 0, kept), f"support {freqs > 0} != nucleus {kept}"
    _assert_distribution(freqs, NUCLEUS_LOGITS.masked_fill(~kept, -torch.inf).softmax(-1))


def test_top_p_per_row_with_different_orders():
    logits = torch.stack([NUCLEUS_LOGITS, NUCLEUS_LOGITS.flip(-1)])
    draws = sample_logits(logits.repeat(5000, 1), top_p=0.75, generator=_gen(5)).reshape(5000, 2)
    assert set(draws[:, 0].tolist()) == {1, 3}
    assert set(draws[:, 1].tolist()) == {2, 0}


def test_top_k_takes_precedence_over_top_p():
    # As in TransformerLens, the two are exclusive: with both, only top_k filters.
    freqs = _frequencies(NUCLEUS_LOGITS, top_k=3, top_p=0.4)
    kept = torch.tensor([True, True, False, True])
    _assert_distribution(freqs, NUCLEUS_LOGITS.masked_fill(~kept, -torch.inf).softmax(-1))


def test_frequency_penalty_subtracts_penalty_times_count():
    tokens = torch.tensor([[0, 0, 0, 2, 4, 0]])  # token 0 four times, 2 and 4 once
    counts = torch.tensor([4.0, 0.0, 1.0, 0.0, 1.0])
    freqs = _frequencies(LOGITS, freq_penalty=0.3, temperature=1.5, tokens=tokens)
    # Penalty applies after the temperature division, as in TransformerLens.
    _assert_distribution(freqs, (LOGITS / 1.5 - 0.3 * counts).softmax(-1))


def test_frequency_penalty_is_per_row():
    logits = torch.zeros(2, 3)
    tokens = torch.tensor([[0, 0, 1, 1], [2, 2, 1, 1]])
    # Penalty large enough that only the unseen token of each row survives top_k=1.
    out = sample_logits(logits, top_k=1, freq_penalty=5.0, tokens=tokens, generator=_gen())
    assert out.tolist() == [2, 0]


def test_unbatched_logits():
    out = sample_logits(torch.tensor([0.0, 10.0, 0.0]), top_k=1, generator=_gen())
    assert out.shape == () and int(out) == 1


def test_does_not_modify_input():
    logits = LOGITS.clone().expand(3, -1).contiguous()
    before = logits.clone()
    sample_logits(logits, top_p=0.5, freq_penalty=1.0, tokens=torch.zeros(3, 2, dtype=torch.long))
    assert torch.equal(logits, before)


def test_argument_errors():
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="tokens"):
        sample_logits(logits, freq_penalty=1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(logits, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(logits, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(logits, top_p=1.5)

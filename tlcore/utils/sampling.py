"""Sampling the next token from logits, as TransformerLens 2.x's ``utils.sample_logits`` does."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

__all__ = ["sample_logits"]


def sample_logits(
    final_logits: Float[torch.Tensor, "batch d_vocab"],
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    tokens: Int[torch.Tensor, "batch pos"] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Int[torch.Tensor, " batch"]:
    """Sample one token per row from next-token logits.

    Steps, in TransformerLens's order:

    1. ``temperature == 0``: return the argmax (greedy), ignoring everything else.
    2. Divide the logits by ``temperature`` (above 1 flattens the distribution, below sharpens).
    3. If ``freq_penalty > 0``: subtract ``freq_penalty`` times the number of times each token
       occurs in that row of ``tokens`` (discourages repetition).
    4. If ``top_k`` is set: keep only tokens whose logit is at least the k-th largest (ties at
       the boundary are kept). Otherwise, if ``top_p`` is set: keep the smallest set of most
       likely tokens whose total probability reaches ``top_p`` (nucleus sampling). As in
       TransformerLens, ``top_k`` and ``top_p`` are exclusive: when both are given only
       ``top_k`` applies.
    5. Sample from the softmax of what is left, in float32.

    With ``generator=None`` the draw consumes torch's global RNG exactly as TransformerLens's
    ``Categorical(logits=...).sample()`` does, so ``torch.manual_seed`` reproduces its samples;
    pass a ``torch.Generator`` to make sampling independent of global state.

    Args:
        final_logits: Logits for the next token, ``[batch, d_vocab]`` (or ``[d_vocab]``).
        top_k: Number of most likely tokens to sample from; must be positive.
        top_p: Probability mass of the nucleus to sample from, in ``(0, 1]``.
        temperature: Softmax temperature; 0 means greedy.
        freq_penalty: Logit penalty per previous occurrence of a token; 0 disables it.
        tokens: Previous tokens, ``[batch, pos]``; required when ``freq_penalty > 0``.
        generator: Random number generator for the draw.

    Returns:
        The sampled token ids, ``[batch]``.

    Raises:
        InputValidationError: If ``temperature`` (negative, not finite), ``top_k`` or ``top_p``
            is out of range (a ``ValueError``).
        ValueError: If ``tokens`` is missing for a frequency penalty.

    Examples:
        >>> logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
        >>> sample_logits(logits, temperature=0.0)
        tensor([1, 0])
        >>> sample_logits(logits, top_k=1, generator=torch.Generator().manual_seed(0))
        tensor([1, 0])
        >>> penalised = sample_logits(
        ...     logits, top_k=1, freq_penalty=10.0, tokens=torch.tensor([[1, 1], [2, 2]])
        ... )
        >>> penalised  # token 1 occurred twice in row 0: 5 - 20 < 1
        tensor([2, 0])
    """
    from tlcore.generation_checks import check_sampling

    check_sampling(temperature, top_k, top_p, freq_penalty)  # HF's ranges; typed errors
    if temperature == 0.0:
        return final_logits.argmax(dim=-1)

    logits = final_logits / temperature
    if freq_penalty > 0:
        if tokens is None:
            raise ValueError("Must provide tokens if applying a frequency penalty")
        counts = torch.zeros(
            (*tokens.shape[:-1], logits.shape[-1]), dtype=logits.dtype, device=logits.device
        )
        counts.scatter_add_(-1, tokens, torch.ones_like(tokens, dtype=logits.dtype))
        logits = logits - freq_penalty * counts

    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, -float("inf"))
    elif top_p is not None:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token only if the more likely tokens before it already reach top_p; the most
        # likely token is always kept, so the nucleus is never empty.
        remove_sorted = cumulative_probs > top_p
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, sorted_indices, remove_sorted)
        logits = logits.masked_fill(remove, -float("inf"))

    # Categorical's normalisation, so the draw matches TransformerLens bit for bit.
    probs = torch.distributions.Categorical(logits=logits.to(torch.float32)).probs
    flat = probs.reshape(-1, probs.shape[-1])
    samples = torch.multinomial(flat, 1, replacement=True, generator=generator)
    return samples.reshape(probs.shape[:-1])

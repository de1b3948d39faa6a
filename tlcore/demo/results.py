"""What the demo's analyses return: plain data, presented by the summary and the HTML report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


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

"""Find attention heads of a known kind (TransformerLens 2.x's ``head_detector``).

A kind of head is described by a *detection pattern*: the ``[pos, pos]`` lower-triangular attention
pattern such a head would show on a sequence (1 where it should attend). :func:`detect_head` scores
every head's actual pattern against it. Built-in patterns: ``"previous_token_head"`` (attend to the
previous token), ``"duplicate_token_head"`` (to earlier copies of the current token) and
``"induction_head"`` (to the token after an earlier copy of the current token).

Example:
    >>> import torch
    >>> tokens = torch.tensor([[7, 1, 2, 7, 1]])
    >>> get_previous_token_head_detection_pattern(tokens)
    tensor([[0., 0., 0., 0., 0.],
            [1., 0., 0., 0., 0.],
            [0., 1., 0., 0., 0.],
            [0., 0., 1., 0., 0.],
            [0., 0., 0., 1., 0.]])
    >>> get_induction_head_detection_pattern(tokens)[3:]
    tensor([[0., 1., 0., 0., 0.],
            [0., 0., 1., 0., 0.]])
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Literal, get_args

import torch
from jaxtyping import Float, Int

if TYPE_CHECKING:
    from tlcore.cache import ActivationCache
    from tlcore.model import HookedTransformer

__all__ = [
    "HEAD_NAMES",
    "compute_head_attention_similarity_score",
    "detect_head",
    "get_duplicate_token_head_detection_pattern",
    "get_induction_head_detection_pattern",
    "get_previous_token_head_detection_pattern",
    "get_supported_heads",
]

logger = logging.getLogger(__name__)

HeadName = Literal["previous_token_head", "duplicate_token_head", "induction_head"]
HEAD_NAMES: list[str] = list(get_args(HeadName))
ErrorMeasure = Literal["abs", "mul"]
LayerHeadTuple = tuple[int, int]
LayerToHead = dict[int, list[int]]


def detect_head(
    model: HookedTransformer,
    seq: str | list[str],
    detection_pattern: Float[torch.Tensor, "pos pos"] | HeadName,
    heads: list[LayerHeadTuple] | LayerToHead | None = None,
    cache: ActivationCache | None = None,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: ErrorMeasure = "mul",
) -> Float[torch.Tensor, "n_layers n_heads"]:
    """Score every attention head (or the chosen ones) against a detection pattern.

    Error measures:

    - ``"mul"`` (default): the fraction of the head's attention that falls where the detection
      pattern is 1 (``sum(pattern * detection) / sum(pattern)``), in ``[0, 1]``. Use a 0/1
      detection pattern (other values log a warning).
    - ``"abs"``: ``1 - mean |pattern - detection| * pos``, rounded to 3 decimals; 1 is a perfect
      match, and graded predictions (0.2 here, 0.8 there) are rewarded for being close.

    Args:
        model: The model (with a tokenizer).
        seq: A text (tokenised with ``cfg.default_prepend_bos``), or a list of texts: for a named
            pattern the scores are averaged over the texts.
        detection_pattern: A ``[pos, pos]`` lower-triangular tensor, or one of
            :data:`HEAD_NAMES`.
        heads: Only score these heads, as ``[(layer, head), ...]`` or ``{layer: [head, ...]}``;
            the others get -1.
        cache: A cache of this text's run (``remove_batch_dim=True``, or batch size 1) to reuse.
        exclude_bos: Ignore attention to position 0.
        exclude_current_token: Ignore attention to the query's own position.
        error_measure: ``"mul"`` or ``"abs"``.

    Returns:
        Scores ``[n_layers, n_heads]``.

    Raises:
        ValueError: For an unknown pattern name or error measure, a sequence of length 1 or longer
            than ``n_ctx``, or a detection pattern that is not lower-triangular ``[pos, pos]``.
    """
    cfg = model.cfg
    if error_measure not in get_args(ErrorMeasure):
        raise ValueError(
            f"Invalid error_measure={error_measure!r}; valid values are {get_args(ErrorMeasure)}"
        )
    if isinstance(detection_pattern, str):
        if detection_pattern not in HEAD_NAMES:
            raise ValueError(
                f"detection_pattern must be a Tensor or one of head names: {HEAD_NAMES}; "
                f"got {detection_pattern!r}"
            )
        if isinstance(seq, list):
            scores = [
                detect_head(
                    model,
                    text,
                    detection_pattern,
                    heads,
                    exclude_bos=exclude_bos,
                    exclude_current_token=exclude_current_token,
                    error_measure=error_measure,
                )
                for text in seq
            ]
            return torch.stack(scores).mean(0)
    tokens = model.to_tokens(seq, truncate=False)  # a truncated text would misalign a pattern
    seq_len = tokens.shape[-1]
    if isinstance(detection_pattern, str):
        detection_pattern = _PATTERNS[detection_pattern](tokens.cpu())
    detection_pattern = detection_pattern.to(tokens.device)
    if error_measure == "mul" and not set(detection_pattern.unique().tolist()) <= {0, 1}:
        logger.warning(
            "Using detection pattern with values other than 0 or 1 with error_measure 'mul'"
        )
    if not 1 < seq_len <= cfg.n_ctx:
        raise ValueError(
            "The sequence must be non-empty and must fit within the model's context window "
            f"(got {seq_len} tokens, n_ctx={cfg.n_ctx})."
        )
    if tuple(detection_pattern.shape) != (seq_len, seq_len) or not _is_lower_triangular(
        detection_pattern
    ):
        raise ValueError(
            "The detection pattern must be a lower triangular matrix of shape (sequence_length, "
            f"sequence_length); sequence_length={seq_len}; got detection pattern of shape "
            f"{tuple(detection_pattern.shape)}"
        )
    if cache is None:
        _, cache = model.run_with_cache(
            tokens, remove_batch_dim=True, names_filter=lambda name: name.endswith("hook_pattern")
        )
    layer2heads: dict[int, list[int]]
    if heads is None:
        layer2heads = {layer: list(range(cfg.n_heads)) for layer in range(cfg.n_layers)}
    elif isinstance(heads, list):
        layer2heads = defaultdict(list)
        for layer, head in heads:
            layer2heads[layer].append(head)
    else:
        layer2heads = heads
    matches = -torch.ones(cfg.n_layers, cfg.n_heads, dtype=cfg.dtype)
    for layer, layer_heads in layer2heads.items():
        patterns = cache["pattern", layer, "attn"]
        if patterns.dim() == 4:  # a cache with its batch dimension
            if patterns.shape[0] != 1:
                raise ValueError("detect_head takes a cache of one sequence")
            patterns = patterns[0]
        for head in layer_heads:
            matches[layer, head] = compute_head_attention_similarity_score(
                patterns[head],
                detection_pattern,
                exclude_bos=exclude_bos,
                exclude_current_token=exclude_current_token,
                error_measure=error_measure,
            )
    return matches


def get_previous_token_head_detection_pattern(
    tokens: Int[torch.Tensor, "1 pos"] | Int[torch.Tensor, " pos"],
) -> Float[torch.Tensor, "pos pos"]:
    """Detection pattern of a previous-token head: each position attends to the one before.

    Args:
        tokens: The tokens (only their number matters).

    Returns:
        ``[pos, pos]`` with ones just below the diagonal.
    """
    n = tokens.shape[-1]
    pattern = torch.zeros(n, n)
    pattern[1:, :-1] = torch.eye(n - 1)
    return pattern


def get_duplicate_token_head_detection_pattern(
    tokens: Int[torch.Tensor, "1 pos"] | Int[torch.Tensor, " pos"],
) -> Float[torch.Tensor, "pos pos"]:
    """Detection pattern of a duplicate-token head: attend to earlier copies of the current token.

    Args:
        tokens: The tokens ``[pos]`` or ``[1, pos]``.

    Returns:
        ``[pos, pos]``: 1 at ``(i, j)`` when ``j < i`` and ``tokens[j] == tokens[i]``.

    Example:
        >>> get_duplicate_token_head_detection_pattern(torch.tensor([5, 6, 5]))
        tensor([[0., 0., 0.],
                [0., 0., 0.],
                [1., 0., 0.]])
    """
    flat = tokens.reshape(-1)
    same = (flat[:, None] == flat[None, :]).float()
    return torch.tril(same, diagonal=-1)


def get_induction_head_detection_pattern(
    tokens: Int[torch.Tensor, "1 pos"] | Int[torch.Tensor, " pos"],
) -> Float[torch.Tensor, "pos pos"]:
    """Detection pattern of an induction head: attend to the token after an earlier copy.

    Args:
        tokens: The tokens ``[pos]`` or ``[1, pos]``.

    Returns:
        ``[pos, pos]``: the duplicate-token pattern shifted one key position to the right (and
        kept lower-triangular).
    """
    duplicate = get_duplicate_token_head_detection_pattern(tokens)
    shifted = torch.zeros_like(duplicate)
    shifted[:, 1:] = duplicate[:, :-1]
    return torch.tril(shifted)


_PATTERNS = {
    "previous_token_head": get_previous_token_head_detection_pattern,
    "duplicate_token_head": get_duplicate_token_head_detection_pattern,
    "induction_head": get_induction_head_detection_pattern,
}


def get_supported_heads() -> None:
    """Print the names of the built-in detection patterns."""
    print(f"Supported heads: {HEAD_NAMES}")


def compute_head_attention_similarity_score(
    attention_pattern: Float[torch.Tensor, "q_pos k_pos"],
    detection_pattern: Float[torch.Tensor, "q_pos k_pos"],
    *,
    exclude_bos: bool,
    exclude_current_token: bool,
    error_measure: ErrorMeasure,
) -> float:
    """Score one head's attention pattern against a detection pattern (see :func:`detect_head`).

    Args:
        attention_pattern: The head's pattern (not modified).
        detection_pattern: The pattern looked for.
        exclude_bos: Ignore attention to position 0.
        exclude_current_token: Ignore the diagonal.
        error_measure: ``"mul"`` or ``"abs"``.

    Returns:
        The score.

    Raises:
        ValueError: If the attention pattern is not square.

    Example:
        >>> attention = torch.tensor([[1.0, 0.0], [0.75, 0.25]])
        >>> detection = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> compute_head_attention_similarity_score(
        ...     attention, detection, exclude_bos=False, exclude_current_token=False,
        ...     error_measure="mul")
        0.375
    """
    if attention_pattern.dim() != 2 or attention_pattern.shape[0] != attention_pattern.shape[1]:
        raise ValueError(
            f"Attention pattern is not square; got shape {tuple(attention_pattern.shape)}"
        )
    attention = attention_pattern.detach().clone().to(torch.float32)
    detection = detection_pattern.to(attention.device, torch.float32)
    if error_measure == "mul":
        if exclude_bos:
            attention[:, 0] = 0
        if exclude_current_token:
            attention.fill_diagonal_(0)
        return ((attention * detection).sum() / attention.sum()).item()
    abs_diff = (attention - detection).abs()
    size = len(abs_diff)
    if exclude_bos:
        abs_diff[:, 0] = 0
    if exclude_current_token:
        abs_diff.fill_diagonal_(0)
    return 1 - round((abs_diff.mean() * size).item(), 3)


def _is_lower_triangular(x: torch.Tensor) -> bool:
    return x.dim() == 2 and bool(torch.equal(x, x.tril()))

"""A parity result and the fixed token batch every comparison runs on.

Kept apart from :mod:`tlcore.parity.compare` (which loads models) so snapshots, reports and the
CLI can name cases and read results without importing the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Int

DEFAULT_ATOL = 1e-4
TOKEN_SEED = 0
BATCH_SHAPE = (2, 12)
"""The parity batch: long enough for the test configs' sliding windows, small for snapshots."""


@dataclass
class ParityResult:
    """Outcome of one comparison (all diffs are max absolute differences, fp32 unless noted).

    ``processed_logprobs_max_diff`` is the processed check: the processed model's log-softmax
    against the same checkpoint loaded unprocessed, both in float64 (weight processing is exact
    maths; :mod:`tlcore.parity.processed`); in a half dtype, against HF's half model, judged by
    HF's own rounding error (:mod:`tlcore.parity.half`). ``processed_logprobs_vs_hf_max_diff`` is
    the float64 processed model's distance from HF cast to float64, reported and never judged
    (HF's float64 model still computes some parts in float32).

    ``first_divergence`` describes where tlcore and HF first disagree; ``first_hook`` is the exact
    TransformerLens hook name there (``blocks.0.attn.hook_q``), or a coarser place
    (``blocks.0``, ``unembed``) when no finer hook could be compared. ``error`` is set when the
    case could not run at all (the spec does not build, the checkpoint does not load).
    """

    spec: str
    variant: str | None
    ok: bool
    logits_max_diff: float
    logprobs_max_diff: float | None = None
    processed_logprobs_max_diff: float | None = None
    layer_max_diffs: list[float] = field(default_factory=list)
    embed_max_diff: float | None = None
    first_divergence: str | None = None
    atol: float = DEFAULT_ATOL
    message: str = ""
    first_hook: str | None = None
    error: str | None = None
    spec_hash: str | None = None
    seconds: float = 0.0
    processed_logprobs_vs_hf_max_diff: float | None = None

    @property
    def name(self) -> str:
        """``spec`` or ``spec/variant``."""
        return case_label(self.spec, self.variant)

    @property
    def status(self) -> str:
        """``ok``, ``fail`` (numbers differ) or ``error`` (the case did not run)."""
        if self.error is not None:
            return "error"
        return "ok" if self.ok else "fail"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (NaN diffs become None).

        Returns:
            The fields plus ``name`` and ``status``.
        """
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        out["name"], out["status"] = self.name, self.status
        return out


def case_label(spec: str, variant: str | None) -> str:
    """The printed name of a case.

    Args:
        spec: Spec name.
        variant: Test variant or None.

    Returns:
        ``spec`` or ``spec/variant``.

    Example:
        >>> case_label("llama", "mha"), case_label("gpt2", None)
        ('llama/mha', 'gpt2')
    """
    return f"{spec}/{variant}" if variant else spec


def parity_tokens(
    d_vocab: int, batch: int = BATCH_SHAPE[0], pos: int = BATCH_SHAPE[1], seed: int = TOKEN_SEED
) -> Int[torch.Tensor, "batch pos"]:
    """The fixed token batch parity runs on (long enough for the test configs' sliding windows).

    Args:
        d_vocab: Vocabulary size.
        batch: Batch size.
        pos: Sequence length.

    Returns:
        ``[batch, pos]`` token ids.

    Example:
        >>> parity_tokens(100, 1, 4).shape
        torch.Size([1, 4])
    """
    return torch.randint(0, d_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))

"""Parity on real weights: tlcore vs transformers on one checkpoint, as a pull-request table row.

Both libraries read the same folder: a local checkpoint, an HF hub id (through the hub or its
cache), or a ``.gguf`` file, which tlcore's resolver converts once into a cached safetensors
folder that transformers then loads too (so both see identical, dequantised fp32 weights).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from tlcore.loading.resolve import resolve_checkpoint
from tlcore.model import HookedTransformer
from tlcore.parity.result import parity_tokens

DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1905, Albert Einstein published four papers that",
    "Once upon a time, in a small village by the sea, there lived",
)
MARKDOWN_HEADER = (
    "| model | spec | max abs logit diff | top-1 agreement | mean KL(HF‖tlcore) | time |\n"
    "|---|---|---|---|---|---|"
)
TOP1_REQUIRED = 100.0
KL_LIMIT = 1e-4
"""A real-weights row passes with every top-1 prediction equal and a mean KL below this."""


@dataclass
class PretrainedParity:
    """tlcore vs transformers on one real checkpoint (fp32, unprocessed, eager HF attention)."""

    model: str
    spec: str
    max_abs_logit_diff: float
    top1_agreement: float
    """Percent of positions where both predict the same next token."""
    mean_kl: float
    """Mean over positions of KL(HF || tlcore), in nats."""
    seconds: float
    n_positions: int
    tokens: str
    """``tokenizer`` (prompts tokenised with the checkpoint's tokenizer) or ``random ids``."""
    where: str

    @property
    def ok(self) -> bool:
        """Whether every top-1 prediction agrees and the mean KL is below :data:`KL_LIMIT`."""
        return self.top1_agreement >= TOP1_REQUIRED and self.mean_kl < KL_LIMIT

    def markdown_row(self) -> str:
        """The row to paste under :data:`MARKDOWN_HEADER`.

        Returns:
            A markdown table row.

        Example:
            >>> PretrainedParity("m", "llama", 1e-4, 100.0, 2e-9, 3.2, 40, "tokenizer",
            ...                  "/x").markdown_row()
            '| m | llama | 1.00e-04 | 100.0% | 2.00e-09 | 3.2 s |'
        """
        return (
            f"| {self.model} | {self.spec} | {self.max_abs_logit_diff:.2e} | "
            f"{self.top1_agreement:.1f}% | {self.mean_kl:.2e} | {self.seconds:.1f} s |"
        )

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict.

        Returns:
            The fields plus ``ok`` and ``markdown_row``.
        """
        return {**asdict(self), "ok": self.ok, "markdown_row": self.markdown_row()}


def logit_metrics(
    ours: Float[torch.Tensor, "batch pos d_vocab"], ref: Float[torch.Tensor, "batch pos d_vocab"]
) -> tuple[float, int, int, float]:
    """Compare two logit tensors.

    Args:
        ours: tlcore's logits.
        ref: HF's logits.

    Returns:
        ``(max abs diff, top-1 agreements, positions, summed KL(ref || ours))`` (KL in float64).

    Example:
        >>> x = torch.randn(1, 3, 5)
        >>> logit_metrics(x, x)[:3]
        (0.0, 3, 3)
    """
    diff = float((ours - ref).abs().max())
    agree = int((ours.argmax(-1) == ref.argmax(-1)).sum())
    log_p = ref.double().log_softmax(-1)
    log_q = ours.double().log_softmax(-1)
    kl = float((log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0).sum())
    return diff, agree, ref.shape[0] * ref.shape[1], kl


def checkpoint_folder(name_or_path: str | Path) -> tuple[Path, Any]:
    """Resolve a model reference to the folder both libraries read, and its spec.

    Args:
        name_or_path: A local folder, a ``.gguf`` file, an alias or an HF hub id.

    Returns:
        ``(folder, spec)``.
    """
    resolved = resolve_checkpoint(str(name_or_path))
    return Path(resolved.where), resolved.spec


def _hf_model(folder: Path, attn_implementation: str) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32, "attn_implementation": attn_implementation}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, experts_implementation="eager", **kwargs
        )
    except (TypeError, ValueError):
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return model.eval()


def compare_pretrained(
    name_or_path: str | Path,
    prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS,
    device: str = "cpu",
) -> PretrainedParity:
    """Compare tlcore (``from_pretrained_no_processing``) with transformers on real weights.

    Both run fp32 on ``device``; HF uses eager attention (or the spec's ``parity`` setting). The
    prompts are tokenised with the checkpoint's tokenizer, each run on its own (no padding). A
    checkpoint without a tokenizer runs on fixed random token ids instead.

    Args:
        name_or_path: A local folder, a ``.gguf`` file, an alias or an HF hub id.
        prompts: Prompts to compare on.
        device: Device for both models.

    Returns:
        The comparison.
    """
    start = time.perf_counter()
    folder, spec = checkpoint_folder(name_or_path)
    model = HookedTransformer.from_pretrained_no_processing(
        str(folder), device=device, dtype="float32"
    )
    hf_model = _hf_model(folder, spec.parity.attn_implementation).to(device)
    batches: list[torch.Tensor]
    if model.tokenizer is not None:
        source = "tokenizer"
        batches = [model.tokenizer(p, return_tensors="pt")["input_ids"] for p in prompts]
    else:
        source = "random ids"
        batches = list(parity_tokens(model.cfg.d_vocab, batch=len(prompts), pos=16)[:, None])
    max_diff, agree, total, kl = 0.0, 0, 0, 0.0
    with torch.no_grad():
        for tokens in batches:
            tokens = tokens.to(device)
            ours = model(tokens).float()
            ref = hf_model(tokens).logits.float()
            d, a, n, k = logit_metrics(ours, ref)
            max_diff, agree, total, kl = max(max_diff, d), agree + a, total + n, kl + k
    local = Path(name_or_path).expanduser()
    return PretrainedParity(
        # A local path shows as its last component: the row is pasted into a pull request.
        model=local.name if local.exists() else str(name_or_path),
        spec=spec.name,
        max_abs_logit_diff=max_diff,
        top1_agreement=100.0 * agree / max(total, 1),
        mean_kl=kl / max(total, 1),
        seconds=time.perf_counter() - start,
        n_positions=total,
        tokens=source,
        where=str(folder),
    )

"""The whole demo: load a model, run every analysis, time each stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tlcore.demo.analysis import (
    IOI_PROMPT,
    TOP_TOKEN_PROMPTS,
    direct_logit_attribution,
    head_patterns,
    induction_scores,
    ioi_logit_diff,
    patching_sweep,
    top_next_tokens,
)
from tlcore.demo.loading import load_model, model_info
from tlcore.demo.results import DemoResult
from tlcore.model import HookedTransformer


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

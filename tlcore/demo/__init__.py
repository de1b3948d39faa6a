"""``tlcore demo``: interpretability on a real model (SmolLM2-135M by default), end to end.

The analyses are library functions returning data (:mod:`tlcore.demo.analysis`, results in
:mod:`tlcore.demo.results`, the model from :mod:`tlcore.demo.loading`, the whole run in
:mod:`tlcore.demo.run`); a text summary
(:mod:`tlcore.demo.summary`) and a self-contained HTML report (:mod:`tlcore.demo.report`) present
them. ``tlcore demo`` (:mod:`tlcore.commands.demo`) runs all three.
"""

from tlcore.demo.analysis import (
    IOI_CORRUPTED_PROMPT,
    IOI_PROMPT,
    direct_logit_attribution,
    induction_scores,
    ioi_logit_diff,
    patching_sweep,
    top_next_tokens,
)
from tlcore.demo.loading import load_model
from tlcore.demo.report import render_html, write_html_report
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
from tlcore.demo.run import analyse, run_demo
from tlcore.demo.summary import format_summary

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
    "analyse",
    "direct_logit_attribution",
    "format_summary",
    "induction_scores",
    "ioi_logit_diff",
    "load_model",
    "patching_sweep",
    "render_html",
    "run_demo",
    "top_next_tokens",
    "write_html_report",
]

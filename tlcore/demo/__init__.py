"""``tlcore demo``: interpretability on a real model (SmolLM2-135M by default), end to end.

The analyses are library functions returning data (:mod:`tlcore.demo.analysis`); a text summary
(:mod:`tlcore.demo.summary`) and a self-contained HTML report (:mod:`tlcore.demo.report`) present
them. ``tlcore demo`` (:mod:`tlcore.commands.demo`) runs all three.
"""

from tlcore.demo.analysis import (
    IOI_CORRUPTED_PROMPT,
    IOI_PROMPT,
    Attribution,
    DemoResult,
    HeadPattern,
    InductionResult,
    LogitDiff,
    ModelInfo,
    PatchingResult,
    TopTokens,
    analyse,
    direct_logit_attribution,
    induction_scores,
    ioi_logit_diff,
    load_model,
    patching_sweep,
    run_demo,
    top_next_tokens,
)
from tlcore.demo.report import render_html, write_html_report
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

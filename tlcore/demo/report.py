"""The demo's HTML report: one self-contained file, inline CSS and SVG only.

No scripts, fonts or stylesheets are fetched: the report opens offline, in any browser, and stays
readable when printed. Every plotted cell or bar carries its number in a ``data-value`` attribute
and a ``<title>`` tooltip.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from tlcore.demo.analysis import DemoResult, HeadPattern

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0; background: #f6f7f9; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 6px; padding-top: 10px; border-top: 1px solid #e3e6ea; }
h3 { font-size: 15px; margin: 18px 0 4px; }
p.note, figcaption { color: #57606a; font-size: 13.5px; max-width: 860px; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 10px; }
th, td { padding: 3px 10px; text-align: left; border-bottom: 1px solid #eaeef2; }
th { background: #f3f5f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .tok { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
             font-size: 12.5px; }
.tok { background: #f0f3f6; border-radius: 3px; padding: 0 3px; white-space: pre; }
.big { font-size: 34px; font-weight: 650; color: #0b5cad; margin: 4px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
figure { margin: 10px 0; width: min-content; max-width: 100%; }
figure svg { display: block; }
svg text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; fill: #1f2328; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
"""

_BLUE = (33, 102, 172)
_RED = (178, 24, 43)
_WHITE = (255, 255, 255)


def write_html_report(result: DemoResult, path: str | Path) -> Path:
    """Write the demo's report as one self-contained HTML file.

    Args:
        result: The demo's results.
        path: The output file (parent folders are created).

    Returns:
        The absolute path written.
    """
    out = Path(path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(result), encoding="utf-8")
    return out


def render_html(result: DemoResult) -> str:
    """Render the report.

    Args:
        result: The demo's results.

    Returns:
        The HTML document.
    """
    sections = [
        _header(result),
        _top_tokens_section(result),
        _ioi_section(result),
        _attribution_section(result),
        _patching_section(result),
        _patterns_section(result),
        _induction_section(result),
        _timings_section(result),
    ]
    title = f"tlcore demo: {result.model.name}"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


# ----- sections ------------------------------------------------------------------------------


def _header(result: DemoResult) -> str:
    info = result.model
    kv = f" ({info.n_key_value_heads} key/value)" if info.n_key_value_heads != info.n_heads else ""
    rows = [
        (
            "architecture",
            f"{info.architecture}: {info.n_layers} layers, {info.n_heads} heads{kv}, "
            f"d_model {info.d_model}, vocabulary {info.d_vocab}",
        ),
        ("parameters", f"{info.n_params / 1e6:.1f} M"),
        ("weights", info.where),
        ("weight processing", ", ".join(info.processing) or "none"),
        (
            "prepend_bos",
            f"{info.prepend_bos} (prompts are tokenised as the checkpoint's own "
            "HuggingFace tokenizer does)",
        ),
    ]
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return (
        f"<h1>tlcore demo: {_esc(info.name)}</h1>\n"
        "<p class='note'>A tour of interpretability on a real model through tlcore's "
        "TransformerLens-style API: predictions, a logit difference, where it comes from (direct "
        "logit attribution), where it travels (activation patching) and induction heads.</p>\n"
        f"<table>{table}</table>"
    )


def _top_tokens_section(result: DemoResult) -> str:
    rows = []
    for top in result.top_tokens:
        cells = "".join(
            f"<td><span class='tok'>{_esc(tok)}</span> <small>{p:.2f}</small></td>"
            for tok, p in zip(top.tokens, top.probs)
        )
        rows.append(f"<tr><td>{_esc(top.prompt)}</td>{cells}</tr>")
    k = max((len(t.tokens) for t in result.top_tokens), default=0)
    head = "".join(f"<th>#{i + 1}</th>" for i in range(k))
    return (
        "<h2>Top next tokens</h2>\n"
        "<p class='note'>The most likely next tokens after each prompt, with their "
        "probabilities.</p>\n"
        f"<table><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"
    )


def _ioi_section(result: DemoResult) -> str:
    ioi = result.ioi
    tokens = " ".join(f"<span class='tok'>{_esc(t)}</span>" for t in ioi.str_tokens)
    return (
        "<h2>Indirect object identification</h2>\n"
        f"<p>{_esc(ioi.prompt)} &hellip;</p>\n"
        f"<p class='note'>Tokens: {tokens}</p>\n"
        f"<div class='big' id='ioi-logit-diff' data-value='{ioi.logit_diff:.6f}'>"
        f"logit(<span class='tok'>{_esc(ioi.correct)}</span>) &minus; "
        f"logit(<span class='tok'>{_esc(ioi.incorrect)}</span>) = {ioi.logit_diff:+.2f}</div>\n"
        "<p class='note'>Positive: the model prefers the indirect object (the name not repeated) "
        "over the subject.</p>"
    )


def _attribution_section(result: DemoResult) -> str:
    attribution = result.attribution
    n_layers = len(attribution.attn_by_layer)
    groups = [("emb", [attribution.embed, 0.0])] + [
        (
            str(layer),
            [float(attribution.attn_by_layer[layer]), float(attribution.mlp_by_layer[layer])],
        )
        for layer in range(n_layers)
    ]
    layer_chart = _grouped_bars(groups, series=["attention", "MLP"], colors=["#0b5cad", "#e07b00"])
    top = attribution.top_heads(12)
    head_bars = _horizontal_bars([(f"L{layer}H{head}", value) for layer, head, value in top])
    by_head = attribution.by_head
    head_map = _heatmap(
        [[float(v) for v in row] for row in by_head],
        [f"L{layer}" for layer in range(by_head.shape[0])],
        [f"H{h}" for h in range(by_head.shape[1])],
        diverging=True,
        cell=(22, 12),
        label="head attribution",
    )
    ioi = result.ioi
    return (
        "<h2>Direct logit attribution</h2>\n"
        "<p class='note'>Each residual-stream component's direct contribution to "
        f"logit(<span class='tok'>{_esc(ioi.correct)}</span>) &minus; "
        f"logit(<span class='tok'>{_esc(ioi.incorrect)}</span>) at the final position: "
        "<code>cache.decompose_resid</code> and <code>cache.stack_head_results</code>, scaled by "
        "the final norm (<code>apply_ln_to_stack</code>) and projected onto the unembedding "
        f"difference (<code>logit_attrs</code>). The components sum to "
        f"{attribution.total:+.2f} (the logit difference is {attribution.logit_diff:+.2f}).</p>\n"
        f"<figure>{layer_chart}<figcaption>By layer: attention and MLP outputs (the first group "
        "is the embedding).</figcaption></figure>\n"
        "<div class='grid'>"
        f"<figure>{head_bars}<figcaption>The 12 heads with the largest |attribution|."
        "</figcaption></figure>"
        f"<figure>{head_map}<figcaption>Every head (red: towards "
        f"<span class='tok'>{_esc(ioi.correct)}</span>, blue: towards "
        f"<span class='tok'>{_esc(ioi.incorrect)}</span>).</figcaption></figure>"
        "</div>"
    )


def _patching_section(result: DemoResult) -> str:
    patching = result.patching
    scores = patching.scores
    limit = max(1.0, float(scores.abs().max()))
    chart = _heatmap(
        [[float(v) for v in row] for row in scores],
        [f"L{layer}" for layer in range(scores.shape[0])],
        [_tok_label(t) for t in patching.str_tokens],
        diverging=True,
        vmax=limit,
        cell=(38, 13),
        label="patching score",
        col_label_angle=-45,
    )
    differs = [
        i
        for i, (a, b) in enumerate(zip(patching.str_tokens, patching.corrupted_str_tokens))
        if a != b
    ]
    changed = ", ".join(
        f"position {i}: <span class='tok'>{_esc(patching.str_tokens[i])}</span> &rarr; "
        f"<span class='tok'>{_esc(patching.corrupted_str_tokens[i])}</span>"
        for i in differs
    )
    return (
        "<h2>Activation patching</h2>\n"
        f"<p class='note'>Clean: <q>{_esc(patching.clean_prompt)}</q> (logit difference "
        f"{patching.clean_logit_diff:+.2f}). Corrupted: <q>{_esc(patching.corrupted_prompt)}</q> "
        f"({patching.corrupted_logit_diff:+.2f}; {changed}). Each cell runs the corrupted prompt "
        "with one layer's <code>resid_pre</code> at one position replaced by the clean run's "
        "(<code>patching.get_act_patch_resid_pre</code>) and shows the normalised logit "
        "difference: 1 recovers the clean answer, 0 changes nothing. The information moves from "
        "the changed name's position to the final position as depth grows.</p>\n"
        f"<figure>{chart}</figure>"
    )


def _patterns_section(result: DemoResult) -> str:
    figures = []
    for pattern in result.patterns:
        figures.append(
            f"<figure><h3>L{pattern.layer}H{pattern.head}</h3>{_pattern_map(pattern)}"
            f"<figcaption>{_esc(pattern.why)}. Rows: query (attending) token; columns: key "
            "token.</figcaption></figure>"
        )
    return (
        "<h2>Attention patterns of the top heads</h2>\n"
        "<p class='note'>The heads with the largest direct logit attribution, on the IOI prompt, "
        "and the strongest induction heads, on the repeated random words (an induction head "
        "attends from a word in the second half to the word that followed its first "
        "occurrence: a stripe one step right of the off-diagonal).</p>\n"
        f"<div class='grid'>{''.join(figures)}</div>"
    )


def _induction_section(result: DemoResult) -> str:
    induction = result.induction
    rows = "".join(
        f"<tr><td class='num'>{layer}</td><td class='num'>{head}</td>"
        f"<td class='num'>{score:.3f}</td></tr>"
        for layer, head, score in induction.top_heads(5)
    )
    scores = induction.scores
    chart = _heatmap(
        [[float(v) for v in row] for row in scores],
        [f"L{layer}" for layer in range(scores.shape[0])],
        [f"H{h}" for h in range(scores.shape[1])],
        diverging=False,
        vmax=1.0,
        cell=(22, 12),
        label="induction score",
    )
    return (
        "<h2>Induction heads</h2>\n"
        f"<p class='note'><code>head_detector.detect_head(model, text, \"induction_head\")</code> "
        f"on {induction.seq_len} random words written twice: the share of each head's attention "
        "that goes where an induction head would look (1 = all of it).</p>\n"
        "<div class='grid'>"
        f"<table id='induction-table'><tr><th class='num'>layer</th><th class='num'>head</th>"
        f"<th class='num'>score</th></tr>{rows}</table>"
        f"<figure>{chart}<figcaption>Every head's induction score.</figcaption></figure>"
        "</div>"
    )


def _timings_section(result: DemoResult) -> str:
    rows = "".join(
        f"<tr><td>{_esc(stage)}</td><td class='num'>{seconds:.2f} s</td></tr>"
        for stage, seconds in result.timings.items()
    )
    total = sum(result.timings.values())
    return (
        "<h2>Timings</h2>\n"
        f"<table>{rows}<tr><th>total</th><th class='num'>{total:.2f} s</th></tr></table>"
    )


# ----- SVG building blocks -------------------------------------------------------------------


def _pattern_map(pattern: HeadPattern) -> str:
    n = len(pattern.str_tokens)
    size = 22 if n <= 16 else max(9, 440 // n)
    labels = [_tok_label(t) for t in pattern.str_tokens]
    return _heatmap(
        [[float(v) for v in row] for row in pattern.pattern],
        labels,
        labels,
        diverging=False,
        vmax=1.0,
        cell=(size, size),
        label=f"L{pattern.layer}H{pattern.head} attention",
        col_label_angle=-60,
        font=10 if size >= 14 else 8,
    )


def _heatmap(
    values: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    diverging: bool,
    cell: tuple[int, int],
    label: str,
    vmax: float | None = None,
    col_label_angle: int = 0,
    font: int = 10,
) -> str:
    """A heatmap with row and column labels, a colour legend and a tooltip per cell."""
    finite = [abs(v) for row in values for v in row if math.isfinite(v)]
    limit = vmax if vmax is not None else max(finite, default=1.0) or 1.0
    width, height = cell
    char = font * 0.62
    left = int(max((len(s) for s in row_labels), default=1) * char) + 8
    if col_label_angle:
        longest = max((len(s) for s in col_labels), default=1) * char
        top = int(longest * abs(math.sin(math.radians(col_label_angle)))) + font + 6
    else:
        top = font + 8
    n_rows, n_cols = len(values), len(col_labels)
    legend_height = 34
    total_w = max(left + n_cols * width + 10, 220)
    total_h = top + n_rows * height + legend_height
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{total_w}' height='{total_h}' "
        f"viewBox='0 0 {total_w} {total_h}' role='img' aria-label='{_esc(label)}' "
        f"data-kind='heatmap' data-rows='{n_rows}' data-cols='{n_cols}'>"
    ]
    for j, text in enumerate(col_labels):
        x = left + j * width + width / 2
        if col_label_angle:
            parts.append(
                f"<text x='{x:.1f}' y='{top - 4}' font-size='{font}' text-anchor='start' "
                f"transform='rotate({col_label_angle} {x:.1f} {top - 4})'>{_esc(text)}</text>"
            )
        else:
            parts.append(
                f"<text x='{x:.1f}' y='{top - 4}' font-size='{font}' text-anchor='middle'>"
                f"{_esc(text)}</text>"
            )
    for i, row in enumerate(values):
        y = top + i * height
        parts.append(
            f"<text x='{left - 4}' y='{y + height / 2 + font * 0.35:.1f}' font-size='{font}' "
            f"text-anchor='end'>{_esc(row_labels[i])}</text>"
        )
        for j, value in enumerate(row):
            fill = _color(value, limit, diverging)
            tip = f"{row_labels[i]} / {col_labels[j]}: {value:.3f}"
            parts.append(
                f"<rect x='{left + j * width}' y='{y}' width='{width}' height='{height}' "
                f"fill='{fill}' data-value='{value:.4f}'><title>{_esc(tip)}</title></rect>"
            )
    parts.append(
        f"<rect x='{left}' y='{top}' width='{n_cols * width}' height='{n_rows * height}' "
        "fill='none' stroke='#d0d7de'/>"
    )
    parts.append(_legend(left, top + n_rows * height + 10, limit, diverging, font))
    parts.append("</svg>")
    return "".join(parts)


def _legend(x: int, y: int, limit: float, diverging: bool, font: int) -> str:
    low = -limit if diverging else 0.0
    steps = 24
    width = 150
    parts = []
    for k in range(steps):
        value = low + (limit - low) * (k + 0.5) / steps
        parts.append(
            f"<rect x='{x + k * width / steps:.1f}' y='{y}' width='{width / steps + 0.5:.1f}' "
            f"height='8' fill='{_color(value, limit, diverging)}'/>"
        )
    parts.append(f"<text x='{x}' y='{y + 20}' font-size='{font}'>{low:+.2g}</text>")
    parts.append(
        f"<text x='{x + width}' y='{y + 20}' font-size='{font}' text-anchor='end'>"
        f"{limit:+.2g}</text>"
    )
    return "".join(parts)


def _grouped_bars(
    groups: Sequence[tuple[str, Sequence[float]]], series: Sequence[str], colors: Sequence[str]
) -> str:
    """Vertical bars around a zero line, one group per label, one bar per series."""
    bar, gap = 9, 6
    group_w = bar * len(series) + gap
    left, top, plot_h, bottom = 46, 26, 220, 34
    values = [v for _, vs in groups for v in vs]
    hi = max(max(values, default=0.0), 0.0)
    lo = min(min(values, default=0.0), 0.0)
    span = (hi - lo) or 1.0
    width = left + len(groups) * group_w + 10
    height = top + plot_h + bottom

    def y_of(v: float) -> float:
        return top + (hi - v) / span * plot_h

    zero = y_of(0.0)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='attribution by layer' "
        "data-kind='bars'>"
    ]
    for tick in _ticks(lo, hi):
        y = y_of(tick)
        parts.append(
            f"<line x1='{left - 4}' x2='{width - 6}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eef1f4'/>"
            f"<text x='{left - 6}' y='{y + 3:.1f}' font-size='10' text-anchor='end'>"
            f"{tick:g}</text>"
        )
    for g, (name, vs) in enumerate(groups):
        x0 = left + g * group_w
        for s, value in enumerate(vs):
            y = min(y_of(value), zero)
            h = abs(y_of(value) - zero)
            parts.append(
                f"<rect x='{x0 + s * bar}' y='{y:.1f}' width='{bar - 1}' height='{h:.1f}' "
                f"fill='{colors[s]}' data-value='{value:.4f}'>"
                f"<title>{_esc(name)} {_esc(series[s])}: {value:+.3f}</title></rect>"
            )
        if g % 2 == 0 or len(groups) <= 16:
            parts.append(
                f"<text x='{x0 + bar * len(series) / 2:.1f}' y='{top + plot_h + 14}' "
                f"font-size='10' text-anchor='middle'>{_esc(name)}</text>"
            )
    parts.append(
        f"<line class='axis' x1='{left}' x2='{width - 6}' y1='{zero:.1f}' y2='{zero:.1f}'/>"
    )
    for s, name in enumerate(series):
        x = left + s * 110
        parts.append(
            f"<rect x='{x}' y='6' width='10' height='10' fill='{colors[s]}'/>"
            f"<text x='{x + 14}' y='15' font-size='11'>{_esc(name)}</text>"
        )
    parts.append(
        f"<text x='{left + len(groups) * group_w / 2:.1f}' y='{height - 4}' font-size='11' "
        "text-anchor='middle'>layer</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _horizontal_bars(items: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars around a zero line, one per labelled value."""
    row_h, left, plot_w, right = 18, 60, 300, 50
    values = [v for _, v in items]
    hi = max(max(values, default=0.0), 0.0)
    lo = min(min(values, default=0.0), 0.0)
    span = (hi - lo) or 1.0
    height = len(items) * row_h + 24
    width = left + plot_w + right

    def x_of(v: float) -> float:
        return left + (v - lo) / span * plot_w

    zero = x_of(0.0)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='top heads' data-kind='bars'>"
    ]
    for i, (name, value) in enumerate(items):
        y = 4 + i * row_h
        x = min(x_of(value), zero)
        fill = "#b2182b" if value >= 0 else "#2166ac"
        parts.append(
            f"<text x='{left - 6}' y='{y + 12}' font-size='11' text-anchor='end'>"
            f"{_esc(name)}</text>"
            f"<rect x='{x:.1f}' y='{y + 2}' width='{abs(x_of(value) - zero):.1f}' "
            f"height='{row_h - 5}' fill='{fill}' data-value='{value:.4f}'>"
            f"<title>{_esc(name)}: {value:+.3f}</title></rect>"
            f"<text x='{max(x_of(value), zero) + 4:.1f}' y='{y + 12}' font-size='10'>"
            f"{value:+.2f}</text>"
        )
    parts.append(
        f"<line class='axis' x1='{zero:.1f}' x2='{zero:.1f}' y1='2' y2='{len(items) * row_h + 6}'/>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [0.0]
    raw = span / n
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    ticks = []
    value = start
    while value <= hi + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _color(value: float, limit: float, diverging: bool) -> str:
    if not math.isfinite(value):
        return "#cccccc"
    t = max(-1.0, min(1.0, value / limit)) if limit else 0.0
    if diverging:
        target = _RED if t >= 0 else _BLUE
        t = abs(t)
    else:
        target, t = _BLUE, max(t, 0.0)
    r, g, b = (round(w + (c - w) * t) for w, c in zip(_WHITE, target))
    return f"#{r:02x}{g:02x}{b:02x}"


def _tok_label(token: str) -> str:
    """A token as a short visible label: surrounding spaces dropped, blanks and newlines shown."""
    shown = token.replace("\n", "\u21b5").strip()
    if not shown:
        shown = "\u2423"
    return shown if len(shown) <= 12 else shown[:11] + "\u2026"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)

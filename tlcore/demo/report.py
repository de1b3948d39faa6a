"""The demo's HTML report: one self-contained file, inline CSS and SVG only.

No scripts, fonts or stylesheets are fetched: the report opens offline, in any browser, and stays
readable when printed. Every plotted cell or bar carries its number in a ``data-value`` attribute
and a ``<title>`` tooltip.
"""

from __future__ import annotations

from pathlib import Path

from tlcore.demo.results import DemoResult, HeadPattern
from tlcore.demo.svg import esc, grouped_bars, heatmap, horizontal_bars, tok_label

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
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
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
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return (
        f"<h1>tlcore demo: {esc(info.name)}</h1>\n"
        "<p class='note'>A tour of interpretability on a real model through tlcore's "
        "TransformerLens-style API: predictions, a logit difference, where it comes from (direct "
        "logit attribution), where it travels (activation patching) and induction heads.</p>\n"
        f"<table>{table}</table>"
    )


def _top_tokens_section(result: DemoResult) -> str:
    rows = []
    for top in result.top_tokens:
        cells = "".join(
            f"<td><span class='tok'>{esc(tok)}</span> <small>{p:.2f}</small></td>"
            for tok, p in zip(top.tokens, top.probs)
        )
        rows.append(f"<tr><td>{esc(top.prompt)}</td>{cells}</tr>")
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
    tokens = " ".join(f"<span class='tok'>{esc(t)}</span>" for t in ioi.str_tokens)
    return (
        "<h2>Indirect object identification</h2>\n"
        f"<p>{esc(ioi.prompt)} &hellip;</p>\n"
        f"<p class='note'>Tokens: {tokens}</p>\n"
        f"<div class='big' id='ioi-logit-diff' data-value='{ioi.logit_diff:.6f}'>"
        f"logit(<span class='tok'>{esc(ioi.correct)}</span>) &minus; "
        f"logit(<span class='tok'>{esc(ioi.incorrect)}</span>) = {ioi.logit_diff:+.2f}</div>\n"
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
    layer_chart = grouped_bars(groups, series=["attention", "MLP"], colors=["#0b5cad", "#e07b00"])
    top = attribution.top_heads(12)
    head_bars = horizontal_bars([(f"L{layer}H{head}", value) for layer, head, value in top])
    by_head = attribution.by_head
    head_map = heatmap(
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
        f"logit(<span class='tok'>{esc(ioi.correct)}</span>) &minus; "
        f"logit(<span class='tok'>{esc(ioi.incorrect)}</span>) at the final position: "
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
        f"<span class='tok'>{esc(ioi.correct)}</span>, blue: towards "
        f"<span class='tok'>{esc(ioi.incorrect)}</span>).</figcaption></figure>"
        "</div>"
    )


def _patching_section(result: DemoResult) -> str:
    patching = result.patching
    scores = patching.scores
    limit = max(1.0, float(scores.abs().max()))
    chart = heatmap(
        [[float(v) for v in row] for row in scores],
        [f"L{layer}" for layer in range(scores.shape[0])],
        [tok_label(t) for t in patching.str_tokens],
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
        f"position {i}: <span class='tok'>{esc(patching.str_tokens[i])}</span> &rarr; "
        f"<span class='tok'>{esc(patching.corrupted_str_tokens[i])}</span>"
        for i in differs
    )
    return (
        "<h2>Activation patching</h2>\n"
        f"<p class='note'>Clean: <q>{esc(patching.clean_prompt)}</q> (logit difference "
        f"{patching.clean_logit_diff:+.2f}). Corrupted: <q>{esc(patching.corrupted_prompt)}</q> "
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
            f"<figcaption>{esc(pattern.why)}. Rows: query (attending) token; columns: key "
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
    chart = heatmap(
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
        f"<tr><td>{esc(stage)}</td><td class='num'>{seconds:.2f} s</td></tr>"
        for stage, seconds in result.timings.items()
    )
    total = sum(result.timings.values())
    return (
        "<h2>Timings</h2>\n"
        f"<table>{rows}<tr><th>total</th><th class='num'>{total:.2f} s</th></tr></table>"
    )


def _pattern_map(pattern: HeadPattern) -> str:
    n = len(pattern.str_tokens)
    size = 22 if n <= 16 else max(9, 440 // n)
    labels = [tok_label(t) for t in pattern.str_tokens]
    return heatmap(
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

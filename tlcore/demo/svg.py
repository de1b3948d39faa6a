"""SVG building blocks of the demo report: heatmaps, bars, legends, escaping.

Every plotted cell or bar carries its number in a ``data-value`` attribute and a ``<title>``
tooltip; nothing is fetched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

_BLUE = (33, 102, 172)
_RED = (178, 24, 43)
_WHITE = (255, 255, 255)


def heatmap(
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
        f"viewBox='0 0 {total_w} {total_h}' role='img' aria-label='{esc(label)}' "
        f"data-kind='heatmap' data-rows='{n_rows}' data-cols='{n_cols}'>"
    ]
    for j, text in enumerate(col_labels):
        x = left + j * width + width / 2
        if col_label_angle:
            parts.append(
                f"<text x='{x:.1f}' y='{top - 4}' font-size='{font}' text-anchor='start' "
                f"transform='rotate({col_label_angle} {x:.1f} {top - 4})'>{esc(text)}</text>"
            )
        else:
            parts.append(
                f"<text x='{x:.1f}' y='{top - 4}' font-size='{font}' text-anchor='middle'>"
                f"{esc(text)}</text>"
            )
    for i, row in enumerate(values):
        y = top + i * height
        parts.append(
            f"<text x='{left - 4}' y='{y + height / 2 + font * 0.35:.1f}' font-size='{font}' "
            f"text-anchor='end'>{esc(row_labels[i])}</text>"
        )
        for j, value in enumerate(row):
            fill = color(value, limit, diverging)
            tip = f"{row_labels[i]} / {col_labels[j]}: {value:.3f}"
            parts.append(
                f"<rect x='{left + j * width}' y='{y}' width='{width}' height='{height}' "
                f"fill='{fill}' data-value='{value:.4f}'><title>{esc(tip)}</title></rect>"
            )
    parts.append(
        f"<rect x='{left}' y='{top}' width='{n_cols * width}' height='{n_rows * height}' "
        "fill='none' stroke='#d0d7de'/>"
    )
    parts.append(legend(left, top + n_rows * height + 10, limit, diverging, font))
    parts.append("</svg>")
    return "".join(parts)


def legend(x: int, y: int, limit: float, diverging: bool, font: int) -> str:
    """A colour bar from ``-limit`` (or 0) to ``limit`` at ``(x, y)``."""
    low = -limit if diverging else 0.0
    steps = 24
    width = 150
    parts = []
    for k in range(steps):
        value = low + (limit - low) * (k + 0.5) / steps
        parts.append(
            f"<rect x='{x + k * width / steps:.1f}' y='{y}' width='{width / steps + 0.5:.1f}' "
            f"height='8' fill='{color(value, limit, diverging)}'/>"
        )
    parts.append(f"<text x='{x}' y='{y + 20}' font-size='{font}'>{low:+.2g}</text>")
    parts.append(
        f"<text x='{x + width}' y='{y + 20}' font-size='{font}' text-anchor='end'>"
        f"{limit:+.2g}</text>"
    )
    return "".join(parts)


def grouped_bars(
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
    for tick in ticks(lo, hi):
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
                f"<title>{esc(name)} {esc(series[s])}: {value:+.3f}</title></rect>"
            )
        if g % 2 == 0 or len(groups) <= 16:
            parts.append(
                f"<text x='{x0 + bar * len(series) / 2:.1f}' y='{top + plot_h + 14}' "
                f"font-size='10' text-anchor='middle'>{esc(name)}</text>"
            )
    parts.append(
        f"<line class='axis' x1='{left}' x2='{width - 6}' y1='{zero:.1f}' y2='{zero:.1f}'/>"
    )
    for s, name in enumerate(series):
        x = left + s * 110
        parts.append(
            f"<rect x='{x}' y='6' width='10' height='10' fill='{colors[s]}'/>"
            f"<text x='{x + 14}' y='15' font-size='11'>{esc(name)}</text>"
        )
    parts.append(
        f"<text x='{left + len(groups) * group_w / 2:.1f}' y='{height - 4}' font-size='11' "
        "text-anchor='middle'>layer</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(items: Sequence[tuple[str, float]]) -> str:
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
            f"{esc(name)}</text>"
            f"<rect x='{x:.1f}' y='{y + 2}' width='{abs(x_of(value) - zero):.1f}' "
            f"height='{row_h - 5}' fill='{fill}' data-value='{value:.4f}'>"
            f"<title>{esc(name)}: {value:+.3f}</title></rect>"
            f"<text x='{max(x_of(value), zero) + 4:.1f}' y='{y + 12}' font-size='10'>"
            f"{value:+.2f}</text>"
        )
    parts.append(
        f"<line class='axis' x1='{zero:.1f}' x2='{zero:.1f}' y1='2' y2='{len(items) * row_h + 6}'/>"
    )
    parts.append("</svg>")
    return "".join(parts)


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
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


def color(value: float, limit: float, diverging: bool) -> str:
    """The fill of ``value``: blue-white-red when ``diverging`` (sign), else white to blue."""
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


def tok_label(token: str) -> str:
    """A token as a short visible label: surrounding spaces dropped, blanks and newlines shown."""
    shown = token.replace("\n", "\u21b5").strip()
    if not shown:
        shown = "\u2423"
    return shown if len(shown) <= 12 else shown[:11] + "\u2026"


def esc(text: object) -> str:
    """HTML-escape ``text`` (quotes too)."""
    return html.escape(str(text), quote=True)

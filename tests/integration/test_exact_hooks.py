"""Reading an activation changes no value, bit for bit (issue 12, item 6).

Attention runs the fused kernel (SDPA) and LayerNorm ``F.layer_norm`` / RMSNorm ``rsqrt`` when no
hook looks; a hook or cache on ``hook_attn_scores``/``hook_pattern``/``hook_scale`` makes the layer
also form those activations, and the layer keeps its fast result unless a hook changed a value.
So, on every spec here (learned positions + LayerNorm, GQA + RMSNorm, soft-capped attention that is
always explicit, ALiBi), all compared with ``torch.equal``:

- a no-op hook on every point, or a cache of any selection, gives the plain forward's logits;
- a filtered cache holds exactly the full cache's values;
- an edit at layer L leaves every activation before it as in the clean run;
- patching the clean run's own activations into it (clean into clean) gives the clean logits;
- an edit is honoured (the layer recomputes from the edited value).
"""

from __future__ import annotations

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens
from tlcore.patching import get_act_patch_attn_head_pattern_all_pos

SPECS = ["gpt2", "llama", "gemma2", "bloom"]  # LN+learned, GQA+RMS, soft-cap (eager), ALiBi


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    """``models(spec)`` → (model, tokens, mask, logits, full cache), loaded once per module."""
    made: dict[str, tuple] = {}

    def get(spec: str):
        if spec not in made:
            folder, _ = tiny_checkpoint(spec)
            model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
            tokens = parity_tokens(model.cfg.d_vocab)
            mask = torch.ones_like(tokens)
            mask[0, :3] = 0  # a left-padded row: the masked (non-causal-fast-path) kernels
            with torch.no_grad():
                logits = model(tokens, attention_mask=mask)
                _, cache = model.run_with_cache(tokens, attention_mask=mask)
            made[spec] = (model, tokens, mask, logits, cache)
        made[spec][0].reset_hooks()
        return made[spec]

    return get


def _layer(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else (-1 if name.startswith("hook_") else 10**6)


def _noop(x, hook):
    return None


READS = {
    "no-op hook everywhere": [(lambda name: True, _noop)],
    "hook returning its input": [(lambda name: True, lambda x, hook: x)],
    "hook returning a copy": [(lambda name: True, lambda x, hook: x.clone())],
    "hook on patterns": [(lambda name: name.endswith("hook_pattern"), _noop)],
    "hook on scores": [(lambda name: name.endswith("hook_attn_scores"), _noop)],
    "hook on norm scales": [(lambda name: name.endswith("hook_scale"), _noop)],
}


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("read", list(READS))
def test_a_hook_that_changes_nothing_changes_no_value(models, spec, read) -> None:
    model, tokens, mask, logits, cache = models(spec)
    with torch.no_grad():
        hooked = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=READS[read])
    assert torch.equal(hooked, logits)


FILTERS = {
    "patterns": lambda name: name.endswith("hook_pattern"),
    "scores": lambda name: name.endswith("hook_attn_scores"),
    "norms": lambda name: ".ln" in name or name.startswith("ln_final"),
    "residual stream": lambda name: "hook_resid" in name,
    "attention": lambda name: ".attn." in name,
}


@pytest.mark.parametrize("spec", SPECS)
def test_a_filtered_cache_equals_the_full_cache_and_the_plain_forward(models, spec) -> None:
    model, tokens, mask, logits, full = models(spec)
    with torch.no_grad():
        cached_logits, _ = model.run_with_cache(tokens, attention_mask=mask)
    assert torch.equal(cached_logits, logits)
    for label, names_filter in FILTERS.items():
        with torch.no_grad():
            out, cache = model.run_with_cache(
                tokens, attention_mask=mask, names_filter=names_filter
            )
        assert torch.equal(out, logits), label
        assert len(cache) > 0, label
        for name in cache.keys():
            assert torch.equal(cache[name], full[name]), (label, name)


def _scale_by_half(x, hook):
    return x * 0.5


def _scores_in_place(x, hook):
    x[..., 0] = x[..., 0] + 1.0  # in place: every query attends more to the first key


EDITS = {
    "pattern (returned)": ("attn.hook_pattern", _scale_by_half),
    "scores (in place)": ("attn.hook_attn_scores", _scores_in_place),
    "ln1 scale (returned)": ("ln1.hook_scale", lambda x, hook: x * 2.0),
    "resid_pre (returned)": ("hook_resid_pre", _scale_by_half),
}


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_at_layer_l_leaves_everything_before_it_exact(models, spec, edit) -> None:
    model, tokens, mask, logits, clean = models(spec)
    point, fn = EDITS[edit]
    layer = model.cfg.n_layers - 1
    name = f"blocks.{layer}.{point}"
    with model.hooks(fwd_hooks=[(name, fn)]), torch.no_grad():
        edited_logits, edited = model.run_with_cache(tokens, attention_mask=mask)
    assert not torch.equal(edited_logits, logits)  # the edit was honoured
    before = [n for n in clean.keys() if _layer(n) < layer]
    assert before
    for n in before:
        assert torch.equal(edited[n], clean[n]), n
    # Inside layer L, what precedes the edited point is untouched too.
    precede = {
        "attn.hook_pattern": ("hook_resid_pre", "ln1.hook_scale", "attn.hook_q", "attn.hook_v"),
        "attn.hook_attn_scores": ("hook_resid_pre", "ln1.hook_scale", "attn.hook_k"),
        "ln1.hook_scale": ("hook_resid_pre",),
        "hook_resid_pre": (),
    }[point]
    for inner in precede:
        n = f"blocks.{layer}.{inner}"
        assert torch.equal(edited[n], clean[n]), n


@pytest.mark.parametrize("spec", SPECS)
def test_edits_are_computed_from_the_edited_values(models, spec) -> None:
    model, tokens, mask, logits, clean = models(spec)
    H, K = model.cfg.n_heads, model.cfg.n_key_value_heads
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", _scale_by_half)]):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, attention_mask=mask)
    v = cache["blocks.0.attn.hook_v"].repeat_interleave(H // K, dim=2)
    expected = torch.einsum("bhqk,bkhd->bqhd", clean["blocks.0.attn.hook_pattern"] * 0.5, v)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], expected, atol=1e-5, rtol=1e-5)
    # A doubled scale halves the normalised part (RMSNorm: x / scale; LayerNorm: (x - mean) /
    # scale, then its weight and bias, TransformerLens 2.x's hook_normalized).
    with model.hooks(fwd_hooks=[("blocks.0.ln1.hook_scale", lambda x, hook: x * 2.0)]):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, attention_mask=mask)
    resid, scale = clean["blocks.0.hook_resid_pre"], clean["blocks.0.ln1.hook_scale"]
    ln1 = model.blocks[0].ln1
    if ln1.centres:
        centred = resid - resid.mean(-1, keepdim=True)
        expected = centred / (2.0 * scale) * ln1.w + ln1.b
    else:
        expected = resid / (2.0 * scale)
    torch.testing.assert_close(
        cache["blocks.0.ln1.hook_normalized"], expected, atol=1e-5, rtol=1e-5
    )


PATCHED = (
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "mlp.hook_post",
)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("in_place", [False, True])
def test_patching_clean_into_clean_is_exact(models, spec, in_place) -> None:
    model, tokens, mask, logits, clean = models(spec)

    def patch(x, hook):
        if in_place:
            x[...] = clean[hook.name]
            return None
        return clean[hook.name].clone()

    hooks = [
        (f"blocks.{layer}.{point}", patch)
        for layer in range(model.cfg.n_layers)
        for point in PATCHED
        if f"blocks.{layer}.{point}" in clean
    ]
    with torch.no_grad():
        patched = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    assert torch.equal(patched, logits)


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_activation_patching_the_clean_pattern_into_itself_changes_nothing(models, spec) -> None:
    model, tokens, _, _, _ = models(spec)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    result = get_act_patch_attn_head_pattern_all_pos(
        model, tokens, cache, lambda patched: (patched - logits).abs().max()
    )
    assert result.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert torch.equal(result, torch.zeros_like(result))


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_gradients_reach_cached_patterns_and_the_loss_is_unchanged(models, spec) -> None:
    model, tokens, _, _, _ = models(spec)
    H, K = model.cfg.n_heads, model.cfg.n_key_value_heads
    plain = model(tokens, return_type="loss")
    names = ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"]
    loss, cache = model.run_with_cache(
        tokens, return_type="loss", incl_bwd=True, names_filter=names
    )
    assert torch.equal(loss, plain)
    # dL/dpattern[b, h, q, k] = sum_d dL/dz[b, q, h, d] v[b, k, h, d]
    v = cache["blocks.0.attn.hook_v"].repeat_interleave(H // K, dim=2)
    expected = torch.einsum("bqhd,bkhd->bhqk", cache["blocks.0.attn.hook_z_grad"], v)
    grad = cache["blocks.0.attn.hook_pattern_grad"]
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-4)
    model.zero_grad(set_to_none=True)

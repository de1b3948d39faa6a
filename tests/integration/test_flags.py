"""TransformerLens's hook flags: ``set_use_attn_result``, ``set_use_split_qkv_input``,
``set_use_hook_mlp_in`` and ``set_use_attn_in``.

Each flag must leave the logits unchanged, fire its hooks at TransformerLens's shapes (GQA key and
value inputs have ``n_key_value_heads`` heads), feed the forward pass from those hooks (an edit
there changes the output), and, while off, refuse hooks on its points.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tlcore.errors import HookNameError
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens

ATOL = 1e-5
LAYOUTS = {
    "gpt2": ("gpt2", None),  # pre-norm LayerNorm, learned positions
    "gpt_neox": ("gpt_neox", None),  # parallel, two norms
    "llama": ("llama", None),  # GQA, RMSNorm
    "gemma2": ("gemma2", None),  # sandwich norms, GQA, soft-caps
    "olmo2": ("olmo2", None),  # post-only norms: attention reads the raw residual stream
}
SETTERS = {
    "use_attn_result": "set_use_attn_result",
    "use_split_qkv_input": "set_use_split_qkv_input",
    "use_hook_mlp_in": "set_use_hook_mlp_in",
    "use_attn_in": "set_use_attn_in",
}
GATED = {
    "attn.hook_result": "set_use_attn_result",
    "hook_q_input": "set_use_split_qkv_input",
    "hook_k_input": "set_use_split_qkv_input",
    "hook_v_input": "set_use_split_qkv_input",
    "hook_mlp_in": "set_use_hook_mlp_in",
    "hook_attn_in": "set_use_attn_in",
}


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    """``models(key)`` → (model, tokens, logits without flags), loaded once per module."""
    made: dict[str, tuple] = {}

    def get(key: str):
        if key not in made:
            name, variant = LAYOUTS[key]
            folder, _ = tiny_checkpoint(name, variant)
            model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
            tokens = parity_tokens(model.cfg.d_vocab)
            with torch.no_grad():
                made[key] = (model, tokens, model(tokens))
        model = made[key][0]
        for setter in SETTERS.values():  # every test starts with the flags off
            getattr(model, setter)(False)
        model.cfg.ungroup_grouped_query_attention = False
        model.reset_hooks()
        return made[key]

    return get


def close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL, rtol: float = 1e-6
) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    bound = atol + rtol * expected.abs().max().item()  # gemma2's activations reach ~40
    assert diff <= bound, f"max abs diff {diff:.2e} > {bound:.1e}"


def mlp_reads(model: HookedTransformer) -> str:
    return "resid_pre" if model.cfg.trait("block").kind == "parallel" else "resid_mid"


@pytest.mark.parametrize("key", list(LAYOUTS))
@pytest.mark.parametrize("flag", list(SETTERS))
def test_flag_leaves_logits_unchanged_and_fires_its_hooks(models, key: str, flag: str) -> None:
    model, tokens, logits = models(key)
    cfg = model.cfg
    B, P = tokens.shape
    H, K, d_model = cfg.n_heads, cfg.n_key_value_heads, cfg.d_model
    getattr(model, SETTERS[flag])(True)
    with torch.no_grad():
        # gemma2's residual stream reaches ~40 and its attention output goes through a post-norm,
        # so fp32 summation order shows at ~2e-5; float64 (below) shows it is only rounding.
        close(model(tokens), logits, atol=5e-5 if key == "gemma2" else ATOL)
        _, cache = model.run_with_cache(tokens)
    for layer in range(cfg.n_layers):
        resid = cache["resid_pre", layer]
        if flag == "use_attn_result":
            result = cache[f"blocks.{layer}.attn.hook_result"]
            assert result.shape == (B, P, H, d_model)
            z, W_O = cache["z", layer], model.blocks[layer].attn.W_O
            close(result, torch.einsum("bphd,hdm->bphm", z, W_O))
            if cfg.trait("block").kind in ("pre_norm", "parallel"):
                close(result.sum(-2) + model.blocks[layer].attn.b_O, cache["attn_out", layer])
        elif flag == "use_split_qkv_input":
            shapes = {"q": (B, P, H, d_model), "k": (B, P, K, d_model), "v": (B, P, K, d_model)}
            for name, shape in shapes.items():
                value = cache[f"blocks.{layer}.hook_{name}_input"]
                assert value.shape == shape
                close(value, resid[:, :, None].expand(shape), atol=0)
        elif flag == "use_hook_mlp_in":
            mlp_in = cache[f"blocks.{layer}.hook_mlp_in"]
            assert mlp_in.shape == (B, P, d_model)
            close(mlp_in, cache[mlp_reads(model), layer], atol=0)
        else:
            attn_in = cache[f"blocks.{layer}.hook_attn_in"]
            assert attn_in.shape == (B, P, H, d_model)
            close(attn_in, resid[:, :, None].expand(B, P, H, d_model), atol=0)


def test_flags_are_exact_in_float64(tiny_checkpoint) -> None:
    folder, _ = tiny_checkpoint("gemma2")
    model = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", dtype="float64"
    )
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        logits = model(tokens)
        for setter in SETTERS.values():
            getattr(model, setter)(True)
            close(model(tokens), logits, atol=1e-10, rtol=0.0)
            getattr(model, setter)(False)


def test_flags_all_on_together(models) -> None:
    model, tokens, logits = models("llama")
    for setter in ("set_use_attn_result", "set_use_split_qkv_input", "set_use_hook_mlp_in"):
        getattr(model, setter)(True)
    with torch.no_grad():
        close(model(tokens), logits)


def test_gqa_ungrouped_keys_and_values_have_one_head_per_query_head(models) -> None:
    model, tokens, logits = models("llama")
    assert model.cfg.n_key_value_heads < model.cfg.n_heads
    model.set_ungroup_grouped_query_attention(True)
    with torch.no_grad():
        close(model(tokens), logits)
        _, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_k"].shape[-2] == model.cfg.n_heads
    assert cache["blocks.0.attn.hook_v"].shape[-2] == model.cfg.n_heads


@pytest.mark.parametrize("key", ["llama", "gemma2", "olmo2"])  # olmo2: full-width k-norm
@pytest.mark.parametrize("setter", ["set_use_split_qkv_input", "set_use_attn_in"])
def test_gqa_ungrouped_split_inputs_have_one_copy_per_query_head(models, key, setter) -> None:
    # TransformerLens 2.x: with ungroup_grouped_query_attention the block makes n_heads key/value
    # input copies (transformer_block.py) and GroupedQueryAttention projects them with the
    # expanded W_K/W_V (grouped_query_attention.py, calculate_qkv_matrices).
    model, tokens, logits = models(key)
    cfg = model.cfg
    H, K = cfg.n_heads, cfg.n_key_value_heads
    assert K < H
    getattr(model, setter)(True)
    model.set_ungroup_grouped_query_attention(True)
    with torch.no_grad():
        flagged, cache = model.run_with_cache(tokens)
    close(flagged, logits, atol=5e-5 if key == "gemma2" else ATOL)
    point = "hook_k_input" if setter == "set_use_split_qkv_input" else "hook_attn_in"
    assert cache[f"blocks.0.{point}"].shape[-2] == H
    assert cache["blocks.0.attn.hook_k"].shape[-2] == H
    if key == "olmo2":
        return  # its full-width q/k-norms mix heads, so an edit to one copy moves others too

    # Each copy feeds its own query head only: an edit to head 0's copy moves head 0 alone.
    def edit(x, hook):
        x[:, :, 0] += torch.linspace(-2.0, 2.0, x.shape[-1])

    pattern = cache["blocks.0.attn.hook_pattern"]
    with model.hooks(fwd_hooks=[(f"blocks.0.{point}", edit)]), torch.no_grad():
        _, edited = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    moved = (edited["blocks.0.attn.hook_pattern"] - pattern).abs().amax(dim=(0, 2, 3))
    assert moved[0] > 1e-3
    assert moved[1:].max() <= 1e-6


@pytest.mark.parametrize("key", list(LAYOUTS))
def test_hooks_on_flag_gated_points_are_refused_while_the_flag_is_off(models, key) -> None:
    model, tokens, _ = models(key)

    def hook(x, hook):
        return x

    for point, setter in GATED.items():
        name = f"blocks.0.{point}"
        with pytest.raises(HookNameError, match=setter):
            model.add_hook(name, hook)
        with pytest.raises(HookNameError, match=setter):
            model.add_perma_hook(name, hook)
        assert not model.hook_dict[name].has_hooks  # nothing was registered
    # A predicate selecting a gated point is refused too (TransformerLens checks every match).
    with pytest.raises(HookNameError):
        model.add_hook(lambda name: name.endswith("hook_mlp_in"), hook)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    assert not any(name.endswith(tuple(GATED)) for name in cache.keys())
    # (run_with_hooks/hooks() refuse named gated points too: test_tl_semantics.py.)
    # With the flag on, the same hook is accepted.
    model.set_use_attn_result(True)
    model.add_hook("blocks.0.attn.hook_result", hook)
    assert model.hook_dict["blocks.0.attn.hook_result"].has_hooks
    model.reset_hooks()


@pytest.mark.parametrize("key", ["gpt2", "llama", "gemma2"])
def test_edits_at_flagged_hooks_reach_the_output(models, key: str) -> None:
    # In float64: summing per-head results and one z @ W_O matmul differ only by rounding, which
    # in fp32 reaches 2e-5 on gemma2's soft-capped logits; in float64 it is far below the
    # tolerance, so a wrong edit cannot hide inside it.
    model, tokens, _ = models(key)
    model = copy.deepcopy(model).to(torch.float64)
    with torch.no_grad():
        logits = model(tokens)
    layer, head = 0, 1

    def zero_head(x, hook):
        x = x.clone()
        x[:, :, head] = 0.0
        return x

    # Ablating a head's result is ablating its z.
    with torch.no_grad():
        by_z = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
    model.set_use_attn_result(True)
    with torch.no_grad():
        by_result = model.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_result", zero_head)]
        )
    assert not torch.allclose(by_z, logits, atol=1e-3)
    close(by_result, by_z, atol=1e-6, rtol=0.0)
    model.set_use_attn_result(False)

    # A query-input edit of one head moves that head's pattern only.
    model.set_use_split_qkv_input(True)
    pattern = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=pattern)
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_q_input", zero_head)]):
            edited_logits, edited = model.run_with_cache(tokens, names_filter=pattern)
    before, after = clean["pattern", layer], edited["pattern", layer]
    others = [h for h in range(model.cfg.n_heads) if h != head]
    close(after[:, others], before[:, others], atol=1e-6)
    assert not torch.allclose(after[:, head], before[:, head], atol=1e-3)
    assert not torch.allclose(edited_logits, logits, atol=1e-3)
    # Key and value inputs carry n_key_value_heads copies; editing one changes the output.
    for point in ("hook_k_input", "hook_v_input"):
        with torch.no_grad():
            out = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.{point}", zero_head)])
        assert not torch.allclose(out, logits, atol=1e-3), point
    model.set_use_split_qkv_input(False)

    # hook_mlp_in feeds the MLP.
    model.set_use_hook_mlp_in(True)
    with torch.no_grad():
        out = model.run_with_hooks(
            # Permuting features (norms are scale- and shift-invariant, so scaling would not do).
            tokens,
            fwd_hooks=[(f"blocks.{layer}.hook_mlp_in", lambda x, hook: x.flip(-1))],
        )
    assert not torch.allclose(out, logits, atol=1e-3)
    model.set_use_hook_mlp_in(False)

    # hook_attn_in feeds the queries (and, without GQA, keys and values).
    model.set_use_attn_in(True)
    with torch.no_grad():
        out = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_in", zero_head)])
    assert not torch.allclose(out, logits, atol=1e-3)

"""ActivationCache analysis methods on tiny seeded checkpoints of every block layout.

Decompositions must add up to what the model actually computed: the final residual stream, each
layer's attention and MLP outputs, the final norm's output and the logits. Layouts covered:
pre-norm with learned positions (gpt2), parallel with two norms (gpt_neox) and one (phi),
sequential NeoX, GQA + RMSNorm + gated MLP (llama), sandwich norms (gemma2), post-only norms
(olmo2), a residual multiplier (granite) and a mixture of experts (qwen2_moe).
"""

from __future__ import annotations

import pytest
import torch

from tlcore.errors import HookNameError, UnsupportedConfigError
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens

ATOL = 2e-5
CORRECT, INCORRECT = 5, 7

# (spec, test variant); gemma2 without soft-caps so logits are linear in the final residual.
LAYOUTS = {
    "gpt2": ("gpt2", None),
    "gpt_neox": ("gpt_neox", None),
    "gpt_neox_sequential": ("gpt_neox_sequential", None),
    "llama": ("llama", None),
    "gemma2": ("gemma2", "no_softcaps"),
    "olmo2": ("olmo2", None),
    "granite": ("granite", None),
    "phi": ("phi", None),
}
# Processed models whose final norm is folded into W_U (olmo2's post-only layout cannot fold).
FOLDED = ["gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "gemma2", "granite", "phi"]


@pytest.fixture(scope="module")
def run(tiny_checkpoint):
    """``run(key, processed=False)`` → (model, tokens, logits, cache), loaded once per module."""
    made: dict[tuple[str, bool], tuple] = {}

    def get(key: str, processed: bool = False):
        if (key, processed) not in made:
            name, variant = LAYOUTS.get(key, (key, None))
            folder, _ = tiny_checkpoint(name, variant)
            load = (
                HookedTransformer.from_pretrained
                if processed
                else HookedTransformer.from_pretrained_no_processing
            )
            model = load(str(folder), device="cpu")
            tokens = parity_tokens(model.cfg.d_vocab)
            with torch.no_grad():
                logits, cache = model.run_with_cache(tokens)
            made[key, processed] = (model, tokens, logits, cache)
        return made[key, processed]

    return get


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    """Max-abs-diff check, with fp32 headroom for large activations (gemma2's reach ~40)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    bound = atol + 1e-6 * (expected.abs().max().item() if expected.numel() else 0.0)
    assert diff <= bound, f"max abs diff {diff:.2e} > {bound:.1e}"


def is_parallel(model: HookedTransformer) -> bool:
    return model.cfg.trait("block").kind == "parallel"


# ----- decompose_resid / accumulated_resid -------------------------------------------------------


@pytest.mark.parametrize("key", list(LAYOUTS))
def test_decompose_resid_sums_to_the_residual_stream(run, key: str) -> None:
    model, _, _, cache = run(key)
    n_layers = model.cfg.n_layers
    stack, labels = cache.decompose_resid(return_labels=True)
    embeds = (
        ["embed", "pos_embed"] if model.cfg.positional_embedding_type == "standard" else ["embed"]
    )
    layers = [f"{i}_{kind}" for i in range(n_layers) for kind in ("attn_out", "mlp_out")]
    assert labels == embeds + layers
    close(stack.sum(0), cache["resid_post", -1])
    # Any layer's input, and an MLP's input (a parallel MLP reads resid_pre, not resid_mid).
    close(cache.decompose_resid(layer=1).sum(0), cache["resid_pre", 1])
    mid, mid_labels = cache.decompose_resid(layer=1, mlp_input=True, return_labels=True)
    if is_parallel(model):
        assert mid_labels[-1] == "0_mlp_out"
        close(mid.sum(0), cache["resid_pre", 1])
    else:
        assert mid_labels[-1] == "1_attn_out"
        close(mid.sum(0), cache["resid_mid", 1])
    # Modes split the layer outputs between them.
    attn = cache.decompose_resid(mode="attn", incl_embeds=False)
    mlp = cache.decompose_resid(mode="mlp", incl_embeds=False)
    embeds_only = cache.decompose_resid(layer=0)
    close(attn.sum(0) + mlp.sum(0) + embeds_only.sum(0), cache["resid_post", -1])


def test_decompose_resid_scales_branches_by_the_residual_multiplier(run) -> None:
    model, _, _, cache = run("granite")
    multiplier = model.cfg.trait("block").residual_multiplier
    assert multiplier != 1.0
    stack, labels = cache.decompose_resid(return_labels=True)
    close(stack[labels.index("0_attn_out")], cache["attn_out", 0] * multiplier, atol=0)


def test_decompose_resid_errors(run) -> None:
    _, _, _, cache = run("gpt2")
    with pytest.raises(ValueError, match="mode"):
        cache.decompose_resid(mode="heads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mlp_input"):
        cache.decompose_resid(mlp_input=True)
    with pytest.raises(ValueError, match="layer"):
        cache.decompose_resid(layer=7)


@pytest.mark.parametrize("key", ["gpt2", "gpt_neox", "llama", "gemma2", "olmo2"])
def test_accumulated_resid_is_the_stream_at_each_layer(run, key: str) -> None:
    model, _, _, cache = run(key)
    n_layers = model.cfg.n_layers
    stack, labels = cache.accumulated_resid(return_labels=True)
    assert labels == [f"{i}_pre" for i in range(n_layers)] + ["final_post"]
    close(stack[-1], cache["resid_post", -1], atol=0)
    for layer in range(n_layers):
        close(stack[layer], cache["resid_pre", layer], atol=0)
    assert cache.accumulated_resid(layer=0).shape[0] == 1
    if is_parallel(model):
        with pytest.raises(UnsupportedConfigError, match="resid_mid"):
            cache.accumulated_resid(incl_mid=True)
        # The parallel MLP reads resid_pre: mlp_input adds no entry.
        assert cache.accumulated_resid(1, mlp_input=True, return_labels=True)[1] == [
            "0_pre",
            "1_pre",
        ]
    else:
        _, mid_labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
        assert mid_labels == [
            *[x for i in range(n_layers) for x in (f"{i}_pre", f"{i}_mid")],
            "final_post",
        ]
        with_mid = cache.accumulated_resid(1, mlp_input=True)
        close(with_mid[-1], cache["resid_mid", 1], atol=0)


@pytest.mark.parametrize("key", ["gpt2", "llama", "gemma2"])
def test_accumulated_resid_apply_ln_is_the_logit_lens(run, key: str) -> None:
    model, _, logits, cache = run(key, processed=True)
    normed = cache.accumulated_resid(apply_ln=True)
    # Every entry normalised by ln_final with its own statistics; the last is the model's own.
    close(normed[-1], cache["ln_final.hook_normalized"])
    close(model.unembed(normed[-1]), logits, atol=1e-4)
    with torch.no_grad():
        close(normed[0], model.ln_final(cache["resid_pre", 0]), atol=1e-6)


# ----- apply_ln_to_stack -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["gpt2", "gpt_neox", "llama", "gemma2", "phi"])
def test_apply_ln_to_stack_reproduces_the_norms(run, key: str) -> None:
    model, _, _, cache = run(key, processed=True)  # folded norms: no weight after the scale
    close(
        cache.apply_ln_to_stack(cache.accumulated_resid()[-1:])[0],
        cache["ln_final.hook_normalized"],
    )
    # The pieces, normalised with the shared scale, add up to the normalised stream.
    close(
        cache.apply_ln_to_stack(cache.decompose_resid()).sum(0), cache["ln_final.hook_normalized"]
    )
    close(cache.decompose_resid(apply_ln=True).sum(0), cache["ln_final.hook_normalized"])
    # A block's attention norm, and its MLP norm (ln1 for a one-norm parallel block: phi).
    close(
        cache.decompose_resid(layer=1, apply_ln=True).sum(0), cache["blocks.1.ln1.hook_normalized"]
    )
    mlp_norm = "ln1" if key == "phi" else "ln2"
    close(
        cache.decompose_resid(layer=1, mlp_input=True, apply_ln=True).sum(0),
        cache[f"blocks.1.{mlp_norm}.hook_normalized"],
    )


def test_apply_ln_to_stack_ignores_weights_of_unfolded_norms(run) -> None:
    model, _, _, cache = run("gpt2")  # unprocessed LayerNorm with weight and bias
    final = cache["resid_post", -1]
    centred = final - final.mean(-1, keepdim=True)
    normed = cache.apply_ln_to_stack(final[None])[0]
    close(normed, centred / cache["ln_final.hook_scale"], atol=0)
    close(
        normed * model.ln_final.w + model.ln_final.b, cache["ln_final.hook_normalized"], atol=1e-5
    )


def test_apply_ln_to_stack_rms_does_not_centre(run) -> None:
    _, _, _, cache = run("llama")
    final = cache["resid_post", -1]
    close(cache.apply_ln_to_stack(final[None])[0], final / cache["ln_final.hook_scale"], atol=0)


def test_apply_ln_to_stack_is_identity_for_unnormalised_inputs(run) -> None:
    _, _, _, cache = run("olmo2")  # post-only: blocks read the raw residual stream
    stack = cache.decompose_resid(layer=1)
    assert torch.equal(cache.apply_ln_to_stack(stack, layer=1), stack)
    assert not torch.equal(cache.apply_ln_to_stack(stack), stack)  # ln_final still normalises


def test_apply_ln_to_stack_slices_and_needs_the_scale(run) -> None:
    model, tokens, _, cache = run("gpt2", processed=True)
    stack = cache.decompose_resid()
    full = cache.apply_ln_to_stack(stack)
    close(cache.apply_ln_to_stack(stack[:, :, -1], pos_slice=-1), full[:, :, -1], atol=0)
    close(cache.apply_ln_to_stack(stack, batch_slice=1), full[:, 1], atol=0)
    close(cache.apply_ln_to_stack(stack[:, :, 2:5], pos_slice=(2, 5)), full[:, :, 2:5], atol=0)
    _, partial = model.run_with_cache(tokens, names_filter=lambda name: "scale" not in name)
    with pytest.raises(HookNameError, match="ln_final.hook_scale"):
        partial.apply_ln_to_stack(stack)


# ----- heads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(LAYOUTS))
def test_stack_head_results_add_up_to_each_attention_output(run, key: str) -> None:
    model, _, _, cache = run(key)
    cfg = model.cfg
    heads, labels = cache.stack_head_results(return_labels=True)
    assert labels == [f"L{i}H{h}" for i in range(cfg.n_layers) for h in range(cfg.n_heads)]
    assert heads.shape == (cfg.n_layers * cfg.n_heads, *cache["resid_pre", 0].shape)
    # What each layer's heads and its attention bias give the residual stream is exactly what
    # that layer's attention added to it, whatever the layout (post-norms, multipliers).
    multiplier = cfg.trait("block").residual_multiplier
    for layer in range(cfg.n_layers):
        if is_parallel(model):
            break  # no MLP input that includes the layer's attention
        before = cache.get_full_resid_decomposition(layer, expand_neurons=False)
        after, after_labels = cache.get_full_resid_decomposition(
            layer, mlp_input=True, expand_neurons=False, return_labels=True
        )
        bias = after[after_labels.index("bias")] - before[-1]
        layer_heads = [after_labels.index(f"L{layer}H{h}") for h in range(cfg.n_heads)]
        close(after[layer_heads].sum(0) + bias, cache["attn_out", layer] * multiplier)
    if cfg.trait("block").kind in ("pre_norm", "parallel") and multiplier == 1.0:
        # TransformerLens's relation: heads + b_O == hook_attn_out.
        for layer in range(cfg.n_layers):
            layer_heads = heads[layer * cfg.n_heads : (layer + 1) * cfg.n_heads]
            close(layer_heads.sum(0) + model.blocks[layer].attn.b_O, cache["attn_out", layer])


@pytest.mark.parametrize("key", ["gemma2", "olmo2"])
def test_head_results_are_pre_post_norm_outputs(run, key: str) -> None:
    """``hook_result`` is ``z @ W_O``: with ``b_O`` it is what the post-norm normalises."""
    model, _, _, cache = run(key)
    cache.compute_head_results()
    for layer in range(model.cfg.n_layers):
        raw = cache["result", layer, "attn"].sum(-2) + model.blocks[layer].attn.b_O
        post = f"blocks.{layer}.ln1_post"
        close(raw, cache[f"{post}.hook_normalized"] * cache[f"{post}.hook_scale"], atol=1e-5)
        assert not torch.allclose(raw, cache["attn_out", layer], atol=1e-3)


@pytest.mark.parametrize("key", ["gpt2", "llama", "gemma2"])
def test_compute_head_results_match_the_use_attn_result_hook(tiny_checkpoint, run, key) -> None:
    model, tokens, _, cache = run(key)
    cache.compute_head_results()
    name, variant = LAYOUTS[key]
    folder, _ = tiny_checkpoint(name, variant)
    flagged = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    flagged.set_use_attn_result(True)
    with torch.no_grad():
        _, hooked = flagged.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        result = hooked["result", layer, "attn"]
        assert result.shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
        close(cache["result", layer, "attn"], result, atol=1e-4)  # gemma2 activations reach ~40
    # A cache holding the hook's results uses them as they are.
    close(hooked.stack_head_results(), cache.stack_head_results(), atol=1e-4)


def test_stack_head_results_layers_remainder_and_ln(run) -> None:
    model, _, _, cache = run("gpt2", processed=True)
    H = model.cfg.n_heads
    first, labels = cache.stack_head_results(layer=1, return_labels=True)
    assert labels == [f"L0H{h}" for h in range(H)]
    close(first, cache.stack_head_results()[:H], atol=0)
    with_rest, rest_labels = cache.stack_head_results(1, incl_remainder=True, return_labels=True)
    assert rest_labels[-1] == "remainder"
    close(with_rest.sum(0), cache["resid_pre", 1], atol=1e-5)
    empty = cache.stack_head_results(layer=0)
    assert empty.shape == (0, *cache["resid_pre", 0].shape)
    only = cache.stack_head_results(layer=0, incl_remainder=True)
    close(only[0], cache["resid_pre", 0], atol=0)
    close(
        cache.stack_head_results(apply_ln=True),
        cache.apply_ln_to_stack(cache.stack_head_results()),
        atol=0,
    )


# ----- neurons ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["gpt2", "llama", "gpt_neox", "gemma2", "granite"])
def test_stack_neuron_results_add_up_to_each_mlp_output(run, key: str) -> None:
    model, _, _, cache = run(key)
    cfg = model.cfg
    neurons, labels = cache.stack_neuron_results(cfg.n_layers, return_labels=True)
    assert labels == [f"L{i}N{n}" for i in range(cfg.n_layers) for n in range(cfg.d_mlp)]
    multiplier = cfg.trait("block").residual_multiplier
    for layer in range(cfg.n_layers):
        per_neuron = cache.get_neuron_results(layer)
        assert per_neuron.shape == (*cache["resid_pre", 0].shape[:-1], cfg.d_mlp, cfg.d_model)
        close(cache.get_neuron_results(layer, neuron_slice=3), per_neuron[..., 3, :], atol=0)
        close(cache.get_neuron_results(layer, 3, -1), per_neuron[:, -1, 3], atol=0)
        close(
            neurons[layer * cfg.d_mlp : (layer + 1) * cfg.d_mlp], per_neuron.movedim(-2, 0), atol=0
        )
        if cfg.trait("block").kind == "sandwich":
            # The neurons (through ln2_post's cached scale) plus the mapped biases: mlp_out.
            after = cache.get_full_resid_decomposition(layer + 1, expand_neurons=True)
            before = cache.get_full_resid_decomposition(layer, mlp_input=True, expand_neurons=True)
            close(after.sum(0) - before.sum(0), cache["mlp_out", layer])
        else:
            bias = model.blocks[layer].mlp.b_out * multiplier
            close(per_neuron.sum(-2) + bias, cache["mlp_out", layer] * multiplier)
    with_rest = cache.stack_neuron_results(1, incl_remainder=True)
    close(with_rest.sum(0), cache["resid_pre", 1])
    mid = cache.stack_neuron_results(1, incl_remainder=True, mlp_input=True)
    close(mid.sum(0), cache["resid_pre" if is_parallel(model) else "resid_mid", 1])


def test_neuron_slices_and_projections(run) -> None:
    model, _, _, cache = run("gpt2", processed=True)
    full = cache.stack_neuron_results(2)
    d_mlp = model.cfg.d_mlp
    one, labels = cache.stack_neuron_results(2, neuron_slice=3, return_labels=True)
    assert labels == ["L0N3", "L1N3"]
    close(one, full[[3, d_mlp + 3]], atol=0)
    some = cache.stack_neuron_results(2, neuron_slice=[1, 4], pos_slice=-1)
    close(some, full[[1, 4, d_mlp + 1, d_mlp + 4]][:, :, -1], atol=0)
    close(
        cache.get_neuron_results(1, neuron_slice=2), cache.get_neuron_results(1)[..., 2, :], atol=0
    )
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    matrix = torch.randn(model.cfg.d_model, 3, generator=torch.Generator().manual_seed(1))
    close(cache.stack_neuron_results(2, project_output_onto=direction), full @ direction, atol=1e-5)
    close(cache.stack_neuron_results(2, project_output_onto=matrix), full @ matrix, atol=1e-5)
    close(
        cache.get_neuron_results(0, project_output_onto=direction),
        cache.get_neuron_results(0) @ direction,
        atol=1e-5,
    )
    normed = cache.stack_neuron_results(2, apply_ln=True)
    close(normed, cache.apply_ln_to_stack(full), atol=1e-6)
    close(
        cache.stack_neuron_results(
            2, apply_ln=True, project_output_onto=matrix, incl_remainder=True
        ),
        cache.apply_ln_to_stack(cache.stack_neuron_results(2, incl_remainder=True)) @ matrix,
        atol=1e-5,
    )


def test_mixture_of_experts_has_no_neurons(run) -> None:
    model, _, _, cache = run("qwen2_moe")
    moe_layer = next(i for i, block in enumerate(model.blocks) if not hasattr(block.mlp, "W_out"))
    with pytest.raises(UnsupportedConfigError, match="mixture of experts"):
        cache.get_neuron_results(moe_layer)
    with pytest.raises(UnsupportedConfigError, match="expand_neurons=False"):
        cache.get_full_resid_decomposition()
    stack, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert "0_mlp_out" in labels and labels[-1] == "bias"
    close(stack.sum(0), cache["resid_post", -1])


# ----- the full decomposition and logit attribution ---------------------------------------------


@pytest.mark.parametrize("key", list(LAYOUTS))
def test_full_resid_decomposition_sums_to_the_residual_stream(run, key: str) -> None:
    model, _, _, cache = run(key)
    cfg = model.cfg
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    heads = [f"L{i}H{h}" for i in range(cfg.n_layers) for h in range(cfg.n_heads)]
    neurons = [f"L{i}N{n}" for i in range(cfg.n_layers) for n in range(cfg.d_mlp)]
    embeds = ["embed", "pos_embed"] if cfg.positional_embedding_type == "standard" else ["embed"]
    assert labels == heads + neurons + embeds + ["bias"]
    assert stack.shape[0] == len(labels)
    close(stack.sum(0), cache["resid_post", -1])
    close(cache.get_full_resid_decomposition(expand_neurons=False).sum(0), cache["resid_post", -1])
    close(cache.get_full_resid_decomposition(1).sum(0), cache["resid_pre", 1])
    mid = cache.get_full_resid_decomposition(1, mlp_input=True, expand_neurons=False)
    close(mid.sum(0), cache["resid_pre" if is_parallel(model) else "resid_mid", 1])
    only_embeds = cache.get_full_resid_decomposition(0, return_labels=True)
    assert only_embeds[1] == embeds + ["bias"]
    close(only_embeds[0].sum(0), cache["resid_pre", 0])


def test_full_resid_decomposition_bias_is_the_models_accumulated_bias(run) -> None:
    model, _, _, cache = run("gpt2")
    stack, labels = cache.get_full_resid_decomposition(1, mlp_input=True, return_labels=True)
    bias = stack[labels.index("bias")]
    expected = model.accumulated_bias(1, mlp_input=True)
    close(bias, expected.expand_as(bias), atol=0)
    with pytest.raises(ValueError, match="mlp_input"):
        model.accumulated_bias(model.cfg.n_layers, mlp_input=True)


@pytest.mark.parametrize("key", ["gpt2", "gemma2"])
def test_full_resid_decomposition_projection_and_ln(run, key: str) -> None:
    model, _, _, cache = run(key, processed=True)
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(model.cfg.d_model, generator=generator)
    matrix = torch.randn(model.cfg.d_model, 2, generator=generator)
    plain = cache.get_full_resid_decomposition(pos_slice=-1)
    normed = cache.get_full_resid_decomposition(apply_ln=True, pos_slice=-1)
    close(normed, cache.apply_ln_to_stack(plain, pos_slice=-1), atol=1e-6)
    close(normed.sum(0), cache["ln_final.hook_normalized"][:, -1])
    projected = cache.get_full_resid_decomposition(pos_slice=-1, project_output_onto=direction)
    close(projected, plain @ direction, atol=1e-5)
    both = cache.get_full_resid_decomposition(
        apply_ln=True, pos_slice=-1, project_output_onto=matrix
    )
    close(both, normed @ matrix, atol=1e-5)


@pytest.mark.parametrize("key", FOLDED)
def test_logit_attrs_of_the_full_decomposition_sum_to_the_logit_difference(run, key) -> None:
    model, tokens, logits, cache = run(key, processed=True)
    assert model.cfg.fold_ln
    # Logit scales after W_U (granite) multiply the attributions' sum; soft-caps are off.
    scale = model.unembed.trait.logit_scale
    diff = logits[..., CORRECT] - logits[..., INCORRECT]
    bias_diff = model.b_U[CORRECT] - model.b_U[INCORRECT]
    stack = cache.get_full_resid_decomposition()
    attrs = cache.logit_attrs(stack, CORRECT, incorrect_tokens=INCORRECT)
    assert attrs.shape == (stack.shape[0], *tokens.shape)
    close((attrs.sum(0) + bias_diff) * scale, diff, atol=1e-4)
    # Without incorrect tokens: the logit itself, less b_U.
    single = cache.logit_attrs(cache.decompose_resid(), CORRECT)
    close((single.sum(0) + model.b_U[CORRECT]) * scale, logits[..., CORRECT], atol=1e-4)
    # One position, tokens as tensors of several shapes.
    last = cache.decompose_resid(pos_slice=-1)
    batch = tokens.shape[0]
    per_item = cache.logit_attrs(
        last,
        torch.full((batch,), CORRECT),
        incorrect_tokens=torch.full((batch,), INCORRECT),
        pos_slice=-1,
    )
    close((per_item.sum(0) + bias_diff) * scale, diff[:, -1], atol=1e-4)
    grid = cache.logit_attrs(cache.decompose_resid(), tokens, incorrect_tokens=tokens.flip(-1))
    gathered = logits.gather(-1, tokens[..., None])[..., 0]
    gathered_wrong = logits.gather(-1, tokens.flip(-1)[..., None])[..., 0]
    b_U = model.b_U[tokens] - model.b_U[tokens.flip(-1)]
    close((grid.sum(0) + b_U) * scale, gathered - gathered_wrong, atol=1e-4)


def test_logit_attrs_per_batch_tokens_broadcast_over_positions(run) -> None:
    model, tokens, logits, cache = run("gpt2", processed=True)
    batch, pos = tokens.shape
    targets = torch.tensor([CORRECT, INCORRECT])
    attrs = cache.logit_attrs(cache.decompose_resid(), targets)
    assert attrs.shape[1:] == (batch, pos)
    expected = logits[torch.arange(batch)[:, None], torch.arange(pos), targets[:, None]]
    close(attrs.sum(0) + model.b_U[targets][:, None], expected, atol=1e-4)
    with pytest.raises(ValueError, match="same shape"):
        cache.logit_attrs(cache.decompose_resid(), targets, incorrect_tokens=INCORRECT)
    sliced = cache.logit_attrs(cache.decompose_resid(), CORRECT, batch_slice=[1])
    close(sliced, cache.logit_attrs(cache.decompose_resid(), CORRECT)[:, 1:], atol=0)


# ----- pos_slice, batch dimension, stack_activation --------------------------------------------


@pytest.mark.parametrize("pos_slice", [-1, 3, (2, 6), [0, 4, 7]])
def test_pos_slice_selects_positions_everywhere(run, pos_slice) -> None:
    from tlcore.utils.slicing import Slice

    _, _, _, cache = run("llama", processed=True)
    s = Slice(pos_slice)

    def sliced(stack: torch.Tensor) -> torch.Tensor:
        return s.apply(stack, dim=-2)

    close(cache.decompose_resid(pos_slice=pos_slice), sliced(cache.decompose_resid()), atol=0)
    close(cache.accumulated_resid(pos_slice=pos_slice), sliced(cache.accumulated_resid()), atol=0)
    close(cache.stack_head_results(pos_slice=pos_slice), sliced(cache.stack_head_results()), atol=0)
    close(
        cache.stack_neuron_results(2, pos_slice=pos_slice),
        sliced(cache.stack_neuron_results(2)),
        atol=0,
    )
    close(
        cache.get_full_resid_decomposition(pos_slice=pos_slice, apply_ln=True),
        sliced(cache.get_full_resid_decomposition(apply_ln=True)),
        atol=1e-6,
    )
    close(
        cache.decompose_resid(pos_slice=pos_slice, apply_ln=True),
        sliced(cache.decompose_resid(apply_ln=True)),
        atol=1e-6,
    )
    close(
        cache.accumulated_resid(layer=1, pos_slice=pos_slice, apply_ln=True),
        sliced(cache.accumulated_resid(layer=1, apply_ln=True)),
        atol=1e-6,
    )


def test_cache_run_with_a_pos_slice(run) -> None:
    model, tokens, logits, cache = run("gpt2", processed=True)
    with torch.no_grad():
        _, last = model.run_with_cache(tokens, pos_slice=-1)
    stack = last.get_full_resid_decomposition(apply_ln=True)
    close(stack.sum(0), cache["ln_final.hook_normalized"][:, -1:])
    attrs = last.logit_attrs(last.decompose_resid(), CORRECT, INCORRECT)
    bias_diff = model.b_U[CORRECT] - model.b_U[INCORRECT]
    close(attrs.sum(0) + bias_diff, logits[:, -1:, CORRECT] - logits[:, -1:, INCORRECT], atol=1e-4)


@pytest.mark.parametrize("key", ["gpt2", "gemma2"])
def test_analysis_without_a_batch_dimension(run, key: str) -> None:
    model, tokens, logits, _ = run(key, processed=True)
    with torch.no_grad():
        logits1, cache = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    assert not cache.has_batch_dim
    final = cache["resid_post", -1]
    assert final.ndim == 2
    close(cache.decompose_resid().sum(0), final)
    stack = cache.get_full_resid_decomposition()
    close(stack.sum(0), final)
    close(
        cache.apply_ln_to_stack(stack, has_batch_dim=False).sum(0),
        cache["ln_final.hook_normalized"],
    )
    attrs = cache.logit_attrs(stack, CORRECT, INCORRECT, has_batch_dim=False)
    scale = model.unembed.trait.logit_scale
    bias_diff = model.b_U[CORRECT] - model.b_U[INCORRECT]
    close(
        (attrs.sum(0) + bias_diff) * scale,
        logits1[0, :, CORRECT] - logits1[0, :, INCORRECT],
        atol=1e-4,
    )
    heads = cache.stack_head_results(pos_slice=-1)
    assert heads.shape == (model.cfg.n_layers * model.cfg.n_heads, model.cfg.d_model)


def test_stack_activation(run) -> None:
    model, tokens, _, cache = run("llama")
    patterns = cache.stack_activation("pattern")
    H, P = model.cfg.n_heads, tokens.shape[1]
    assert patterns.shape == (model.cfg.n_layers, tokens.shape[0], H, P, P)
    close(patterns[1], cache["blocks.1.attn.hook_pattern"], atol=0)
    assert cache.stack_activation("scale", layer=1, sublayer_type="ln2").shape[0] == 1
    # GQA keys keep n_key_value_heads heads.
    assert cache.stack_activation("k").shape[-2] == model.cfg.n_key_value_heads


def test_neuron_apply_ln_centres_for_layernorm(run) -> None:
    _, _, _, cache = run("gpt2")  # unprocessed: W_out is not centred, so centring matters
    full = cache.stack_neuron_results(2, incl_remainder=True)
    close(
        cache.stack_neuron_results(2, incl_remainder=True, apply_ln=True),
        cache.apply_ln_to_stack(full),
        atol=1e-5,
    )
    direction = torch.ones(full.shape[-1])
    close(
        cache.stack_neuron_results(2, apply_ln=True, project_output_onto=direction),
        cache.apply_ln_to_stack(cache.stack_neuron_results(2)) @ direction,
        atol=1e-5,
    )


# ----- hand-written layouts: LayerNorm sandwich, post-norm ---------------------------------------


def hand_written(block_trait) -> HookedTransformer:
    from tlcore.config import HookedTransformerConfig

    cfg = HookedTransformerConfig(
        d_model=16,
        n_layers=2,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        d_vocab=40,
        d_mlp=24,
        act_fn="gelu",
        normalization_type="LN",
        seed=3,
    )
    cfg.traits["block"] = block_trait
    model = HookedTransformer(cfg)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # norm weights and all biases away from their identity values
        for name, param in model.named_parameters():
            if name.endswith((".w", ".b")) or ".b_" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def test_layernorm_sandwich_decomposes_exactly() -> None:
    from tlcore.components.block import SandwichTrait

    model = hand_written(SandwichTrait())
    tokens = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert type(model.blocks[0].ln1_post).__name__ == "LayerNorm"
    final = cache["resid_post", -1]
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    close(stack.sum(0), final)
    close(cache.get_full_resid_decomposition(1, mlp_input=True).sum(0), cache["resid_mid", 1])
    # The heads of layer 0 (through ln1_post: centred, scaled, weighted) plus the bias row (b_O
    # through ln1_post, plus ln1_post's bias) are what the attention added.
    after, after_labels = cache.get_full_resid_decomposition(
        0, mlp_input=True, expand_neurons=False, return_labels=True
    )
    bias = after[after_labels.index("bias")]
    close(after[: model.cfg.n_heads].sum(0) + bias, cache["attn_out", 0])
    assert not torch.allclose(bias, model.blocks[0].attn.b_O.expand_as(bias), atol=1e-2)
    neurons = cache.stack_neuron_results(2)
    close(
        cache.stack_neuron_results(2, project_output_onto=torch.ones(16)),
        neurons.sum(-1),
        atol=1e-5,
    )


def test_post_norm_blocks_refuse_decompositions() -> None:
    from tlcore.components.block import PostNormTrait

    model = hand_written(PostNormTrait())
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    close(cache.accumulated_resid()[-1], cache["resid_post", -1], atol=0)
    for method in (
        cache.decompose_resid,
        cache.get_full_resid_decomposition,
        cache.stack_head_results,
    ):
        with pytest.raises(UnsupportedConfigError, match="post-norm"):
            method()


@pytest.mark.parametrize("key", ["gpt2", "llama"])
@pytest.mark.parametrize("setter", ["set_use_split_qkv_input", "set_use_attn_in"])
def test_apply_ln_with_per_head_attention_inputs(tiny_checkpoint, run, key, setter) -> None:
    """Per-head q/k/v inputs make ln1's cached scale ``[batch, pos, head, 1]``."""
    _, tokens, _, plain = run(key, processed=True)
    name, variant = LAYOUTS[key]
    folder, _ = tiny_checkpoint(name, variant)
    model = HookedTransformer.from_pretrained(str(folder), device="cpu")
    getattr(model, setter)(True)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    assert cache["blocks.1.ln1.hook_scale"].ndim == 4
    expected = plain.decompose_resid(layer=1, apply_ln=True)
    close(cache.decompose_resid(layer=1, apply_ln=True), expected)
    close(
        cache.accumulated_resid(layer=1, apply_ln=True, pos_slice=-1),
        plain.accumulated_resid(layer=1, apply_ln=True, pos_slice=-1),
    )


def test_shortformer_positions_are_not_a_residual_component() -> None:
    model = HookedTransformer(
        {
            "d_model": 16,
            "n_layers": 2,
            "n_ctx": 16,
            "d_head": 4,
            "n_heads": 4,
            "d_vocab": 40,
            "act_fn": "gelu",
            "positional_embedding_type": "shortformer",
        }
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4, 5]]))
    assert "hook_pos_embed" in cache  # cached, but it feeds queries and keys only
    stack, labels = cache.decompose_resid(return_labels=True)
    assert "pos_embed" not in labels
    close(stack.sum(0), cache["resid_post", -1])
    full, full_labels = cache.get_full_resid_decomposition(return_labels=True)
    assert full_labels[-2:] == ["embed", "bias"]
    close(full.sum(0), cache["resid_post", -1])

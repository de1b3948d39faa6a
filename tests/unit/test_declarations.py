"""Each component's declarations say what its forward does (so the cache, processing and parity
tool, which read only the declarations, are right about it).

- block layouts: recomputing the MLP branch and the residual stream from the declared wiring gives
  the cached activations exactly;
- norms: ``output_from_normalized`` is the forward's output, ``affine`` its weight and bias,
  ``strip_affine_``/``reset_affine_``/``pre_form`` the parameter-free and identity forms, and the
  ``hook_normalized`` placement is TransformerLens's;
- attention, MLP, MoE, unembed: the declared residual readers are *all* the maps reading the input
  (folding a per-channel weight into them equals scaling the input), the writers all the maps
  writing the output (centring them centres the output);
- the plan and the probes follow the declarations, for built-in and plugin-style layouts alike.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import pytest
import torch

from tlcore.components.attention import AttentionTrait
from tlcore.components.block import (
    BlockTrait,
    ParallelTrait,
    PostNormTrait,
    PostOnlyTrait,
    PreNormTrait,
    SandwichTrait,
    TransformerBlock,
)
from tlcore.components.mlp import GatedMLPTrait
from tlcore.components.moe import MoETrait
from tlcore.components.norms import LayerNorm, LayerNormTrait, RMSNorm, RMSNormTrait
from tlcore.components.rotary import RotaryTrait
from tlcore.components.wiring import BlockWiring, Branch, ChannelGate, Scale
from tlcore.parity.probes import layer_probes
from tlcore.processing_plan import processing_plan
from tlcore.processing_steps import _fold_into
from tlcore.testing.models import base_traits, tokens_for, trait_model

LAYOUTS = {
    "pre_norm": PreNormTrait(),
    "pre_norm_scaled": PreNormTrait(residual_multiplier=0.3),
    "parallel_1": ParallelTrait(norms=1),
    "parallel_2": ParallelTrait(norms=2),
    "post_norm": PostNormTrait(),
    "sandwich": SandwichTrait(residual_multiplier=2.0),
    "post_only": PostOnlyTrait(),
}


def _model(block: BlockTrait, **traits: Any) -> Any:
    return trait_model(base_traits(block=block, **traits), dtype=torch.float64)


@pytest.mark.parametrize("name", LAYOUTS)
def test_declared_wiring_recomputes_the_forward(name: str) -> None:
    model = _model(LAYOUTS[name])
    _, cache = model.run_with_cache(tokens_for(model))
    for layer, block in enumerate(model.blocks):
        wiring: BlockWiring = block.wiring
        assert wiring == LAYOUTS[name].wiring()
        assert {n for n in wiring.norm_names} == {
            n for n in ("ln1", "ln2", "ln1_post", "ln2_post") if hasattr(block, n)
        }
        hooks = {h: cache[f"blocks.{layer}.{h}"] for h in ("hook_resid_pre", "hook_resid_post")}
        if wiring.has_resid_mid:
            hooks["hook_resid_mid"] = cache[f"blocks.{layer}.hook_resid_mid"]
        mlp = wiring.branch("mlp")
        assert mlp is not None
        # The MLP branch from its declaration: reads -> norm -> module -> post-norm = out hook.
        x = hooks[mlp.reads]
        x = getattr(block, mlp.norm)(x) if mlp.norm else x
        out = block.mlp(x)
        out = getattr(block, mlp.post_norm)(out) if mlp.post_norm else out
        torch.testing.assert_close(out, cache[f"blocks.{layer}.{mlp.out_hook}"], atol=1e-12, rtol=0)
        # The residual stream from the declaration: additive, or renormalised by stream norms.
        stream = hooks["hook_resid_pre"]
        for branch in wiring.branches:
            if branch.reads == "hook_resid_mid":
                assert torch.allclose(stream, hooks["hook_resid_mid"], atol=1e-12)
                stream = hooks["hook_resid_mid"]
            added = stream + branch.into_resid(cache[f"blocks.{layer}.{branch.out_hook}"], block)
            norm = (
                wiring.stream_norms[wiring.branches.index(branch)] if not wiring.additive else None
            )
            stream = getattr(block, norm)(added) if norm else added
        torch.testing.assert_close(stream, hooks["hook_resid_post"], atol=1e-12, rtol=0)


def test_wiring_facts() -> None:
    sandwich = SandwichTrait().wiring()
    assert sandwich.input_norms == ("ln1", "ln2") and sandwich.additive
    assert sandwich.norm_names == ("ln1", "ln1_post", "ln2", "ln2_post")
    assert [b.preserves_mean for b in sandwich.branches] == [False, False]
    parallel = ParallelTrait(norms=1).wiring()
    assert parallel.input_norms == ("ln1",) and not parallel.has_resid_mid
    assert parallel.mlp_input_branches() == ()
    assert [b.name for b in PreNormTrait().wiring().mlp_input_branches()] == ["attn"]
    post = PostNormTrait().wiring()
    assert not post.additive and post.input_norms == () and post.norm_names == ("ln1", "ln2")
    gated = Branch("attn", to_resid=(Scale(2.0), ChannelGate("g")))
    block = torch.nn.Module()
    block.g = torch.nn.Parameter(torch.tensor([1.0, -1.0, 3.0]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(gated.into_resid(x, block), torch.tensor([[2.0, -4.0, 18.0]]))
    assert not gated.preserves_mean and Branch("mlp", to_resid=(Scale(0.5),)).preserves_mean


NORMS = {
    "layernorm": lambda: LayerNorm(8, 1e-5),
    "layernorm_no_bias": lambda: LayerNorm(8, 1e-5, bias=False),
    "rmsnorm": lambda: RMSNorm(8, 1e-6),
    "rmsnorm_offset": lambda: RMSNorm(8, 1e-6, offset=True),
    "rmsnorm_fp32_weight": lambda: RMSNorm(8, 1e-6, weight_in_fp32=True),
}


@pytest.mark.parametrize("name", NORMS)
def test_norm_declarations(name: str) -> None:
    norm = NORMS[name]()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in norm.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    x = torch.randn(2, 5, 8, generator=generator) * 3 + 1
    cache: dict[str, torch.Tensor] = {}
    norm.hook_scale.add_hook(lambda t, hook: cache.__setitem__("scale", t))
    norm.hook_normalized.add_hook(lambda t, hook: cache.__setitem__("normalized", t))
    out = norm(x)
    # The output from the hook, exactly as the forward computes it.
    assert torch.equal(norm.output_from_normalized(cache["normalized"]), out)
    # TransformerLens 2.x: LayerNorm's hook_normalized is its output, RMSNorm's precedes w.
    assert norm.hook_before_affine == isinstance(norm, RMSNorm)
    centred = x - x.mean(-1, keepdim=True) if norm.centres else x
    assert norm.centres == isinstance(norm, LayerNorm)
    weight, bias = norm.affine()
    expected = centred / cache["scale"] * weight + (0 if bias is None else bias)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    normalized = centred / cache["scale"]
    reset = copy.deepcopy(norm)
    reset.reset_affine_()
    torch.testing.assert_close(reset(x), normalized, atol=1e-6, rtol=1e-6)
    norm.strip_affine_()
    assert not list(norm.parameters())
    torch.testing.assert_close(norm(x), normalized, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "trait",
    [LayerNormTrait(), RMSNormTrait(offset=True, weight_in_fp32=True)],
    ids=["layernorm", "rmsnorm"],
)
def test_norm_trait_pre_form_builds_a_parameter_free_norm(trait: Any) -> None:
    from tlcore.builtin.traits import builtin_component

    make = builtin_component("norm", trait.kind)
    pre = make(trait.pre_form(), 8, torch.float32)
    assert not list(pre.parameters())
    x = torch.randn(3, 8)
    full = make(trait, 8, torch.float32)
    full.reset_affine_()
    torch.testing.assert_close(pre(x), full(x))


def _component_models() -> dict[str, Any]:
    return {
        "attention_gqa": _model(
            PreNormTrait(), attention=AttentionTrait(bias=True), positional=RotaryTrait(dim=8)
        ),
        "gated_mlp": _model(PreNormTrait(), mlp=GatedMLPTrait(act="silu", bias=True)),
        "moe_shared": _model(
            PreNormTrait(),
            mlp=MoETrait(
                n_experts=4,
                top_k=2,
                d_expert=16,
                act="silu",
                router_bias=True,
                shared_expert_size=24,
                shared_expert_gate=True,
            ),
        ),
    }


def test_declared_readers_are_every_map_reading_the_input() -> None:
    """Folding a per-channel weight into the declared readers == scaling the input by it."""
    for name, model in _component_models().items():
        for module, run in (
            (model.blocks[0].mlp, lambda m, x: m(x)),
            (model.unembed, lambda m, x: m(x)),
        ):
            x = torch.randn(2, 5, model.cfg.d_model, dtype=torch.float64)
            w = 1 + torch.rand(model.cfg.d_model, dtype=torch.float64)
            expected = run(module, x * w)
            folded = copy.deepcopy(module)
            with torch.no_grad():
                for reader in folded.residual_readers():
                    _fold_into(reader, w, None, center=False)
            torch.testing.assert_close(run(folded, x), expected, msg=name)


def test_declared_attention_readers_and_writers() -> None:
    model = trait_model(
        base_traits(positional=RotaryTrait(dim=8)), dtype=torch.float64, n_key_value_heads=2
    )
    attn = model.blocks[0].attn
    assert [r.weight for r in attn.residual_readers()] == ["W_Q", "_W_K", "_W_V"]
    assert [w.name for w in attn.residual_writers()] == ["W_O", "b_O"]
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda n: n.endswith("ln1.hook_normalized")
    )
    x = cache["blocks.0.ln1.hook_normalized"]
    w = 1 + torch.rand(model.cfg.d_model, dtype=torch.float64)
    ctx = model.input_to_embed(tokens)[2]
    expected = attn(x * w, x * w, x * w, ctx)
    with torch.no_grad():
        for reader in attn.residual_readers():
            _fold_into(reader, w, None, center=False)
    torch.testing.assert_close(attn(x, x, x, ctx), expected)
    # Centring the declared writers centres the output.
    with torch.no_grad():
        for writer in attn.residual_writers():
            param = getattr(writer.module, writer.name)
            param.sub_(param.mean(-1, keepdim=True))
    out = attn(x, x, x, ctx)
    torch.testing.assert_close(out.mean(-1), torch.zeros_like(out.mean(-1)))


class _GateTrait(BlockTrait):
    kind: Literal["test_gate"] = "test_gate"

    def wiring(self) -> BlockWiring:
        return BlockWiring(
            (
                Branch("attn", norm="ln1", to_resid=(ChannelGate("g"),)),
                Branch("mlp", "hook_resid_mid", norm="ln2"),
            )
        )


def test_plan_reads_the_declarations() -> None:
    cfg = trait_model(base_traits()).cfg
    plan = processing_plan(cfg)
    assert plan["fold_ln"] == (True, "folds ln1, ln2, ln_final into the linear maps reading them")
    assert plan["center_writing_weights"][0]
    cfg.traits["block"] = PreNormTrait(residual_multiplier=0.5)  # a scalar keeps means at zero
    assert processing_plan(cfg)["center_writing_weights"][0]
    cfg.traits["block"] = _GateTrait()  # a per-channel gate does not
    applies, reason = processing_plan(cfg)["center_writing_weights"]
    assert not applies and "'test_gate'" in reason and "attn output is mapped per channel" in reason
    assert processing_plan(cfg)["fold_ln"][0]
    cfg.traits["block"] = PostOnlyTrait()
    assert "no pre-norm to fold" in processing_plan(cfg)["fold_ln"][1]
    cfg.traits["block"] = BlockTrait(kind="undeclared")
    assert processing_plan(cfg)["fold_ln"] == (
        False,
        "block kind 'undeclared' does not declare its wiring",
    )


def test_gate_layout_decomposes_through_its_declared_gate() -> None:
    """A layout the cache never heard of: its ChannelGate is applied to every piece."""

    class GateBlock(TransformerBlock):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.g = torch.nn.Parameter(torch.linspace(-1, 2, self.cfg.d_model))

        def forward(self, resid: torch.Tensor, ctx: Any) -> torch.Tensor:
            resid_pre = self.hook_resid_pre(resid)
            attn_out = self.hook_attn_out(self._attention(resid_pre, ctx, "ln1"))
            resid_mid = self.hook_resid_mid(resid_pre + self.g * attn_out)
            mlp_out = self.hook_mlp_out(self._mlp(resid_mid, "ln2"))
            return self.hook_resid_post(resid_mid + mlp_out)

    model = trait_model(base_traits(), dtype=torch.float64)
    for i, old in enumerate(model.blocks):
        block = GateBlock(_GateTrait(), model.cfg, i, old.attn, old.mlp, lambda: None)
        block.ln1, block.ln2 = old.ln1, old.ln2
        model.blocks[i] = block
    model.setup()
    _, cache = model.run_with_cache(tokens_for(model))
    final = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(cache.decompose_resid().sum(0), final)
    torch.testing.assert_close(cache.get_full_resid_decomposition().sum(0), final)
    heads = cache.stack_head_results(layer=1, incl_remainder=True)
    torch.testing.assert_close(heads.sum(0), cache["blocks.1.hook_resid_pre"])


@pytest.mark.parametrize(
    ("block", "norm", "expected"),
    [
        (
            PreNormTrait(),
            LayerNormTrait(),
            ["blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out"],
        ),
        (PreNormTrait(), RMSNormTrait(), ["blocks.0.ln1", "blocks.0.hook_attn_out"]),
        (SandwichTrait(), RMSNormTrait(), ["blocks.0.ln1"]),
        (PostOnlyTrait(), RMSNormTrait(), []),
    ],
)
def test_probes_follow_the_wiring_and_the_norms(block: Any, norm: Any, expected: list) -> None:
    """What the parity tool compares around the attention branch, from the declarations."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    model = trait_model(base_traits(block=block, norm=norm))
    hf_layer = AutoModelForCausalLM.from_config(
        LlamaConfig(
            hidden_size=32,
            num_attention_heads=4,
            num_hidden_layers=2,
            intermediate_size=48,
            vocab_size=61,
        )
    ).model.layers[0]
    places = [p.place for p in layer_probes(model, hf_layer, 0)]
    attn_places = [p for p in places if "mlp" not in p and "ln2" not in p]
    assert [p for p in attn_places if "attn.hook" not in p] == expected
    assert {"blocks.0.attn.hook_q", "blocks.0.attn.hook_z"} <= set(places)


def test_hook_normalized_is_where_transformerlens_2x_puts_it() -> None:
    """TransformerLens 2.x (v2.9.1, ``components/layer_norm.py``): ``return
    self.hook_normalized(x * self.w + self.b)``, the LayerNorm's output; ``rms_norm.py``:
    ``x = self.hook_normalized(x / scale)`` before ``x * self.w``. An SAE or probe trained on a
    TransformerLens ``ln*.hook_normalized`` must read the same tensor here."""
    x = torch.randn(2, 3, 8) * 2 + 0.5
    ln, rms = LayerNorm(8, 1e-5), RMSNorm(8, 1e-6)
    with torch.no_grad():
        ln.w.uniform_(0.5, 1.5), ln.b.uniform_(-1, 1), rms.w.uniform_(0.5, 1.5)
    seen: dict[str, torch.Tensor] = {}
    for name, norm in (("ln", ln), ("rms", rms)):
        norm.hook_normalized.add_hook(lambda t, hook, name=name: seen.__setitem__(name, t))
    ln_out, rms_out = ln(x), rms(x)
    centred = x - x.mean(-1, keepdim=True)
    x_hat = centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    torch.testing.assert_close(seen["ln"], x_hat * ln.w + ln.b)
    assert torch.equal(seen["ln"], ln_out)
    torch.testing.assert_close(seen["rms"], x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt())
    torch.testing.assert_close(seen["rms"] * rms.w, rms_out)

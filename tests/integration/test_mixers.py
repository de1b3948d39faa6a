"""Sequence mixers other than attention (the ``mixer`` slot): state-space and linear attention.

Each spec's tiny checkpoint goes through tlcore's real loader; HF's own torch path is the reference
for logits, greedy generation with the recurrent state cached, and the hooks' values (recomputed
here from HF's submodules and the checkpoint's tensors, not from tlcore's code).
"""

from __future__ import annotations

from typing import Literal

import pytest
import torch
import torch.nn.functional as F

from tlcore import hookimpl
from tlcore.components.mixer import MixerTrait, SequenceMixer
from tlcore.hook_points import HookPoint
from tlcore.model import HookedTransformer
from tlcore.parity.probes import capture
from tlcore.plan import resolve_plan
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint, tiny_hf_config

pytest_plugins = ["tlcore.testing.pytest_plugin"]

VOCAB = 512
SSM_SPECS = ["mamba", "falcon_mamba", "mamba2"]


_LOADED: dict[str, tuple[HookedTransformer, torch.nn.Module]] = {}


def load(name, tmp_path_factory):
    """The tiny checkpoint of a spec through tlcore's loader, and HF's model (once per module)."""
    if name not in _LOADED:
        folder, hf = save_tiny_checkpoint(
            get_registry().get_spec(name), tmp_path_factory.mktemp(name)
        )
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
        hf.generation_config.eos_token_id = None
        _LOADED[name] = (model, hf)
    return _LOADED[name]


@pytest.fixture(params=SSM_SPECS)
def pair(request, tmp_path_factory):
    return load(request.param, tmp_path_factory)


@pytest.fixture(params=["mamba", "falcon_mamba"])
def mamba1(request, tmp_path_factory):
    return load(request.param, tmp_path_factory)


def tokens(batch=2, pos=9, seed=0):
    return torch.randint(3, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


def greedy(model, toks, n=6, **kwargs):
    return model.generate(toks, n, do_sample=False, stop_at_eos=False, verbose=False, **kwargs)


def test_blocks_are_norm_mixer_residual(pair):
    model, _ = pair
    block = model.blocks[0]
    names = {n for n in model.hook_dict if n.startswith("blocks.0.")}
    assert "blocks.0.hook_mixer_out" in names and "blocks.0.mixer.hook_ssm_state" in names
    assert not [n for n in names if "attn" in n or "mlp" in n or "resid_mid" in n]
    assert not hasattr(block, "mlp") and [b.name for b in block.wiring.branches] == ["mixer"]
    toks = tokens()
    _, cache = model.run_with_cache(toks)
    for layer in range(model.cfg.n_layers):
        pre, out = cache[f"blocks.{layer}.hook_resid_pre"], cache[f"blocks.{layer}.hook_mixer_out"]
        assert torch.allclose(pre + out, cache[f"blocks.{layer}.hook_resid_post"], atol=1e-5)


def test_greedy_generation_with_cached_state_equals_hf(pair):
    model, hf = pair
    toks = tokens()
    ours = greedy(model, toks)
    theirs = hf.generate(toks, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, greedy(model, toks, use_past_kv_cache=False))


def test_hooks_hold_hf_intermediates(mamba1):
    model, hf = mamba1
    toks = tokens()
    mixer = hf.backbone.layers[1].mixer
    with capture({"in": (mixer.in_proj, "output"), "post": (mixer.out_proj, "input")}) as hf_vals:
        with torch.no_grad():
            hf(toks)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.startswith("blocks.1.mixer"))
    d_inner = mixer.intermediate_size
    assert torch.allclose(cache["blocks.1.mixer.hook_in"], hf_vals["in"][..., :d_inner], atol=1e-5)
    assert torch.allclose(
        cache["blocks.1.mixer.hook_gate"], hf_vals["in"][..., d_inner:], atol=1e-5
    )
    assert torch.allclose(cache["blocks.1.mixer.hook_post"], hf_vals["post"], rtol=1e-5, atol=1e-4)
    # hook_conv: HF's depthwise convolution (padding k-1, first pos outputs) and activation.
    conv = mixer.conv1d(hf_vals["in"][..., :d_inner].transpose(1, 2))[..., : toks.shape[1]]
    assert torch.allclose(
        cache["blocks.1.mixer.hook_conv"], F.silu(conv).transpose(1, 2), atol=1e-5
    )
    # The last cached state times C is the scan output without the skip: y - D x.
    state, C = cache["blocks.1.mixer.hook_ssm_state"], cache["blocks.1.mixer.hook_C"]
    x, y = cache["blocks.1.mixer.hook_conv"], cache["blocks.1.mixer.hook_y"]
    assert state.shape == (*toks.shape, d_inner, mixer.ssm_state_size)
    assert torch.allclose((state @ C[..., None])[..., 0], y - x * mixer.D, rtol=1e-5, atol=1e-3)


def test_editing_the_state_hook_changes_that_output(pair):
    model, _ = pair
    toks = tokens()
    clean = model(toks)

    def zero_last(state, hook):
        state[:, -1] = 0
        return state

    patched = model.run_with_hooks(toks, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", zero_last)])
    assert torch.allclose(patched[:, :-1], clean[:, :-1], atol=1e-5)
    assert not torch.allclose(patched[:, -1], clean[:, -1], atol=1e-3)


def test_mamba2_hooks_hold_hf_intermediates(tmp_path_factory):
    model, hf = load("mamba2", tmp_path_factory)
    toks = tokens()
    mixer = hf.backbone.layers[0].mixer
    with capture({"in": (mixer.in_proj, "output"), "post": (mixer.out_proj, "input")}) as hf_vals:
        with torch.no_grad():
            hf(toks)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.startswith("blocks.0.mixer"))
    d_inner = mixer.intermediate_size
    assert torch.allclose(
        cache["blocks.0.mixer.hook_gate"], hf_vals["in"][..., :d_inner], atol=1e-5
    )
    assert torch.allclose(cache["blocks.0.mixer.hook_post"], hf_vals["post"], rtol=1e-5, atol=1e-4)
    # hook_dt: softplus(dt + dt_bias) from HF's in_proj output; the state read through C plus the
    # skip D x gives hook_y (B and C shared by the heads of a group).
    dt = torch.nn.functional.softplus(hf_vals["in"][..., -mixer.num_heads :] + mixer.dt_bias)
    assert torch.allclose(cache["blocks.0.mixer.hook_dt"], dt, atol=1e-5)
    state, C = cache["blocks.0.mixer.hook_ssm_state"], cache["blocks.0.mixer.hook_C"]
    x, y = cache["blocks.0.mixer.hook_x"], cache["blocks.0.mixer.hook_y"]
    assert state.shape == (*toks.shape, mixer.num_heads, mixer.head_dim, mixer.ssm_state_size)
    C_heads = C.repeat_interleave(mixer.num_heads // mixer.n_groups, dim=2)
    read = (state @ C_heads[..., None])[..., 0] + x * mixer.D[:, None]
    assert torch.allclose(read.flatten(-2), y, rtol=1e-5, atol=1e-3)


def test_padding_positions_are_zeroed_like_hf(pair):
    model, hf = pair
    toks = tokens()
    mask = torch.ones_like(toks)
    mask[0, :3] = 0
    with torch.no_grad():
        theirs = hf(toks, attention_mask=mask).logits
    ours = model(toks, attention_mask=mask)
    assert torch.allclose(ours[mask.bool()], theirs[mask.bool()], atol=1e-4)


# ------------------------------------------------------------------------------ Gated DeltaNet
@pytest.fixture
def next_pair(tmp_path_factory):
    return load("qwen3_next", tmp_path_factory)


def test_mixer_chosen_per_layer_from_layer_types(next_pair):
    model, hf = next_pair
    kinds = [b.wiring.branches[0].name for b in model.blocks]
    expected = ["attn" if t == "full_attention" else "linear_attn" for t in hf.config.layer_types]
    assert kinds == expected
    assert "blocks.1.attn.hook_pattern" in model.hook_dict
    assert "blocks.1.attn.hook_gate" in model.hook_dict
    assert "blocks.0.linear_attn.hook_ssm_state" in model.hook_dict
    assert "blocks.0.attn.hook_q" not in model.hook_dict


def test_several_chunks_and_the_recurrent_form_match_hf(next_pair):
    model, hf = next_pair
    toks = tokens(batch=1, pos=70)  # more than one 64-position chunk
    with torch.no_grad():
        theirs = hf(toks).logits
    assert torch.allclose(model(toks), theirs, atol=1e-4)
    # Hooking the state runs the recurrent form: the same outputs.
    states = []
    hooked = model.run_with_hooks(
        toks, fwd_hooks=[("blocks.2.linear_attn.hook_ssm_state", lambda s, hook: states.append(s))]
    )
    assert torch.allclose(hooked, theirs, atol=1e-4)
    n_v, d_k, d_v = (
        hf.config.linear_num_value_heads,
        hf.config.linear_key_head_dim,
        hf.config.linear_value_head_dim,
    )
    assert states[0].shape == (1, 70, n_v, d_k, d_v)


def test_qwen3_next_greedy_generation_equals_hf(next_pair):
    model, hf = next_pair
    toks = tokens()
    ours = greedy(model, toks)
    theirs = hf.generate(toks, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, greedy(model, toks, use_past_kv_cache=False))


def test_output_gate_hook_scales_z(next_pair):
    model, hf = next_pair
    toks = tokens()
    attn = hf.model.layers[1].self_attn
    with capture({"o": (attn.o_proj, "input"), "q": (attn.q_proj, "output")}) as hf_vals:
        with torch.no_grad():
            hf(toks)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.startswith("blocks.1.attn"))
    heads, d_head = model.cfg.n_heads, model.cfg.d_head
    gate = hf_vals["q"].view(*toks.shape, heads, 2 * d_head)[..., d_head:]
    assert torch.allclose(cache["blocks.1.attn.hook_gate"], torch.sigmoid(gate), atol=1e-5)
    assert torch.allclose(cache["blocks.1.attn.hook_z"].flatten(-2), hf_vals["o"], atol=1e-5)


# ------------------------------------------------------------------------- a plugin's mixer kind
class CausalMeanTrait(MixerTrait):
    """A test mixer kind: the running mean of ``x W`` over positions (no tlcore edit needed)."""

    kind: Literal["causal_mean"] = "causal_mean"


class CausalMean(SequenceMixer):
    branch = "cummean"

    def __init__(self, trait, cfg, layer):
        super().__init__(cfg, layer)
        self.W = torch.nn.Parameter(torch.randn(cfg.d_model, cfg.d_model) / cfg.d_model**0.5)
        self.hook_mean = HookPoint()

    def forward(self, x, ctx):
        y = (x @ self.W).cumsum(1) / torch.arange(1, x.shape[1] + 1)[:, None]
        return self.hook_mean(y)


def test_a_plugin_mixer_kind_fills_the_slot_per_layer(tlcore_plugin):
    class Plugin:
        @hookimpl
        def register_traits(self, register) -> None:
            register.trait(
                "mixer", CausalMeanTrait, lambda trait, cfg, layer: CausalMean(trait, cfg, layer)
            )

        @hookimpl
        def register_specs(self, register) -> None:
            register.spec(
                {
                    "name": "toy_mixer",
                    "extends": "llama",
                    "hf": {"model_types": ["toy_mixer_type"], "architectures": []},
                    "traits": {"mixer": {"kind": "causal_mean", "layers": [False, True]}},
                }
            )

    tlcore_plugin(Plugin(), "toy-mixer")
    spec = get_registry().get_spec("toy_mixer")
    hf_config = tiny_hf_config(get_registry().get_spec("llama"))
    model = HookedTransformer(resolve_plan(spec, hf_config))
    assert [b.wiring.branches[0].name for b in model.blocks] == ["attn", "cummean"]
    assert "blocks.1.cummean.hook_mean" in model.hook_dict
    assert "blocks.1.attn.hook_q" not in model.hook_dict
    toks = tokens(batch=1, pos=6)
    logits, cache = model.run_with_cache(toks)
    # The declared wiring serves the cache's analysis: the pieces sum to the final residual.
    pieces, labels = cache.decompose_resid(return_labels=True)
    assert "1_cummean_out" in labels
    assert torch.allclose(pieces.sum(0), cache["blocks.1.hook_resid_post"], atol=1e-4)
    # Causal: a later token does not change earlier logits.
    changed = toks.clone()
    changed[0, -1] = (changed[0, -1] + 1) % VOCAB
    assert torch.allclose(model(changed)[:, :-1], logits[:, :-1], atol=1e-5)


def test_hybrid_mamba2_attention_generation_equals_hf(tmp_path_factory):
    # granitemoehybrid: Mamba-2 layers (state cache) and attention layers (KV cache) together.
    model, hf = load("granitemoehybrid", tmp_path_factory)
    assert [b.wiring.branches[0].name for b in model.blocks] == ["mixer", "attn", "mixer"]
    toks = tokens()
    ours = greedy(model, toks)
    theirs = hf.generate(toks, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)

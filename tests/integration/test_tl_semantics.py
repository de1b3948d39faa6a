"""Values and errors as TransformerLens 2.x gives them (issue 12, item 6).

Facts read from TransformerLens's source (repo TransformerLensOrg/TransformerLens):

- ``hook_normalized``. Tag v2.16.1 (a634e57), also v2.0.0, v2.11.0 and v2.18.0 (589acd4):
  ``components/layer_norm.py`` line 56 is ``return self.hook_normalized(x * self.w +
  self.b).to(self.cfg.dtype)``: LayerNorm's ``hook_normalized`` is its output, *after* the weight
  and bias. ``components/rms_norm.py`` line 44 is ``x = self.hook_normalized(x / scale)`` and line
  49 ``return x * self.w``: RMSNorm's is before the weight. ``layer_norm_pre.py`` line 53 and
  ``rms_norm_pre.py`` line 35 return ``self.hook_normalized(x / scale)`` (no weight there).
  TransformerLens moved LayerNorm's hook before the affine in commit ccf852b (PR #770, "move
  hook_normalized before the gain and bias weights in LayerNorm"), first released in v3.0.0
  (TransformerLens 3.9's installed ``layer_norm.py`` has it before). tlcore follows 2.x.
- Masked scores. v2.16.1 ``components/abstract_attention.py`` line 108 registers
  ``IGNORE = torch.tensor(-torch.inf)`` and line 516 (``apply_causal_mask``) returns
  ``torch.where(final_mask, attn_scores, self.IGNORE)`` before ``hook_attn_scores`` (line 272).
- ``input_to_embed`` (v2.16.1 ``HookedTransformer.py`` line 339) returns ``(residual, tokens,
  shortformer_pos_embed, attention_mask)``; its documented recipe is ``rand_embed, _, _, _ =
  model.input_to_embed(x)`` then ``model(rand_embed, start_at_layer=0)``.
- Flag-gated points. ``HookedTransformer.check_hooks_to_add`` (line 238) asserts the flag for
  ``hook_result``, ``hook_{q,k,v}_input``, ``mlp_in`` and ``attn_in``, but only ``add_hook`` calls
  it: ``hooks()``/``run_with_hooks`` (``hook_points.py`` ``_enable_hook``) add the hook unchecked,
  and it silently never fires. tlcore raises ``HookNameError`` (a ``KeyError``) naming the setter
  from every entry point given a name; a predicate passed to ``hooks()`` skips such points.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tlcore.errors import HookNameError
from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.model import HookedTransformer
from tlcore.parity import parity_tokens


@pytest.fixture(scope="module")
def load(tiny_checkpoint):
    made: dict[tuple[str, bool], HookedTransformer] = {}

    def get(spec: str, processed: bool = False) -> HookedTransformer:
        if (spec, processed) not in made:
            folder, _ = tiny_checkpoint(spec)
            loader = (
                HookedTransformer.from_pretrained
                if processed
                else HookedTransformer.from_pretrained_no_processing
            )
            made[spec, processed] = loader(str(folder), device="cpu")
        model = made[spec, processed]
        model.reset_hooks()
        return model

    return get


def _with_affine(model: HookedTransformer) -> HookedTransformer:
    """A copy whose norm weights and biases are far from the identity."""
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln" in name or name.startswith("ln_final"):
                param.copy_(1.5 + torch.rand(param.shape, generator=gen))
    return model


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_hook_normalized_is_where_transformer_lens_2_puts_it(load, spec) -> None:
    model = _with_affine(load(spec))
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    x = cache["blocks.1.hook_resid_pre"].double()
    ln1 = model.blocks[1].ln1
    if spec == "gpt2":  # LayerNorm: the output, after w and b
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + ln1.eps).sqrt()
        expected = x / scale * ln1.w.double() + ln1.b.double()
    else:  # RMSNorm: x / scale, before w
        scale = (x.pow(2).mean(-1, keepdim=True) + ln1.eps).sqrt()
        expected = x / scale
    torch.testing.assert_close(cache["blocks.1.ln1.hook_scale"].double(), scale)
    torch.testing.assert_close(
        cache["blocks.1.ln1.hook_normalized"].double(), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_hook_normalized_of_a_folded_norm_is_x_over_scale(load, spec) -> None:
    model = load(spec, processed=True)  # LNPre / RMSPre
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    x = cache["blocks.1.hook_resid_pre"].double()
    if spec == "gpt2":
        x = x - x.mean(-1, keepdim=True)
    expected = x / (x.pow(2).mean(-1, keepdim=True) + model.blocks[1].ln1.eps).sqrt()
    torch.testing.assert_close(
        cache["blocks.1.ln1.hook_normalized"].double(), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("spec", ["gpt2", "gemma2", "bloom"])
def test_masked_scores_are_minus_infinity(load, spec) -> None:
    model = load(spec)
    tokens = parity_tokens(model.cfg.d_vocab)
    mask = torch.ones_like(tokens)
    mask[0, :2] = 0
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, attention_mask=mask, names_filter=lambda n: n.endswith("hook_attn_scores")
        )
    P = tokens.shape[1]
    q, k = torch.arange(P)[:, None], torch.arange(P)[None, :]
    causal = k <= q
    window = model.blocks[0].attn.window  # gemma2's layer 0 is local
    if window is not None:
        causal = causal & (q - k < window)
    allowed = causal & mask.bool()[:, None, None, :]
    allowed[0, :, :2] = True  # padding queries attend uniformly (HF's convention), never -inf
    scores = cache["blocks.0.attn.hook_attn_scores"]
    allowed = allowed.expand_as(scores)
    assert torch.isneginf(scores[~allowed]).all()
    assert torch.isfinite(scores[allowed]).all()


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_input_to_embed_returns_transformer_lens_four_tuple(load, spec) -> None:
    model = load(spec)
    tokens = parity_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        rand_embed, _, _, _ = model.input_to_embed(tokens)  # TransformerLens's recipe
        assert torch.equal(model(rand_embed, start_at_layer=0), model(tokens))
        resid, toks, shortformer, mask = model.input_to_embed(tokens)
    assert torch.equal(toks, tokens) and shortformer is None and mask is None
    assert resid.shape == (*tokens.shape, model.cfg.d_model)
    # A padding mask comes back, and feeds the rest of the forward.
    padding = torch.ones_like(tokens)
    padding[0, :3] = 0
    with torch.no_grad():
        resid, _, _, mask = model.input_to_embed(tokens, attention_mask=padding)
        assert torch.equal(mask, padding)
        rest = model(resid, start_at_layer=0, attention_mask=mask)
        assert torch.equal(rest, model(tokens, attention_mask=padding))
    # With a KV cache, the mask covers the cached positions too.
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", tokens.shape[0])
    with torch.no_grad():
        model(tokens[:, :4], past_kv_cache=cache)
        _, _, _, mask = model.input_to_embed(tokens[:, 4:6], past_kv_cache=cache)
    assert mask.shape == (tokens.shape[0], 6)


def test_input_to_embed_gives_shortformer_positions() -> None:
    from tests.unit.test_shortformer import shortformer_model

    model = shortformer_model()
    tokens = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        resid, _, pos, _ = model.input_to_embed(tokens)
        assert torch.equal(pos, model.pos_embed.W_pos[:5][None])
        assert torch.equal(resid, model.embed.W_E[tokens])  # not added to the residual
        out = model(resid, start_at_layer=0, shortformer_pos_embed=pos)
        assert torch.equal(out, model(tokens))


GATED = {
    "blocks.0.attn.hook_result": "set_use_attn_result",
    "blocks.0.hook_q_input": "set_use_split_qkv_input",
    "blocks.0.hook_k_input": "set_use_split_qkv_input",
    "blocks.0.hook_v_input": "set_use_split_qkv_input",
    "blocks.0.hook_attn_in": "set_use_attn_in",
    "blocks.0.hook_mlp_in": "set_use_hook_mlp_in",
}


@pytest.mark.parametrize("name", list(GATED))
def test_a_named_hook_on_a_gated_point_raises_from_every_entry_point(load, name) -> None:
    model = load("gpt2")
    tokens = parity_tokens(model.cfg.d_vocab)
    setter = GATED[name]
    fired = []

    def hook(x, hook):
        fired.append(hook.name)

    with pytest.raises(HookNameError, match=setter):
        model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
    with pytest.raises(HookNameError, match=setter):
        model.run_with_hooks(tokens, bwd_hooks=[(name, hook)])
    with pytest.raises(HookNameError, match=setter):
        with model.hooks(fwd_hooks=[(name, hook)]):
            pass
    with pytest.raises(HookNameError, match=setter):
        model.run_with_cache(tokens, names_filter=[name])
    with pytest.raises(HookNameError, match=setter):
        model.add_hook(name, hook)
    assert not model.hook_dict[name].has_hooks and not fired
    # A predicate skips the gated point; with the flag on, the named hook fires.
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n == name, hook)])
    assert not fired
    getattr(model, setter)(True)
    try:
        with torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
    finally:
        getattr(model, setter)(False)
    assert fired == [name]


def test_hook_pos_embed_is_refused_where_positions_embed_nothing(load) -> None:
    rotary, learned = load("llama"), load("gpt2")
    tokens = parity_tokens(rotary.cfg.d_vocab)
    with pytest.raises(HookNameError, match="never fires"):
        rotary.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", lambda x, hook: None)])
    fired = []
    with torch.no_grad():
        learned.run_with_hooks(
            parity_tokens(learned.cfg.d_vocab),
            fwd_hooks=[("hook_pos_embed", lambda x, hook: fired.append(1))],
        )
    assert fired == [1]

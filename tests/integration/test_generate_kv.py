"""generate(attention_mask=...), the preallocated KV cache, and steering hooks during generation."""

from __future__ import annotations

import pytest
import torch

from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

VOCAB = 1000


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    extra = {"tie_word_embeddings": False} if request.param == "gpt2" else {}
    folder, hf = save_tiny_checkpoint(
        get_registry().get_spec(request.param),
        tmp_path_factory.mktemp(f"kv-{request.param}"),
        vocab_size=VOCAB,
        **extra,
    )
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    hf.generation_config.eos_token_id = None
    return model, hf


def left_padded(batch=4, pos=7, seed=0):
    tokens = torch.randint(3, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(tokens)
    for row in range(batch):
        mask[row, : row % 4] = 0
    return tokens * mask, mask


def greedy(model, tokens, n=10, **kwargs):
    return model.generate(tokens, n, do_sample=False, stop_at_eos=False, verbose=False, **kwargs)


def test_attention_mask_matches_hf_and_each_row_alone(pair):
    model, hf = pair
    tokens, mask = left_padded()
    ours = greedy(model, tokens, attention_mask=mask)
    theirs = hf.generate(
        tokens, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0
    )
    assert torch.equal(ours, theirs)
    for row in range(tokens.shape[0]):
        alone = greedy(model, tokens[row : row + 1, mask[row].bool()])
        assert torch.equal(ours[row, -10:], alone[0, -10:])
    uncached = greedy(model, tokens, attention_mask=mask, use_past_kv_cache=False)
    assert torch.equal(ours, uncached)


def test_attention_mask_errors(pair):
    model, _ = pair
    tokens, mask = left_padded()
    with pytest.raises(ValueError, match="left padding"):
        greedy(model, tokens, attention_mask=mask.flip(1))
    with pytest.raises(ValueError, match="must match"):
        greedy(model, tokens, attention_mask=mask[:, 1:])


def test_cache_grows_past_its_capacity_and_freezes(pair):
    model, _ = pair
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    full = model(tokens)
    for capacity in (0, 3, 20):
        cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 2, capacity=capacity)
        steps = [model(tokens[:, :4], past_kv_cache=cache)]
        steps += [model(tokens[:, i : i + 1], past_kv_cache=cache) for i in range(4, 9)]
        assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4), capacity
        assert cache[0].past_keys.shape[1] == 9
    cache.freeze()
    before = cache[0].past_keys.clone()
    frozen = model(tokens[:, :1], past_kv_cache=cache)
    assert cache[0].past_keys.shape[1] == 9 and torch.equal(cache[0].past_keys, before)
    assert frozen.shape == (2, 1, VOCAB)


def test_gradients_flow_through_a_cached_forward(pair):
    model, _ = pair
    tokens = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 1, capacity=8)
    model(tokens[:, :3], past_kv_cache=cache).sum().backward(retain_graph=True)
    model(tokens[:, 3:], past_kv_cache=cache).sum().backward()
    assert model.embed.W_E.grad is not None
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def test_cached_keys_are_views_written_in_place(pair):
    """A step stores only its new keys: the buffer keeps its address while capacity lasts."""
    model, _ = pair
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 1, capacity=16)
    tokens = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(4))
    model(tokens[:, :4], past_kv_cache=cache)
    address = cache[0].past_keys.untyped_storage().data_ptr()
    for i in range(4, 8):
        model(tokens[:, i : i + 1], past_kv_cache=cache)
    assert cache[0].past_keys.untyped_storage().data_ptr() == address
    assert cache[0].past_keys.shape[1] == 8


def test_steering_hook_applies_on_every_step(pair):
    model, _ = pair
    tokens, mask = left_padded(batch=2, seed=5)
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(6)) * 4
    seen = []

    def steer(x, hook):
        seen.append(x.shape[1])
        return x + direction

    hook = [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", steer)]
    plain = greedy(model, tokens, attention_mask=mask)
    with model.hooks(fwd_hooks=hook):
        steered = greedy(model, tokens, attention_mask=mask)
        assert seen == [7] + [1] * 9  # the prompt once, then one position per new token
        uncached = greedy(model, tokens, attention_mask=mask, use_past_kv_cache=False)
    assert torch.equal(steered, uncached)
    assert not torch.equal(steered, plain)

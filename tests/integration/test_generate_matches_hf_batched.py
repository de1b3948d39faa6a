"""``generate`` at the bench's shape: batch 8 left-padded by 0-4 tokens, greedy and seeded sampling.

HF's sampling (top-k, then softmax and one ``torch.multinomial`` per step) and tlcore's
(``sample_logits``: top-k, then ``Categorical`` probabilities and one ``torch.multinomial``) draw
the same random numbers, one exponential per vocabulary entry per step, so the same seed must give
the same tokens. A steering hook during generation must change the tokens exactly as the same
hook changes a plain forward.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

VOCAB, BATCH, PROMPT, NEW = 1000, 8, 6, 10


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    # Untied: with tied random embeddings greedy decoding repeats the last token.
    folder, hf = save_tiny_checkpoint(
        get_registry().get_spec(request.param),
        tmp_path_factory.mktemp(f"gen8-{request.param}"),
        vocab_size=VOCAB,
        tie_word_embeddings=False,
    )
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    config = copy.deepcopy(hf.generation_config)
    config.eos_token_id, config.pad_token_id = None, 0
    return model, hf, config


def _padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(3, VOCAB, (BATCH, PROMPT), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(tokens)
    for row in range(BATCH):
        mask[row, : row % 5] = 0
    return tokens * mask, mask


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_batch8_left_padded_tokens_equal_hf(pair, sample: bool) -> None:
    model, hf, config = pair
    tokens, mask = _padded_prompts()
    sampling = {"do_sample": sample, "top_k": 50 if sample else None}
    for seed in (0, 1):
        torch.manual_seed(seed)
        ours = model.generate(
            tokens, NEW, attention_mask=mask, stop_at_eos=False, verbose=False, **sampling
        )
        torch.manual_seed(seed)
        theirs = hf.generate(
            tokens,
            attention_mask=mask,
            generation_config=config,
            max_new_tokens=NEW,
            **sampling,
        )
        assert torch.equal(ours, theirs), (seed, (ours != theirs).any(0).nonzero().flatten())
    if sample:  # the draws are random: another seed gives other tokens
        torch.manual_seed(2)
        other = model.generate(
            tokens, NEW, attention_mask=mask, stop_at_eos=False, verbose=False, **sampling
        )
        assert not torch.equal(other, ours)


def test_steering_hook_during_generate_is_the_hook(pair) -> None:
    """Each generated token under a resid hook is the argmax of a hooked uncached forward."""
    model, _, _ = pair
    tokens, mask = _padded_prompts()
    direction = 4 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(9))
    name = f"blocks.{model.cfg.n_layers // 2}.hook_resid_post"
    hook = (name, lambda x, hook: x + direction)
    with model.hooks(fwd_hooks=[hook]):
        steered = model.generate(
            tokens, NEW, attention_mask=mask, do_sample=False, stop_at_eos=False, verbose=False
        )
    plain = model.generate(
        tokens, NEW, attention_mask=mask, do_sample=False, stop_at_eos=False, verbose=False
    )
    assert not torch.equal(steered, plain)  # the hook matters
    full_mask = torch.cat([mask, torch.ones(BATCH, NEW, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        logits = model.run_with_hooks(steered, attention_mask=full_mask, fwd_hooks=[hook])
    expected = logits[:, PROMPT - 1 : -1].argmax(-1)
    assert torch.equal(steered[:, PROMPT:], expected)

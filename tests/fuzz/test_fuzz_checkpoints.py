"""Fuzzing checkpoints: safetensors headers (against the official reader), config.json, GGUF.

Properties:

- safetensors: whatever the official ``safetensors`` reader refuses, tlcore refuses with a typed
  error naming the file; whatever tlcore reads, the official reader reads to the same bytes.
- ``config.json``: any field set to any JSON value gives a model or a typed error.
- GGUF: any byte corruption or truncation of a small valid file gives a source (whose tensors all
  read) or a typed error.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from tlcore.loading.safetensors_file import DTYPE_BITS, SafetensorsFile
from tlcore.testing.fuzz import examples, outcome

pytestmark = pytest.mark.timeout(300)

# -- safetensors ----------------------------------------------------------------------------------

small = st.integers(-2, 40)
entries = st.fixed_dictionaries(
    {
        "dtype": st.one_of(
            st.sampled_from(sorted(DTYPE_BITS)), st.sampled_from(["F33", "", "f32"]), st.none()
        ),
        "shape": st.one_of(
            st.lists(st.integers(-1, 5), max_size=3),
            st.just([1.0]),
            st.just("3"),
            st.just([True]),
        ),
        "data_offsets": st.one_of(
            st.lists(small, min_size=2, max_size=2),
            st.lists(small, max_size=3),
            st.just("0,4"),
        ),
    },
    optional={"extra": st.integers()},
)


@st.composite
def safetensors_files(draw) -> bytes:
    if draw(st.booleans()):  # a well-formed layout, then at most one corruption
        tensors = []
        offset = 0
        for n in range(draw(st.integers(0, 4))):
            dtype = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64"]))
            shape = draw(st.lists(st.integers(0, 4), max_size=2))
            size = int(np.prod(shape)) * DTYPE_BITS[dtype] // 8
            tensors.append((f"t{n}", {"dtype": dtype, "shape": shape,
                                      "data_offsets": [offset, offset + size]}))  # fmt: skip
            offset += size
        data = draw(st.binary(min_size=offset, max_size=offset))
        if tensors and draw(st.booleans()):
            name, entry = tensors[draw(st.integers(0, len(tensors) - 1))]
            key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            entry[key] = draw(entries)[key]
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=4))
        if tensors and draw(st.booleans()):
            tensors.append((tensors[0][0], tensors[0][1]))  # a duplicate name
    else:
        tensors = [(draw(st.sampled_from(["a", "b", "c"])), draw(entries)) for _ in range(3)]
        data = draw(st.binary(max_size=48))
    if draw(st.booleans()):
        tensors.insert(0, ("__metadata__", draw(st.sampled_from([{"k": "v"}, {"k": 1}, [], None]))))
    header = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in tensors) + "}").encode()
    header += b" " * draw(st.integers(0, 7))
    length = len(header)
    if draw(st.integers(0, 9)) == 0:
        length = draw(st.sampled_from([0, 1, length + 1, length - 1, 2**40, 2**64 - 1]))
    blob = struct.pack("<Q", length) + header + data
    if draw(st.integers(0, 9)) == 0:
        blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


def official(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception:  # noqa: BLE001
        return None


def ours(path: Path) -> dict[str, torch.Tensor]:
    file = SafetensorsFile(path)
    return {key: file.get(key).clone() for key in file.keys()}


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == torch.bool:  # tlcore reads any non-zero byte as True (1)
        return torch.equal(a.view(torch.uint8).ne(0), b.view(torch.uint8).ne(0))
    return a.numel() == 0 or torch.equal(a.contiguous().view(-1).view(torch.uint8),
                                         b.contiguous().view(-1).view(torch.uint8))  # fmt: skip


@settings(max_examples=examples(800))
@given(blob=safetensors_files())
def test_fuzz_safetensors_against_the_official_reader(tmp_path_factory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("st") / "fuzz.safetensors"
    path.write_bytes(blob)
    theirs = official(path)
    mine, error = outcome(ours, path)
    if error is not None:
        assert str(path) in str(error), str(error)
        if theirs is not None:  # stricter than the official reader only where documented
            allowed = ("named twice", "not supported by this version of torch")
            assert any(reason in str(error) for reason in allowed), str(error)
        return
    assert theirs is not None, "tlcore read a file the official reader refuses"
    assert sorted(mine) == sorted(theirs)
    for key, tensor in mine.items():
        assert same_bytes(tensor, theirs[key]), key


# -- config.json ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.sampled_from([0, -1, 10**6, 10**9, 0.5, 1e-30]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def gpt2_folder(tiny_checkpoint, tmp_path_factory):
    folder, _ = tiny_checkpoint("gpt2")
    target = tmp_path_factory.mktemp("cfgfuzz") / "ckpt"
    shutil.copytree(folder, target)
    return target


@settings(max_examples=examples(200))
@given(data=st.data())
def test_fuzz_config_json(gpt2_folder: Path, data) -> None:
    from tlcore import HookedTransformer

    original = (
        json.loads((gpt2_folder / "config.json.orig").read_text())
        if (gpt2_folder / "config.json.orig").exists()
        else json.loads((gpt2_folder / "config.json").read_text())
    )
    if not (gpt2_folder / "config.json.orig").exists():
        (gpt2_folder / "config.json.orig").write_text(json.dumps(original))
    config = dict(original)
    keys = sorted(original) + ["n_inner", "tie_word_embeddings", "extra_field"]
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3)):
        config[key] = data.draw(json_values)
    text = json.dumps(config) if data.draw(st.integers(0, 9)) else json.dumps(config)[:-3]
    (gpt2_folder / "config.json").write_text(text)
    model, error = outcome(
        HookedTransformer.from_pretrained_no_processing, str(gpt2_folder), device="cpu"
    )
    if model is not None:
        logits = model(torch.tensor([[1, 2, 3]]))
        assert logits.shape == (1, 3, model.cfg.d_vocab_out)


# -- GGUF -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    gguf = pytest.importorskip("gguf")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(12)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_token_list(["a", "b", "c"])
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((3, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", rng.standard_normal((8, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def read_everything(path: Path):
    from tlcore.loading.gguf import GGUFSource

    source = GGUFSource(path)
    source.hf_config()
    return {key: source.get(key) for key in sorted(source.keys())}


@settings(max_examples=examples(300))
@given(data=st.data())
def test_fuzz_gguf_files(tmp_path_factory, gguf_bytes: bytes, data) -> None:
    blob = bytearray(gguf_bytes)
    header_end = min(len(blob), 600)  # header, metadata and tensor table
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, header_end - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.integers(0, 3)) == 0:
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path_factory.mktemp("gguf") / "fuzz.gguf"
    path.write_bytes(bytes(blob))
    tensors, error = outcome(read_everything, path)
    if error is not None:
        assert "fuzz.gguf" in str(error), str(error)
    else:
        assert all(isinstance(t, torch.Tensor) for t in tensors.values())

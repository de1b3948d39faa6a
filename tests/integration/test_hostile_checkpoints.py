"""Hostile checkpoints: every corrupt file gets a CheckpointFormatError naming the file and tensor.

The safetensors cases run the official ``safetensors`` reader on the same bytes: whatever it
refuses, tlcore refuses too (with a typed error instead of a raw ``struct.error`` or
``KeyError``), and where tlcore used to load a file the official reader refuses (overlapping and
aliased offsets), it no longer does. tlcore is stricter in one documented case: a tensor named
twice in the header.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tlcore import HookedTransformer
from tlcore.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    InvalidConfigError,
    TlcoreError,
    UnknownArchitectureError,
)
from tlcore.loading.safetensors_file import SafetensorsFile
from tlcore.loading.sources import SafetensorsDirSource


def header_file(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def f32(name_offsets: dict[str, tuple[list[int], int, int]]) -> dict:
    return {
        name: {"dtype": "F32", "shape": shape, "data_offsets": [a, b]}
        for name, (shape, a, b) in name_offsets.items()
    }


GOOD = f32({"a": ([2], 0, 8), "b": ([3], 8, 20)})
DATA = bytes(range(20))

# name → (header, data, header length override, tensor the error must name or None)
CORRUPT: dict[str, tuple] = {
    "too short": (b"", b"", 0, None),
    "header length past the end": (GOOD, DATA, 10_000, None),
    "header length over the limit": (GOOD, DATA, 200_000_000, None),
    "header not JSON": (b"{not json", DATA, None, None),
    "header not UTF-8": (b'{"a\xff": 1}', DATA, None, None),
    "header a JSON list": (b"[1, 2]", DATA, None, None),
    "entry not an object": ({"a": [1, 2]}, DATA, None, "a"),
    "entry without dtype": (
        {"a": {"shape": [2], "data_offsets": [0, 8]}, **f32({"b": ([3], 8, 20)})},
        DATA,
        None,
        "a",
    ),
    "unknown dtype": (
        {"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}, **f32({"b": ([3], 8, 20)})},
        DATA,
        None,
        "a",
    ),
    "negative shape": (f32({"a": ([-2], 0, 8), "b": ([3], 8, 20)}), DATA, None, "a"),
    "float shape": (
        {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, **f32({"b": ([3], 8, 20)})},
        DATA,
        None,
        "a",
    ),
    "three offsets": (
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]},
            **f32({"b": ([3], 8, 20)}),
        },
        DATA,
        None,
        "a",
    ),
    "reversed offsets": (f32({"a": ([2], 8, 0), "b": ([3], 8, 20)}), DATA, None, "a"),
    "size mismatch": (f32({"a": ([3], 0, 8), "b": ([3], 8, 20)}), DATA, None, "a"),
    "overlap": (f32({"a": ([3], 0, 12), "b": ([3], 8, 20)}), DATA, None, "b"),
    "aliased": (f32({"a": ([2], 0, 8), "b": ([2], 0, 8)}), DATA[:8], None, "b"),
    "gap": (f32({"a": ([2], 0, 8), "b": ([2], 12, 20)}), DATA, None, "b"),
    "offsets past the data": (f32({"a": ([2], 0, 8), "b": ([3], 8, 20)}), DATA[:12], None, None),
    "trailing bytes": (GOOD, DATA + b"\0" * 8, None, None),
    "metadata not strings": ({"__metadata__": {"x": 1}, **GOOD}, DATA, None, None),
    "metadata a list": ({"__metadata__": [1], **GOOD}, DATA, None, None),
}


def official_refuses(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    except Exception:  # noqa: BLE001 - SafetensorError and friends
        return True
    return False


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_safetensors_refused_as_the_official_reader_does(tmp_path: Path, case) -> None:
    header, data, length, tensor = CORRUPT[case]
    path = tmp_path / "model.safetensors"
    if case == "too short":
        path.write_bytes(b"\x01\x02")
    else:
        header_file(path, header, data, length)
    assert official_refuses(path), f"the official reader accepts {case!r}"
    with pytest.raises(CheckpointFormatError) as info:
        SafetensorsFile(path)
    message = str(info.value)
    assert str(path) in message
    if tensor is not None:
        assert f"tensor '{tensor}'" in message
    assert isinstance(info.value, CheckpointMismatchError)  # the type tlcore raised before


def test_valid_files_read_like_the_official_reader(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "i64": torch.arange(7),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "u8": torch.arange(3, dtype=torch.uint8),
    }
    path = tmp_path / "ok.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    ours = SafetensorsFile(path)
    theirs = load_file(path)
    assert sorted(ours.keys()) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours.get(key), value) and ours.get(key).dtype == value.dtype
    assert ours.metadata == {"format": "pt"}


def test_duplicate_tensor_names_are_refused_though_the_official_reader_keeps_one(
    tmp_path: Path,
) -> None:
    raw = (
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    )
    path = header_file(tmp_path / "dup.safetensors", raw, b"\0" * 4)
    assert not official_refuses(path)
    with pytest.raises(CheckpointFormatError, match="tensor 'a': named twice"):
        SafetensorsFile(path)


def test_unaligned_offsets_are_read_correctly(tmp_path: Path) -> None:
    values = torch.tensor([1.5, -2.0])
    header = {
        "pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "x": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = header_file(tmp_path / "odd.safetensors", raw, b"\7" + values.numpy().tobytes())
    assert torch.equal(SafetensorsFile(path).get("x"), values)
    assert torch.equal(load_file(path)["x"], values)


def copy_checkpoint(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    return target


def test_aliased_weights_no_longer_load_silently(tiny_checkpoint, tmp_path: Path) -> None:
    """Issue 13: two tensors pointing at the same bytes loaded, with logits off by 0.31."""
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    path = ckpt / "model.safetensors"
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    blob = path.read_bytes()
    header = json.loads(blob[8 : 8 + length])
    a, b = "h.0.attn.c_attn.weight", "h.1.attn.c_attn.weight"
    keys = {k.removeprefix("transformer."): k for k in header if k != "__metadata__"}
    header[keys[b]]["data_offsets"] = header[keys[a]]["data_offsets"]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + length :])
    assert official_refuses(path)
    with pytest.raises(CheckpointFormatError) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert "model.safetensors" in str(info.value) and "c_attn.weight" in str(info.value)


# -- shard indexes ------------------------------------------------------------------------------


def sharded(folder: Path, tmp_path: Path) -> Path:
    ckpt = copy_checkpoint(folder, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    keys = sorted(tensors)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half]}
    parts["model-00002-of-00002.safetensors"] = keys[half:]
    weight_map = {}
    for name, part in parts.items():
        save_file({k: tensors[k] for k in part}, ckpt / name)
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    return ckpt


def test_a_valid_sharded_checkpoint_loads(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = sharded(folder, tmp_path)
    source = SafetensorsDirSource(ckpt)
    assert source.n_files == 2 and source.keys() == set(load_file(folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda index: "{not json", "not valid JSON"),
        (lambda index: json.dumps([1]), "'weight_map'"),
        (lambda index: json.dumps({"weight_map": {}}), "'weight_map'"),
        (lambda index: json.dumps({**index, "metadata": 3}), "'metadata'"),
        (
            lambda index: json.dumps({"weight_map": {**index["weight_map"], "x": "../evil"}}),
            "tensor 'x': shard '../evil' is outside the checkpoint folder",
        ),
        (
            lambda index: json.dumps({"weight_map": {**index["weight_map"], "x": "/etc/passwd"}}),
            "outside the checkpoint folder",
        ),
        (
            lambda index: json.dumps({"weight_map": {**index["weight_map"], "x": "gone.st"}}),
            "tensor 'x': shard file 'gone.st' does not exist",
        ),
        (
            lambda index: json.dumps({"weight_map": {**index["weight_map"], "x": 3}}),
            "tensor 'x': shard 3 is not a file name",
        ),
        (
            lambda index: json.dumps(
                {
                    "weight_map": {
                        **index["weight_map"],
                        "ghost": "model-00001-of-00002.safetensors",
                    }
                }
            ),
            "tensor 'ghost': the index puts it in model-00001-of-00002.safetensors",
        ),
    ],
)
def test_broken_shard_indexes_name_the_file_and_tensor(
    tiny_checkpoint, tmp_path: Path, corrupt, expected
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = sharded(folder, tmp_path)
    index_file = ckpt / "model.safetensors.index.json"
    index_file.write_text(corrupt(json.loads(index_file.read_text())))
    with pytest.raises(CheckpointFormatError) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert "model.safetensors.index.json" in str(info.value) and expected in str(info.value)


def test_a_tensor_in_two_unindexed_files_is_ambiguous(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    shutil.copy(ckpt / "model.safetensors", ckpt / "model-copy.safetensors")
    with pytest.raises(CheckpointFormatError, match="is in both"):
        SafetensorsDirSource(ckpt)


# -- legacy .bin ----------------------------------------------------------------------------------


def bin_checkpoint(folder: Path, tmp_path: Path, zip_format: bool) -> Path:
    ckpt = copy_checkpoint(folder, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    torch.save(tensors, ckpt / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    return ckpt


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pytorch_model_bin_loads_with_weights_only(
    tiny_checkpoint, tmp_path: Path, zip_format: bool
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    reference = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    ckpt = bin_checkpoint(folder, tmp_path, zip_format)
    model = HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    tokens = torch.tensor([[1, 2, 3]])
    assert torch.equal(model(tokens), reference(tokens))


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_code_in_a_bin_never_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "ran.txt"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    state = {"w": torch.zeros(2), "evil": _Payload(str(marker))}
    torch.save(state, ckpt / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointFormatError) as info:
        SafetensorsDirSource(ckpt)
    assert "pytorch_model.bin" in str(info.value) and "weights_only=True" in str(info.value)
    assert not marker.exists()


def test_a_bin_that_is_not_a_state_dict(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"w": torch.zeros(2), "step": 3}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError, match="entry 'step' is a int, not a tensor"):
        SafetensorsDirSource(ckpt)
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointFormatError, match="pytorch_model.bin"):
        SafetensorsDirSource(ckpt)


# -- config.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "error", "expected"),
    [
        (lambda c: "{broken", CheckpointFormatError, "config.json is not valid JSON"),
        (lambda c: "[1]", CheckpointFormatError, "not a JSON object"),
        (lambda c: json.dumps({**c, "n_head": 0}), InvalidConfigError, "n_head = 0"),
        (lambda c: json.dumps({**c, "n_layer": 10**6}), InvalidConfigError, "n_layer = 1000000"),
        (lambda c: json.dumps({**c, "n_embd": -8}), InvalidConfigError, "n_embd = -8"),
        (lambda c: json.dumps({**c, "layer_norm_epsilon": 0}), InvalidConfigError, "epsilon"),
        (lambda c: json.dumps({**c, "model_type": None}), UnknownArchitectureError, "model_type"),
        (
            lambda c: json.dumps({**c, "model_type": "no_such_type"}),
            UnknownArchitectureError,
            "no_such_type",
        ),
    ],
)
def test_bad_config_json_is_a_typed_error_naming_it(
    tiny_checkpoint, tmp_path: Path, edit, error, expected
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(edit(config))
    with pytest.raises(error) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert "config.json" in str(info.value) and expected in str(info.value)


def test_untied_config_without_lm_head_is_refused(tiny_checkpoint, tmp_path: Path) -> None:
    folder, hf = tiny_checkpoint("llama")
    assert hf.config.tie_word_embeddings is False
    ckpt = copy_checkpoint(folder, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as info:
        HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert "tie_word_embeddings=false" in str(info.value) and "lm_head.weight" in str(info.value)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    model = HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert torch.equal(model.W_U, model.W_E.T)


# -- a live model and its files -------------------------------------------------------------------


def test_replacing_the_file_by_rename_leaves_a_live_model_alone(
    tiny_checkpoint, tmp_path: Path
) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    model = HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    before = model.W_E.clone()
    tensors = {k: torch.zeros_like(v) for k, v in load_file(ckpt / "model.safetensors").items()}
    save_file(tensors, tmp_path / "new.safetensors")
    os.replace(tmp_path / "new.safetensors", ckpt / "model.safetensors")
    assert torch.equal(model.W_E, before)


# -- the demo -------------------------------------------------------------------------------------


def test_tlcore_demo_prints_typed_errors_as_one_line(tiny_checkpoint, tmp_path: Path) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    ckpt = copy_checkpoint(folder, tmp_path)
    (ckpt / "model.safetensors").write_bytes(b"\x01\x00")
    result = subprocess.run(
        [sys.executable, "-m", "tlcore.cli", "demo", "--model", str(ckpt), "--no-report"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "TLCORE_DISABLE_PLUGIN_AUTOLOAD": "1",  # installed plugins' warnings aside
        },
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tlcore")]
    assert len(lines) == 1, result.stderr  # (transformers' own log lines aside)
    assert lines[0].startswith("tlcore demo: error: CheckpointFormatError: ")
    assert "model.safetensors" in lines[0]


def test_every_checkpoint_error_is_a_tlcore_error() -> None:
    assert issubclass(CheckpointFormatError, TlcoreError) and issubclass(
        CheckpointFormatError, ValueError
    )


# -- GGUF -----------------------------------------------------------------------------------------


def tiny_gguf(path: Path, heads=4, layers: object = 1, eps: object = 1e-5) -> Path:
    import numpy as np

    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", layers) if isinstance(layers, int) else (
        writer.add_string("llama.block_count", str(layers))
    )
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(48)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(eps)
    writer.add_tensor("token_embd.weight", np.zeros((40, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_valid_tiny_gguf_parses(tmp_path: Path) -> None:
    from tlcore.loading.gguf import GGUFSource

    source = GGUFSource(tiny_gguf(tmp_path / "ok.gguf"))
    assert source.hf_config()["num_attention_heads"] == 4
    assert source.keys() == {"model.embed_tokens.weight", "model.norm.weight"}


@pytest.mark.parametrize("keep", [0, 3, 12, 23, 40, 200, -9])
def test_truncated_gguf_files_are_typed_errors(tmp_path: Path, keep: int) -> None:
    from tlcore.loading.gguf import GGUFSource

    path = tiny_gguf(tmp_path / "t.gguf")
    blob = path.read_bytes()
    path.write_bytes(blob[:keep] if keep >= 0 else blob[:keep])
    with pytest.raises(CheckpointFormatError) as info:
        GGUFSource(path)
    assert "t.gguf" in str(info.value)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (lambda b: b"GGUX" + b[4:], "not a GGUF file"),
        (lambda b: b[:4] + struct.pack("<I", 99) + b[8:], "version 99"),
        (lambda b: b[:8] + struct.pack("<Q", 2**40) + b[16:], "declares"),
        (lambda b: b[:16] + struct.pack("<Q", 2**60) + b[24:], "declares"),
    ],
)
def test_corrupt_gguf_headers(tmp_path: Path, patch, expected) -> None:
    from tlcore.loading.gguf import GGUFSource

    path = tiny_gguf(tmp_path / "c.gguf")
    path.write_bytes(patch(path.read_bytes()))
    with pytest.raises(CheckpointFormatError, match=expected):
        GGUFSource(path)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"heads": 0}, "num_attention_heads = 0"),
        ({"layers": 1_000_000}, "num_hidden_layers = 1000000"),
        ({"eps": 0.0}, "rms_norm_eps = 0.0"),
        ({"layers": "two"}, "num_hidden_layers = 'two'"),
    ],
)
def test_gguf_metadata_values_are_checked(tmp_path: Path, kwargs, expected) -> None:
    from tlcore.loading.gguf import GGUFSource

    path = tiny_gguf(tmp_path / "m.gguf", **kwargs)
    with pytest.raises(InvalidConfigError) as info:
        GGUFSource(path)
    assert "m.gguf" in str(info.value) and expected in str(info.value)

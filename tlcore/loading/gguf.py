"""GGUF files (llama.cpp's format) as checkpoint sources, and a one-time safetensors conversion.

A GGUF file holds quantised tensors under llama.cpp's names plus the model's config and tokenizer
as metadata. :class:`GGUFSource` presents it as an ordinary tlcore checkpoint: HF Llama tensor
names, float32 tensors, an HF ``config.json`` dict and a transformers tokenizer, so the normal spec
weight map applies. :func:`convert_gguf_to_safetensors` writes that view to a cache folder once;
the folder is then a plain HF checkpoint directory that loads in well under a second.

Everything that differs between llama.cpp and HF is data (:data:`GGUF_ARCHITECTURES`), so adding
an architecture means adding a table, not code.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.config_checks import check_hf_config_values
from tlcore.errors import CheckpointFormatError, TlcoreError, UnsupportedConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class GGUFArchitecture:
    """How one llama.cpp architecture maps onto an HF one.

    Attributes:
        hf_model_type: HF ``model_type``.
        hf_architecture: HF model class name for ``architectures``.
        tensor_names: llama.cpp tensor name template → HF state-dict name template, both without
            the ``.weight``/``.bias`` suffix; ``{i}`` is the layer index.
        rotary_permuted: llama.cpp templates whose rows llama.cpp reordered for its rotary layout →
            the HF config field holding how many heads those rows form.
        config_fields: GGUF metadata key (after the ``<architecture>.`` prefix) → HF config field.
        config_defaults: HF config fields llama.cpp leaves out when they hold its default.
        hf_constants: HF config fields that are fixed for this architecture.
    """

    hf_model_type: str
    hf_architecture: str
    tensor_names: dict[str, str]
    rotary_permuted: dict[str, str]
    config_fields: dict[str, str]
    config_defaults: dict[str, Any] = field(default_factory=dict)
    hf_constants: dict[str, Any] = field(default_factory=dict)


LLAMA = GGUFArchitecture(
    hf_model_type="llama",
    hf_architecture="LlamaForCausalLM",
    tensor_names={
        "token_embd": "model.embed_tokens",
        "blk.{i}.attn_norm": "model.layers.{i}.input_layernorm",
        "blk.{i}.attn_q": "model.layers.{i}.self_attn.q_proj",
        "blk.{i}.attn_k": "model.layers.{i}.self_attn.k_proj",
        "blk.{i}.attn_v": "model.layers.{i}.self_attn.v_proj",
        "blk.{i}.attn_output": "model.layers.{i}.self_attn.o_proj",
        "blk.{i}.ffn_norm": "model.layers.{i}.post_attention_layernorm",
        "blk.{i}.ffn_gate": "model.layers.{i}.mlp.gate_proj",
        "blk.{i}.ffn_up": "model.layers.{i}.mlp.up_proj",
        "blk.{i}.ffn_down": "model.layers.{i}.mlp.down_proj",
        "output_norm": "model.norm",
        "output": "lm_head",
    },
    rotary_permuted={
        "blk.{i}.attn_q": "num_attention_heads",
        "blk.{i}.attn_k": "num_key_value_heads",
    },
    config_fields={
        "embedding_length": "hidden_size",
        "feed_forward_length": "intermediate_size",
        "block_count": "num_hidden_layers",
        "attention.head_count": "num_attention_heads",
        "attention.head_count_kv": "num_key_value_heads",
        "attention.key_length": "head_dim",
        "attention.layer_norm_rms_epsilon": "rms_norm_eps",
        "rope.freq_base": "rope_theta",
        "context_length": "max_position_embeddings",
        "vocab_size": "vocab_size",
    },
    # llama.cpp's own defaults when a key is absent (llama-model.cpp).
    config_defaults={"rope_theta": 10000.0},
    hf_constants={"hidden_act": "silu", "dtype": "float32"},
)

#: llama.cpp ``general.architecture`` → its mapping onto HF.
GGUF_ARCHITECTURES: dict[str, GGUFArchitecture] = {"llama": LLAMA}

# tokenizer.ggml.* metadata key → HF config field.
_SPECIAL_TOKEN_FIELDS = {
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "padding_token_id": "pad_token_id",
}

_REQUIRED_CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "rms_norm_eps",
    "max_position_embeddings",
)


class GGUFSource:
    """A GGUF file read as a tlcore tensor source with HF Llama names.

    Only the metadata and the tensor table are parsed on construction (a few seconds); each tensor
    is read and dequantised (with the ``gguf`` package's own ``dequantize``) when :meth:`get` asks
    for it.

    Args:
        path: The ``.gguf`` file.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointFormatError: If the file is not a well-formed GGUF file (truncated, a bad
            header, counts or offsets past its end).
        InvalidConfigError: If a size in its metadata is zero, negative or absurd.
        UnsupportedConfigError: If the file's architecture, rotary scaling or one of its tensors
            has no HF equivalent here.

    Example:
        >>> from tlcore_offline_models import find_smollm2_gguf
        >>> source = GGUFSource(find_smollm2_gguf())  # SmolLM2-135M-Instruct.Q4_1.gguf
        >>> source.get("model.norm.weight").shape
        torch.Size([576])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self._reader = read_gguf(self.path)
        arch_name = self._metadata("general.architecture")
        if arch_name not in GGUF_ARCHITECTURES:
            raise UnsupportedConfigError(
                f"{self.path.name}: GGUF architecture {arch_name!r} is not supported "
                f"(supported: {', '.join(sorted(GGUF_ARCHITECTURES))}). Convert the model to an HF "
                "checkpoint (config.json + safetensors) to load it through its spec."
            )
        self._arch_name: str = arch_name
        self._arch = GGUF_ARCHITECTURES[arch_name]
        self._sha256: str | None = None
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        try:
            self._config = self._build_config()
            self._index = self._build_index()
        except TlcoreError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise CheckpointFormatError(
                f"{self.path.name}: GGUF metadata of the wrong type or shape "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def keys(self) -> set[str]:
        """Return the HF state-dict names of every tensor in the file.

        Returns:
            HF in-memory Llama names; ``lm_head.weight`` only if the file has an output matrix.
        """
        return set(self._index)

    def get(self, key: str) -> torch.Tensor:
        """Read, dequantise and return one tensor.

        Args:
            key: An HF state-dict name from :meth:`keys`.

        Returns:
            A float32 tensor in HF layout (llama.cpp's rotary row order undone for Q and K).

        Raises:
            KeyError: If the file has no tensor under that name.
        """
        import numpy as np
        import torch
        from gguf import dequantize

        if key not in self._index:
            close = difflib.get_close_matches(key, self._index, n=3)
            raise KeyError(f"{self.path.name} has no tensor {key!r}; close matches: {close}")
        tensor, heads_field = self._index[key]
        try:
            # np.array copies: the F32 path returns a read-only view into the memory map.
            weights = torch.from_numpy(
                np.array(dequantize(tensor.data, tensor.tensor_type), np.float32)
            )
            if heads_field is not None:
                weights = _undo_rotary_permutation(weights, self._config[heads_field])
        except Exception as exc:  # noqa: BLE001 - corrupt tensor bytes or a shape that lies
            raise CheckpointFormatError(
                f"{self.path.name}: tensor {tensor.name!r} ({key}) cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return weights

    def shape(self, key: str) -> tuple[int, ...]:
        """Return a tensor's shape without reading it.

        Args:
            key: An HF state-dict name from :meth:`keys`.

        Returns:
            The shape :meth:`get` will return, in torch order.
        """
        # ggml lists dimensions fastest-moving first; torch the other way round.
        return tuple(int(d) for d in reversed(self._index[key][0].shape))

    def hf_config(self) -> dict[str, Any]:
        """Return the model's HF ``config.json`` as a dict, built from the GGUF metadata.

        Returns:
            A fresh dict that ``transformers.AutoConfig.for_model(**d)`` accepts.
        """
        return copy.deepcopy(self._config)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Build the tokenizer stored in the file's metadata (transformers' GGUF conversion).

        Returns:
            A new transformers fast tokenizer (a few seconds per call: it re-parses the file).
        """
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)

    def file_hash(self) -> str:
        """Return the SHA-256 of the file (hex), computed once per source.

        Returns:
            The hex digest.
        """
        if self._sha256 is None:
            self._sha256 = _sha256(self.path)
        return self._sha256

    def __repr__(self) -> str:
        return f"GGUFSource({str(self.path)!r}, architecture={self._arch_name!r})"

    def _metadata(self, key: str, default: Any = None) -> Any:
        field_ = self._reader.fields.get(key)
        if field_ is None:
            return default
        try:
            return field_.contents()
        except Exception as exc:  # noqa: BLE001 - gguf decodes untrusted bytes
            raise CheckpointFormatError(
                f"{self.path.name}: GGUF metadata key {key!r} cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _build_config(self) -> dict[str, Any]:
        arch, prefix = self._arch, self._arch_name + "."
        config: dict[str, Any] = {"architectures": [arch.hf_architecture]}
        config["model_type"] = arch.hf_model_type
        config |= arch.hf_constants
        config |= arch.config_defaults
        for gguf_key, hf_field in arch.config_fields.items():
            value = self._metadata(prefix + gguf_key)
            if value is not None:
                config[hf_field] = _from_gguf_scalar(value)
        missing = [name for name in _REQUIRED_CONFIG_FIELDS if name not in config]
        if missing:
            raise UnsupportedConfigError(
                f"{self.path.name}: GGUF metadata lacks the keys for {missing}; looked for "
                f"{[prefix + k for k, v in arch.config_fields.items() if v in missing]}"
            )
        check_hf_config_values(config, f"{self.path.name} (GGUF metadata)")
        config.setdefault("num_key_value_heads", config["num_attention_heads"])
        config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
        if "vocab_size" not in config:
            if "token_embd.weight" not in self._tensors:
                raise UnsupportedConfigError(f"{self.path.name}: no token_embd.weight tensor")
            # ggml order: the vocabulary is the slow (last) dimension.
            config["vocab_size"] = int(self._tensors["token_embd.weight"].shape[-1])
        self._check_rope(prefix, config)
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": config["rope_theta"]}

        config["tie_word_embeddings"] = "output.weight" not in self._tensors
        config["attention_bias"] = "blk.0.attn_q.bias" in self._tensors
        config["mlp_bias"] = "blk.0.ffn_up.bias" in self._tensors
        for gguf_key, hf_field in _SPECIAL_TOKEN_FIELDS.items():
            value = self._metadata("tokenizer.ggml." + gguf_key)
            if value is not None:
                config[hf_field] = int(value)
        return config

    def _check_rope(self, prefix: str, config: dict[str, Any]) -> None:
        # Scaled rotary (linear, YaRN, Llama 3's rope_freqs tensor) changes every position's
        # angles; loading it as plain RoPE would run without error and give wrong logits.
        scaling = self._metadata(prefix + "rope.scaling.type", "none")
        if scaling != "none":
            raise UnsupportedConfigError(
                f"{self.path.name}: rotary scaling {scaling!r} (GGUF {prefix}rope.scaling.type) "
                "is not supported for GGUF files"
            )
        if "rope_freqs.weight" in self._tensors:
            raise UnsupportedConfigError(
                f"{self.path.name}: a rope_freqs tensor (Llama 3 rotary scaling) is not supported "
                "for GGUF files"
            )
        rotary_dim = self._metadata(prefix + "rope.dimension_count")
        if rotary_dim is not None and int(rotary_dim) != config["head_dim"]:
            raise UnsupportedConfigError(
                f"{self.path.name}: partial rotary ({prefix}rope.dimension_count={rotary_dim}, "
                f"head_dim={config['head_dim']}) is not supported for architecture "
                f"{self._arch_name!r}"
            )

    def _build_index(self) -> dict[str, tuple[Any, str | None]]:
        patterns = [
            (_template_regex(gguf), hf, self._arch.rotary_permuted.get(gguf))
            for gguf, hf in self._arch.tensor_names.items()
        ]
        index: dict[str, tuple[Any, str | None]] = {}
        unknown = []
        for tensor in self._tensors.values():
            for regex, hf_template, heads_field in patterns:
                match = regex.fullmatch(tensor.name)
                if match:
                    hf_name = hf_template.format(**match.groupdict())
                    index[f"{hf_name}.{match.group('suffix')}"] = (tensor, heads_field)
                    break
            else:
                unknown.append(tensor.name)
        if unknown:
            raise UnsupportedConfigError(
                f"{self.path.name}: GGUF tensors with no HF {self._arch.hf_architecture} "
                f"equivalent: {unknown}"
            )
        return index


_GGUF_MAGIC = b"GGUF"
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


def check_gguf_header(path: Path) -> None:
    """Check a GGUF file's fixed header before gguf-py parses it.

    The magic, a version gguf-py reads (2 or 3), and tensor and key counts that fit in the file
    (each entry takes a minimum number of bytes), so a corrupt count cannot make parsing run for
    long.

    Args:
        path: The file.

    Raises:
        CheckpointFormatError: Naming the file and what is wrong.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read: {exc}") from exc
    if len(head) < 24 or head[:4] != _GGUF_MAGIC:
        raise CheckpointFormatError(
            f"{path}: not a GGUF file ({size} bytes; a GGUF file starts with b'GGUF', a version "
            f"and two counts)"
        )
    for order in "<>":  # gguf-py reads either byte order
        version, n_tensors, n_kv = struct.unpack(order + "IQQ", head[4:24])
        if version in (2, 3):
            break
    else:
        (version,) = struct.unpack("<I", head[4:8])
        raise CheckpointFormatError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    room = size - 24
    if n_tensors * _MIN_TENSOR_INFO_BYTES + n_kv * _MIN_KV_BYTES > room:
        raise CheckpointFormatError(
            f"{path}: GGUF header declares {n_tensors} tensors and {n_kv} metadata keys, more "
            f"than its {size} bytes can hold (truncated or corrupt)"
        )


def read_gguf(path: Path) -> Any:
    """Parse a GGUF file with gguf-py, after :func:`check_gguf_header`.

    Args:
        path: The file.

    Returns:
        A ``gguf.GGUFReader``.

    Raises:
        CheckpointFormatError: If the file is malformed (whatever gguf-py raised, with the file
            name).
    """
    from gguf import GGUFReader

    check_gguf_header(path)
    try:
        return GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf-py raises many types on corrupt bytes
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointFormatError(
            f"{path}: malformed GGUF file ({type(exc).__name__}: {reason})"
        ) from exc


def tlcore_cache_dir() -> Path:
    """Return tlcore's cache root.

    Returns:
        ``$TLCORE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tlcore``, else ``~/.cache/tlcore``.
    """
    if os.environ.get("TLCORE_CACHE_DIR"):
        return Path(os.environ["TLCORE_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tlcore"


def convert_gguf_to_safetensors(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Convert a GGUF file once into a cached HF checkpoint folder, and return that folder.

    The folder, ``<cache root>/gguf/<first 16 hex digits of the file's SHA-256>/``, holds
    ``config.json``, ``model.safetensors`` (float32, HF names) and the tokenizer files. It is
    written under a temporary name and renamed into place, so it either exists complete or not at
    all; a later call only hashes the file and returns it.

    Args:
        path: The ``.gguf`` file.
        cache_dir: Cache root to use instead of :func:`tlcore_cache_dir`.

    Returns:
        The checkpoint folder.

    Raises:
        UnsupportedConfigError: If the file cannot be read as a supported architecture.

    Example:
        >>> from tlcore_offline_models import find_smollm2_gguf
        >>> folder = convert_gguf_to_safetensors(find_smollm2_gguf())  # cached after the first
        >>> sorted(p.name for p in folder.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['chat_template.jinja', 'config.json', 'model.safetensors', 'tokenizer.json',
         'tokenizer_config.json']
    """
    path = Path(path)
    digest = _sha256(path)
    root = Path(cache_dir).expanduser() if cache_dir is not None else tlcore_cache_dir()
    target = root / "gguf" / digest[:16]
    if _is_complete(target):
        return target

    source = GGUFSource(path)
    source._sha256 = digest  # already streamed once above
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent)
    )
    try:
        (staging / "config.json").write_text(json.dumps(source.hf_config(), indent=2) + "\n")
        source.tokenizer().save_pretrained(staging)
        file_metadata = {"format": "pt", "source": "gguf", "gguf_sha256": digest}
        _write_safetensors(staging / "model.safetensors", source, file_metadata)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Move a finished staging folder to ``target`` in one rename."""
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # damaged by hand; ours to replace
    try:
        staging.rename(target)
    except OSError:
        # A concurrent conversion of the same file got there first; its result is identical.
        if not _is_complete(target):
            raise


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _write_safetensors(file: Path, source: GGUFSource, file_metadata: dict[str, str]) -> None:
    """Write every tensor of ``source`` as float32 safetensors, one tensor in memory at a time.

    ``safetensors.torch.save_file`` needs the whole state dict in memory (517 MB for SmolLM2);
    the format is simple enough to stream: a little-endian u64 header length, a JSON header of
    shapes and byte offsets (space-padded to 8 bytes), then the raw tensor bytes in that order.
    """
    from tqdm.auto import tqdm

    keys = sorted(source.keys())
    header: dict[str, Any] = {"__metadata__": file_metadata}
    offset = 0
    for key in keys:
        shape = source.shape(key)
        size = 4 * math.prod(shape)
        header[key] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    with open(file, "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for key in tqdm(keys, desc=f"Converting {source.path.name}", unit="tensor"):
            tensor = source.get(key).contiguous()
            if tuple(tensor.shape) != tuple(header[key]["shape"]):
                raise RuntimeError(f"{key}: read {tuple(tensor.shape)}, expected {header[key]}")
            out.write(tensor.numpy().astype("<f4", copy=False).tobytes())


def _undo_rotary_permutation(weights: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of Q/K rows.

    llama.cpp's converter stores each head's rows interleaved (pairs of rotary halves), as its
    rotary kernel wants; HF keeps the two halves apart (``rotate_half``). Its permute is
    ``w.reshape(n_heads, 2, d/2, ...).swapaxes(1, 2)``; this is the inverse.
    """
    shape = weights.shape
    return (
        weights.reshape(n_heads, shape[0] // n_heads // 2, 2, *shape[1:])
        .transpose(1, 2)
        .reshape(shape)
    )


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile(pattern + r"\.(?P<suffix>weight|bias)")


def _from_gguf_scalar(value: Any) -> Any:
    """Python value of a GGUF scalar; float32 values become their shortest decimal.

    GGUF stores floats as float32, so an epsilon written as 1e-5 reads back as
    9.999999747378752e-06; the shortest float32 repr gives back what the original config said.
    """
    import numpy as np

    if isinstance(value, (float, np.floating)):
        return float(str(np.float32(value)))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

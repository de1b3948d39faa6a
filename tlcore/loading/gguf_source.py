"""A GGUF file read as a tlcore tensor source: HF tensor names, float32 tensors, HF config."""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.config_checks import check_hf_config_values
from tlcore.errors import CheckpointFormatError, TlcoreError, UnsupportedConfigError
from tlcore.loading.gguf_file import file_sha256, read_gguf
from tlcore.loading.gguf_tables import (
    GGUF_ARCHITECTURES,
    REQUIRED_CONFIG_FIELDS,
    SPECIAL_TOKEN_FIELDS,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


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
            self._sha256 = file_sha256(self.path)
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
        missing = [name for name in REQUIRED_CONFIG_FIELDS if name not in config]
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
        for gguf_key, hf_field in SPECIAL_TOKEN_FIELDS.items():
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

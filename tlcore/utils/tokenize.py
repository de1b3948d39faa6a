"""Token-level helpers: dataset tokenization, BOS and padding handling, small tensor utilities.

These keep TransformerLens 2.x's names and signatures (``transformer_lens.utils``). Nothing here
imports ``transformers`` or ``datasets``: tokenizers are used through their call interface and
HuggingFace datasets are recognised by duck typing, so neither is a dependency.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "TokenizedDataset",
    "get_cumsum_along_dim",
    "get_device",
    "get_input_with_manually_prepended_bos",
    "get_offset_position_ids",
    "get_tokens_with_bos_removed",
    "keep_single_column",
    "remove_batch_dim",
    "to_numpy",
    "tokenize_and_concatenate",
]

# `datasets.Dataset.map(batched=True)` hands over this many rows at a time; the list path uses the
# same batches so both paths drop the same partial sequences.
_MAP_BATCH_SIZE = 1000


def to_numpy(tensor: Any) -> np.ndarray:
    """Convert a tensor, parameter, list, tuple, NumPy array or Python scalar to a NumPy array.

    Tensors are detached and moved to the CPU first; bfloat16 (which NumPy lacks) becomes float32.

    Args:
        tensor: The value to convert.

    Returns:
        A NumPy array (the input itself if it already is one).

    Raises:
        ValueError: If the input has another type.

    Examples:
        >>> to_numpy(torch.tensor([1.0, 2.0], requires_grad=True))
        array([1., 2.], dtype=float32)
        >>> to_numpy([[1, 2], [3, 4]]).shape
        (2, 2)
    """
    if isinstance(tensor, np.ndarray):
        return tensor
    if isinstance(tensor, (list, tuple)):
        return np.array(tensor)
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(tensor, (int, float, bool, str)):
        return np.array(tensor)
    raise ValueError(f"Input to to_numpy has invalid type: {type(tensor)}")


def remove_batch_dim(tensor: Float[torch.Tensor, "1 ..."]) -> Float[torch.Tensor, "..."]:
    """Drop the first dimension if it has size 1; otherwise return the tensor unchanged.

    Examples:
        >>> remove_batch_dim(torch.zeros(1, 3, 4)).shape
        torch.Size([3, 4])
        >>> remove_batch_dim(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    if tensor.shape[0] == 1:
        return tensor.squeeze(0)
    return tensor


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    Examples:
        >>> get_device().type in {"cuda", "mps", "cpu"}
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available() and torch.backends.mps.is_built():
        return torch.device("mps")
    return torch.device("cpu")


def get_cumsum_along_dim(tensor: torch.Tensor, dim: int, reverse: bool = False) -> torch.Tensor:
    """Cumulative sum along ``dim``, from the end backwards if ``reverse``.

    Examples:
        >>> get_cumsum_along_dim(torch.tensor([1, 0, 1, 0]), -1, reverse=True)
        tensor([2, 1, 1, 0])
    """
    if reverse:
        return tensor.flip(dims=(dim,)).cumsum(dim=dim).flip(dims=(dim,))
    return tensor.cumsum(dim=dim)


def get_offset_position_ids(
    past_kv_pos_offset: int,
    attention_mask: Int[torch.Tensor, "batch offset_pos"],
) -> Int[torch.Tensor, "batch pos"]:
    """Padding-aware position ids: the first attended token of each row gets position 0.

    Positions count attended tokens (``cumsum(mask) - 1``); leading pads, which would get -1, are
    clamped to 0 so they still index a valid embedding. Only the positions from
    ``past_kv_pos_offset`` on are returned, for generation with a key-value cache.

    Args:
        past_kv_pos_offset: How many positions are already in the key-value cache.
        attention_mask: 1 for real tokens, 0 for padding, over cached and new positions.

    Returns:
        Position ids of the new positions, ``[batch, offset_pos - past_kv_pos_offset]``.

    Examples:
        >>> mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
        >>> get_offset_position_ids(0, mask)
        tensor([[0, 0, 0, 1, 2],
                [0, 1, 2, 3, 4]])
        >>> get_offset_position_ids(3, mask)
        tensor([[1, 2],
                [3, 4]])
    """
    shifted_position_ids = attention_mask.cumsum(dim=1) - 1
    position_ids = shifted_position_ids.clamp(min=0)
    return position_ids[:, past_kv_pos_offset:]


def get_input_with_manually_prepended_bos(
    tokenizer: PreTrainedTokenizerBase, input: str | list[str]
) -> str | list[str]:
    """Prepend the tokenizer's BOS token, as text, to a string or to each string of a list.

    Examples:
        >>> from types import SimpleNamespace
        >>> tok = SimpleNamespace(bos_token="<s>")
        >>> get_input_with_manually_prepended_bos(tok, ["hi", "yo"])
        ['<s>hi', '<s>yo']
    """
    bos = tokenizer.bos_token
    if not isinstance(bos, str):
        raise ValueError("The tokenizer has no BOS token to prepend")
    if isinstance(input, str):
        return bos + input
    return [bos + string for string in input]


def get_tokens_with_bos_removed(
    tokenizer: PreTrainedTokenizerBase, tokens: Int[torch.Tensor, "... pos"]
) -> Int[torch.Tensor, "... pos_minus_1"]:
    """Remove the BOS token from each sequence of a (possibly padded) token tensor.

    With right padding BOS is the first token. With left padding it is the first token after the
    leading pads; when the pad and BOS tokens are the same id, that is the last of the leading
    run of pad ids.

    Args:
        tokenizer: Supplies ``padding_side``, ``bos_token_id`` and ``pad_token_id``.
        tokens: Token ids whose last dimension is the sequence; every row must contain a BOS.

    Returns:
        The tokens with one position fewer.

    Examples:
        >>> from types import SimpleNamespace
        >>> tok = SimpleNamespace(padding_side="left", bos_token_id=1, pad_token_id=0)
        >>> get_tokens_with_bos_removed(tok, torch.tensor([[0, 0, 1, 5], [1, 5, 6, 7]]))
        tensor([[0, 0, 5],
                [5, 6, 7]])
    """
    if tokenizer.padding_side == "right":
        return tokens[..., 1:]
    if tokenizer.bos_token_id == tokenizer.pad_token_id:
        is_not_pad = tokens.ne(tokenizer.pad_token_id)
        is_leading_pad = get_cumsum_along_dim(is_not_pad, -1) == 0
        bos_positions = is_leading_pad.sum(-1) - 1
    else:
        bos_positions = (tokens == tokenizer.bos_token_id).int().argmax(-1)
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep.scatter_(-1, bos_positions.unsqueeze(-1), False)
    return tokens[keep].view(*tokens.shape[:-1], tokens.shape[-1] - 1)


class TokenizedDataset(Dataset):
    """Fixed-length token sequences, indexed like a HuggingFace dataset in torch format.

    ``ds["tokens"]`` is the whole ``[n_sequences, max_length]`` tensor; ``ds[i]`` is
    ``{"tokens": row}``, so a ``torch.utils.data.DataLoader`` yields ``batch["tokens"]``.

    Attributes:
        tokens: The token ids, ``[n_sequences, max_length]``.
    """

    column_names = ["tokens"]

    def __init__(self, tokens: Int[torch.Tensor, "n_sequences max_length"]) -> None:
        """Wrap a tensor of token sequences."""
        self.tokens = tokens

    def __len__(self) -> int:
        """Number of sequences."""
        return self.tokens.shape[0]

    def __getitem__(self, key: Any) -> Any:
        """``ds["tokens"]`` gives the tensor; an int, slice or index tensor gives a dict."""
        if isinstance(key, str):
            if key != "tokens":
                raise KeyError(f"{key!r}: the only column is 'tokens'")
            return self.tokens
        return {"tokens": self.tokens[key]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate over rows as ``{"tokens": row}``."""
        for row in self.tokens:
            yield {"tokens": row}

    def __repr__(self) -> str:
        """Name, number of rows and sequence length."""
        n, length = self.tokens.shape
        return f"TokenizedDataset(num_rows={n}, max_length={length})"


def _is_hf_dataset(dataset: Any) -> bool:
    return type(dataset).__module__.split(".")[0] == "datasets" and hasattr(dataset, "map")


def keep_single_column(dataset: Any, col_name: str) -> Any:
    """Remove every column but ``col_name`` from a HuggingFace dataset.

    Args:
        dataset: A ``datasets.Dataset`` or ``datasets.IterableDataset``.
        col_name: The column to keep.

    Returns:
        The dataset with only that column (when its columns are known).
    """
    columns = getattr(dataset, "column_names", None)
    if not columns:
        return dataset
    others = [c for c in columns if c != col_name]
    return dataset.remove_columns(others) if others else dataset


def _texts_from(dataset: Any, column_name: str) -> list[str]:
    """Collect texts from a list of strings, a list of rows, or a ``{column: texts}`` mapping."""
    if isinstance(dataset, str):
        raise TypeError("tokenize_and_concatenate needs a collection of texts, not one string")
    if isinstance(dataset, Mapping):
        dataset = dataset[column_name]
    texts = [row[column_name] if isinstance(row, Mapping) else row for row in dataset]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"Expected texts (str), got an item of type {type(bad).__name__}")
    return texts


def tokenize_and_concatenate(
    dataset: Any,
    tokenizer: PreTrainedTokenizerBase,
    streaming: bool = False,
    max_length: int = 1024,
    column_name: str = "text",
    add_bos_token: bool = True,
    num_proc: int = 10,
) -> Any:
    """Tokenize texts, join them with EOS and cut the stream into fixed-length sequences.

    Within each batch of 1000 texts (as ``datasets.Dataset.map`` batches them), the texts are
    tokenized, joined with the EOS token id and cut into rows of ``max_length`` tokens (one less
    when a BOS is added in front of each row); the partial last row is dropped, except that a batch
    shorter than one row becomes a single row padded with the pad (else EOS) id. Training on such
    packed rows wastes no compute on padding and does not favour early positions.

    Differences from TransformerLens, all fixing its quirks: texts are tokenized one by one rather
    than as 20 character chunks of the joined text (which could split words and the EOS marker);
    the tokenizer's own special tokens are not added (BOS comes only from ``add_bos_token``); EOS
    separators survive when the pad token equals EOS; and the tokenizer is never modified (TL
    added a ``<PAD>`` token to it).

    Args:
        dataset: A ``datasets.Dataset``/``IterableDataset`` with a text column, or (without
            ``datasets``) a list of strings, a list of row dicts, or a ``{column: texts}`` dict.
        tokenizer: A HuggingFace tokenizer with an EOS token (and BOS if ``add_bos_token``).
        streaming: Whether ``dataset`` is streamed; then it is mapped in one process.
        max_length: Length of each output sequence, BOS included.
        column_name: The text column.
        add_bos_token: Whether to start every sequence with BOS.
        num_proc: Worker processes for ``datasets.Dataset.map`` (each worker batches its own
            contiguous shard). Unused for lists, which are batched as one process would, since
            the tokenizer already encodes a batch in parallel.

    Returns:
        For a HuggingFace dataset, a dataset with a single column ``"tokens"`` in torch format
        (``result[:]["tokens"]`` is the tensor); otherwise a `TokenizedDataset`, whose
        ``result["tokens"]`` is the ``[n_sequences, max_length]`` tensor.

    Raises:
        ValueError: If the tokenizer lacks a required special token or ``max_length`` is too small.
        TypeError: If ``dataset`` holds something other than texts.

    Examples:
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from transformers import PreTrainedTokenizerFast
        >>> vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
        >>> core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tok = PreTrainedTokenizerFast(
        ...     tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
        ... )
        >>> ds = tokenize_and_concatenate(["a b c", "c b", "a a"], tok, max_length=4)
        >>> ds["tokens"]
        tensor([[0, 3, 4, 5],
                [0, 1, 5, 4],
                [0, 1, 3, 3]])
    """
    seq_len = max_length - 1 if add_bos_token else max_length
    if seq_len < 1:
        raise ValueError(f"max_length={max_length} leaves no room for tokens")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("tokenize_and_concatenate needs a tokenizer with an EOS token")
    bos_id = tokenizer.bos_token_id
    if add_bos_token and bos_id is None:
        raise ValueError("add_bos_token=True needs a tokenizer with a BOS token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id

    def tokenize_batch(texts: list[str]) -> np.ndarray:
        if not any(text.strip() for text in texts):
            return np.zeros((0, max_length), dtype=np.int64)
        encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        stream: list[int] = []
        for i, ids in enumerate(encoded):
            if i:
                stream.append(eos_id)
            stream.extend(ids)
        tokens = np.asarray(stream, dtype=np.int64)
        if len(tokens) < seq_len:
            tokens = np.concatenate([tokens, np.full(seq_len - len(tokens), pad_id)])
        n_rows = len(tokens) // seq_len
        rows = tokens[: n_rows * seq_len].reshape(n_rows, seq_len)
        if add_bos_token:
            rows = np.concatenate([np.full((n_rows, 1), bos_id, dtype=np.int64), rows], axis=1)
        return rows

    if _is_hf_dataset(dataset):
        dataset = keep_single_column(dataset, column_name)
        map_kwargs: dict[str, Any] = {} if streaming else {"num_proc": num_proc}
        tokenized = dataset.map(
            lambda batch: {"tokens": tokenize_batch(batch[column_name])},
            batched=True,
            remove_columns=[column_name],
            **map_kwargs,
        )
        if hasattr(tokenized, "set_format"):
            tokenized.set_format(type="torch", columns=["tokens"])
            return tokenized
        return tokenized.with_format("torch")

    texts = _texts_from(dataset, column_name)
    parts = [
        tokenize_batch(texts[start : start + _MAP_BATCH_SIZE])
        for start in range(0, len(texts), _MAP_BATCH_SIZE)
    ]
    tokens = np.concatenate(parts) if parts else np.zeros((0, max_length), dtype=np.int64)
    return TokenizedDataset(torch.from_numpy(tokens))

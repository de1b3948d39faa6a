"""`Slice`: TransformerLens's one-dimension slicing helper.

Python and torch indexing cannot express "take these positions" as one value that can be stored,
passed around and applied to any dimension; `Slice` can. It is used for ``pos_slice`` (positions
kept by ``run_with_cache``) and ``batch_slice`` (``ActivationCache.apply_slice_to_batch_dim``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Shaped

SliceInput = (
    None
    | int
    | slice
    | tuple[int]
    | tuple[int, int]
    | tuple[int, int, int]
    | list[int]
    | torch.Tensor
    | np.ndarray
)
"""What a `Slice` can be built from.

- ``None``: keep everything (identity).
- ``int``: index one position (the dimension disappears).
- ``tuple``: the arguments of a Python ``slice``: ``(k,)`` is ``[:k]``, ``(m, k)`` is ``[m:k]``,
  ``(m, k, n)`` is ``[m:k:n]``.
- ``slice``: used as is.
- ``list``, ``torch.Tensor`` or ``np.ndarray``: indices (or a boolean mask) to take.
"""

SliceMode = Literal["identity", "int", "slice", "array"]


class Slice:
    """A stored selection along one dimension, with TransformerLens's semantics.

    Args:
        input_slice: What to select; see `SliceInput`.

    Raises:
        ValueError: If ``input_slice`` is none of the accepted types.

    Examples:
        >>> import torch
        >>> x = torch.arange(10)
        >>> Slice(3).apply(x)
        tensor(3)
        >>> Slice((2, 5)).apply(x)
        tensor([2, 3, 4])
        >>> Slice([1, 4]).apply(x)
        tensor([1, 4])
        >>> Slice(None).apply(x).shape
        torch.Size([10])
        >>> Slice((1, 8, 3)).indices(10)
        array([1, 4, 7])
    """

    slice: int | slice | np.ndarray
    mode: SliceMode

    def __init__(self, input_slice: SliceInput = None) -> None:
        # bool is an int subclass; a True/False "position" is always a caller's mistake.
        if isinstance(input_slice, bool):
            raise ValueError(f"Invalid input_slice {input_slice!r}: a bool is not a position")
        if isinstance(input_slice, tuple):
            self.slice = slice(*input_slice)
            self.mode = "slice"
        elif isinstance(input_slice, int):
            self.slice = input_slice
            self.mode = "int"
        elif isinstance(input_slice, slice):
            self.slice = input_slice
            self.mode = "slice"
        elif isinstance(input_slice, (list, torch.Tensor, np.ndarray)):
            self.slice = _to_numpy(input_slice)
            self.mode = "array"
        elif input_slice is None:
            self.slice = slice(None)
            self.mode = "identity"
        else:
            raise ValueError(f"Invalid input_slice {input_slice!r}")

    def apply(self, tensor: Shaped[torch.Tensor, "..."], dim: int = 0) -> torch.Tensor:
        """Apply the selection to one dimension of a tensor.

        Args:
            tensor: The tensor to slice.
            dim: The dimension to slice; negative values count from the end.

        Returns:
            The sliced tensor. An ``int`` selection removes the dimension; the others keep it.
        """
        index: list[Any] = [slice(None)] * tensor.ndim
        index[dim] = self.slice
        return tensor[tuple(index)]

    def indices(self, max_ctx: int | None = None) -> np.ndarray:
        """The indices this selection takes from a dimension of length ``max_ctx``.

        Args:
            max_ctx: The length of the dimension; not needed for an ``int`` selection.

        Returns:
            The selected indices as an int64 array (``array([4])`` for ``Slice(4)``).

        Raises:
            ValueError: If ``max_ctx`` is missing for a selection that is not an ``int``.
        """
        if self.mode == "int":
            return np.array([self.slice], dtype=np.int64)
        if max_ctx is None:
            raise ValueError("max_ctx must be specified if slice is not an integer")
        return np.arange(max_ctx, dtype=np.int64)[self.slice]

    def __repr__(self) -> str:
        return f"Slice: {self.slice} Mode: {self.mode} "

    @classmethod
    def unwrap(cls, slice_input: Slice | SliceInput) -> Slice:
        """Turn a `SliceInput` into a `Slice`, keeping the dimension for an ``int``.

        Used for ``pos_slice``: a single position is stored as ``[pos]`` so cached activations keep
        their position dimension, as in TransformerLens.

        Args:
            slice_input: A `Slice` (returned unchanged) or anything `Slice` accepts.

        Returns:
            A `Slice`.

        Examples:
            >>> Slice.unwrap(-1).mode
            'array'
            >>> s = Slice(2)
            >>> Slice.unwrap(s) is s
            True
        """
        if isinstance(slice_input, Slice):
            return slice_input
        if isinstance(slice_input, int) and not isinstance(slice_input, bool):
            slice_input = [slice_input]
        return Slice(slice_input)


def _to_numpy(values: list | torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    # np.asarray([]) is float64, which torch refuses as an index.
    return array.astype(np.int64) if array.size == 0 else array

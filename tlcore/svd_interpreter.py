"""Read weight matrices' singular vectors as tokens, as TransformerLens 2.x's ``SVDInterpreter``.

For a head's OV circuit or an MLP's input or output weights, take the top right singular vectors
(directions in the residual stream) and map each through the unembedding, giving one logit per
vocabulary token: the tokens a direction most promotes. (See "The Singular Value Decompositions of
Transformer Weight Matrices are Highly Interpretable", Millidge & Black, 2022.)

Example:
    >>> import torch
    >>> from tlcore import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=30,
    ...                                n_ctx=8, act_fn="relu"))
    >>> vectors = SVDInterpreter(model).get_singular_vectors("OV", 0, num_vectors=4, head_index=1)
    >>> vectors.shape  # [d_vocab, 1, num_vectors]
    torch.Size([30, 1, 4])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float

from tlcore.factored_matrix import FactoredMatrix

if TYPE_CHECKING:
    from tlcore.model import HookedTransformer

__all__ = ["OUTPUT_EMBEDDING", "SVDInterpreter", "VECTOR_TYPES"]

OUTPUT_EMBEDDING = "unembed.W_U"
VECTOR_TYPES = ["OV", "w_in", "w_out"]


class SVDInterpreter:
    """Singular vectors of a model's OV circuits and MLP weights, projected onto the vocabulary."""

    def __init__(self, model: HookedTransformer) -> None:
        self.model = model
        self.cfg = model.cfg
        self.params = dict(model.named_parameters())

    def get_singular_vectors(
        self,
        vector_type: Literal["OV", "w_in", "w_out"],
        layer_index: int,
        num_vectors: int = 10,
        head_index: int | None = None,
    ) -> Float[torch.Tensor, "d_vocab 1 num_vectors"]:
        """The top right singular vectors of a weight matrix, each mapped through ``W_U``.

        - ``"OV"``: the head's ``W_V[head] @ W_O[head]`` (``[d_model, d_model]``); its right
          singular vectors are what the head writes.
        - ``"w_in"``: ``W_in.T`` (``[d_mlp, d_model]``), times the ``ln2`` weights when they are
          not folded; right singular vectors are what the MLP reads.
        - ``"w_out"``: ``W_out`` (``[d_mlp, d_model]``); right singular vectors are what it writes.

        Singular vectors are defined up to sign, and the sign can differ across devices and
        library versions.

        Args:
            vector_type: ``"OV"``, ``"w_in"`` or ``"w_out"``.
            layer_index: The block.
            num_vectors: How many vectors, largest singular value first.
            head_index: The head (required for ``"OV"``; a query head under GQA, whose key/value
                head supplies ``W_V``).

        Returns:
            ``[d_vocab, 1, num_vectors]``: column ``i`` is singular vector ``i`` @ ``W_U``.

        Raises:
            ValueError: For an unknown vector type, a missing head for ``"OV"``, an index out
                of range, or more vectors than the matrix's rank.
        """
        with torch.no_grad():
            return self._singular_vectors(vector_type, layer_index, num_vectors, head_index)

    def _singular_vectors(
        self, vector_type: str, layer_index: int, num_vectors: int, head_index: int | None
    ) -> torch.Tensor:
        if vector_type not in VECTOR_TYPES:
            raise ValueError(f"Vector type must be in {VECTOR_TYPES}, instead got {vector_type!r}")
        self._check_range("Layer", layer_index, self.cfg.n_layers)
        # At least float32 (half-precision SVDs are poor), float64 for a float64 model.
        dtype = torch.promote_types(self.model.W_U.dtype, torch.float32)
        if vector_type == "OV":
            if head_index is None:
                raise ValueError("Head index optional only for w_in and w_out, got 'OV'")
            self._check_range("Head", head_index, self.cfg.n_heads)
            attn = self.model.blocks[layer_index].attn
            ov = FactoredMatrix(attn.W_V[head_index], attn.W_O[head_index])
            V: torch.Tensor = ov.Vh.T  # FactoredMatrix's Vh is V: rows are now singular vectors
        else:
            matrix = self._w_in(layer_index) if vector_type == "w_in" else self._w_out(layer_index)
            V = torch.linalg.svd(matrix.detach().to(dtype), full_matrices=False).Vh
        if num_vectors > V.shape[0]:
            raise ValueError(
                f"num_vectors={num_vectors} exceeds the matrix's rank bound {V.shape[0]}"
            )
        W_U = self.model.W_U.detach().to(dtype)
        return (V[:num_vectors].to(dtype) @ W_U).T.unsqueeze(1)

    def _w_in(self, layer: int) -> torch.Tensor:
        w_in = self.model.blocks[layer].mlp.W_in.T  # [d_mlp, d_model]
        norm = getattr(self.model.blocks[layer], "ln2", None)
        weight = getattr(norm, "w", None)
        if isinstance(weight, torch.Tensor):  # unfolded norm: its weights scale what W_in reads
            return w_in * (1.0 + weight if getattr(norm, "offset", False) else weight)
        return w_in

    def _w_out(self, layer: int) -> torch.Tensor:
        return self.model.blocks[layer].mlp.W_out

    @staticmethod
    def _check_range(what: str, index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ValueError(f"{what} index must be between 0 and {size - 1} but got {index}")

    def __repr__(self) -> str:
        return f"SVDInterpreter({type(self.model).__name__})"

"""Weight stacks of ``HookedTransformer``: ``W_Q [n_layers, n_heads, d_model, d_head]`` and friends.

Stacks are views assembled on read (``torch.stack``); editing a stack does not edit the model.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from tlcore.factored_matrix import FactoredMatrix


class WeightsMixin:
    """Stacked weights and factored attention matrices (from ``blocks``, ``embed``, ``unembed``)."""

    blocks: Any
    embed: Any
    pos_embed: Any
    unembed: Any
    cfg: Any

    def _stack(self, module: str, name: str) -> torch.Tensor:
        return torch.stack([getattr(getattr(block, module), name) for block in self.blocks], dim=0)

    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        """Token embedding."""
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[torch.Tensor, "n_ctx d_model"]:
        """Learned positional embedding (learned/shortformer positions only)."""
        if not hasattr(self.pos_embed, "W_pos"):
            raise AttributeError(
                f"W_pos: this model's positions are {self.cfg.positional_embedding_type}"
            )
        return self.pos_embed.W_pos

    @property
    def W_E_pos(self) -> Float[torch.Tensor, "d_vocab_plus_n_ctx d_model"]:
        """``W_E`` and ``W_pos`` concatenated along the first dimension."""
        return torch.cat([self.W_E, self.W_pos], dim=0)

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        """Unembedding."""
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[torch.Tensor, " d_vocab"]:
        """Unembedding bias."""
        return self.unembed.b_U

    @property
    def W_Q(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        """Query weights of every layer."""
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        """Key weights (expanded to one per query head under GQA)."""
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[torch.Tensor, "n_layers n_heads d_model d_head"]:
        """Value weights (expanded to one per query head under GQA)."""
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[torch.Tensor, "n_layers n_heads d_head d_model"]:
        """Output weights."""
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[torch.Tensor, "n_layers n_heads d_head"]:
        """Query biases."""
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[torch.Tensor, "n_layers n_heads d_head"]:
        """Key biases."""
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[torch.Tensor, "n_layers n_heads d_head"]:
        """Value biases."""
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[torch.Tensor, "n_layers d_model"]:
        """Output biases."""
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[torch.Tensor, "n_layers d_model d_mlp"]:
        """MLP input weights (dense MLPs)."""
        return self._stack("mlp", "W_in")

    @property
    def W_gate(self) -> Float[torch.Tensor, "n_layers d_model d_mlp"]:
        """Gated MLPs' gate weights."""
        return self._stack("mlp", "W_gate")

    @property
    def W_out(self) -> Float[torch.Tensor, "n_layers d_mlp d_model"]:
        """MLP output weights."""
        return self._stack("mlp", "W_out")

    @property
    def b_in(self) -> Float[torch.Tensor, "n_layers d_mlp"]:
        """MLP input biases."""
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> Float[torch.Tensor, "n_layers d_model"]:
        """MLP output biases."""
        return self._stack("mlp", "b_out")

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_K.T`` per layer and head, factored: ``[layer, head, d_model, d_model]``."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` per layer and head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)

    def all_composition_scores(
        self, mode: str
    ) -> Float[torch.Tensor, "n_layers n_heads n_layers n_heads"]:
        """Composition scores of every head pair (Elhage et al. 2021), as TransformerLens.

        ``[L1, H1, L2, H2]``: how much head L1.H1's output (its OV circuit) feeds head L2.H2's
        query side (``"Q"``: its QK matrix), key side (``"K"``: QK transposed) or values
        (``"V"``: its OV matrix); zero unless ``L1 < L2``.

        Args:
            mode: ``"Q"``, ``"K"`` or ``"V"``.

        Returns:
            The scores.

        Raises:
            ValueError: For another mode.
        """
        from tlcore.utils.factored import composition_scores

        right = {"Q": lambda: self.QK, "K": lambda: self.QK.T, "V": lambda: self.OV}.get(mode)
        if right is None:
            raise ValueError(f"mode must be one of ['Q', 'K', 'V'] not {mode}")
        scores = composition_scores(self.OV, right(), broadcast_dims=True)
        layers = torch.arange(self.cfg.n_layers, device=scores.device)
        mask = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(mask, scores, torch.zeros_like(scores))

    def all_head_labels(self) -> list[str]:
        """Labels ``L{layer}H{head}`` for every head.

        Returns:
            The labels, layer-major.
        """
        return [
            f"L{layer}H{head}"
            for layer in range(self.cfg.n_layers)
            for head in range(self.cfg.n_heads)
        ]

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[torch.Tensor, " d_model"]:
        """Sum of the biases written to the residual stream before ``layer``.

        Args:
            layer: Block index (biases of blocks ``< layer``).
            mlp_input: Also include ``layer``'s attention output bias (the MLP input of that layer).
            include_mlp_biases: Include MLP output biases.

        Returns:
            ``[d_model]``.

        Raises:
            ValueError: ``mlp_input`` with ``layer == n_layers`` (there is no block there).
        """
        if mlp_input and layer >= self.cfg.n_layers:
            raise ValueError("accumulated_bias: mlp_input needs layer < n_layers (no block there)")
        like = self.unembed.b_U  # not W_U: reading it would untie a tied unembedding
        total = torch.zeros(self.cfg.d_model, device=like.device, dtype=like.dtype)
        for i in range(layer):
            total = total + self.blocks[i].attn.b_O
            if include_mlp_biases and hasattr(getattr(self.blocks[i], "mlp", None), "b_out"):
                total = total + self.blocks[i].mlp.b_out
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total

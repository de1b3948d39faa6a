"""The ``attention`` trait: what a spec says about attention (the module is in ``attention.py``).

Biases per projection, the score scale, soft-cap, sinks, qk-norm, sliding windows, ``clip_qkv``;
``apply_to_cfg`` records TransformerLens's config fields and ``processing_refusals`` names the
weight-processing steps a setting makes inexact.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tlcore.spec.traits import Trait


class QKVOFlags(BaseModel):
    """Per-projection flags (``true`` sets all four)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    q: bool = False
    k: bool = False
    v: bool = False
    o: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"q": value, "k": value, "v": value, "o": value}
        return value


class AttentionTrait(Trait):
    """Attention parameters."""

    slot = "attention"
    linear_io = True
    kind: Literal["attention"] = "attention"
    bias: QKVOFlags = Field(default_factory=QKVOFlags)
    """Which projections have biases in the checkpoint (the others are zero parameters)."""
    scale: float | None = None
    """Score scale; default ``1/sqrt(d_head)``."""
    scale_by_inverse_layer: bool = False
    """Also divide scores by ``layer + 1`` (GPT-2 ``scale_attn_by_inverse_layer_idx``)."""
    softcap: float | None = None
    """Logit soft-cap ``c * tanh(s / c)`` on the scaled scores (Gemma 2)."""
    sinks: bool = False
    """A learned per-head logit appended before the softmax and dropped after (GPT-OSS)."""
    qk_norm: Any = Field(default=None, json_schema_extra={"trait_slot": "norm"})
    qk_norm_scope: Literal["per_head", "per_head_distinct", "full_width"] = "per_head"
    qk_norm_after_rotary: bool = False
    """Normalise the rotated queries and keys (HunYuan) instead of normalising before rotary."""
    qk_norm_layers: list[bool] | None = None
    """Which layers have the qk-norm (default: all; Llama 4: its rotary layers only)."""
    sliding_window: int | None = None
    window_layers: list[bool] | None = None
    """Which layers use the window (default: all, when ``sliding_window`` is set)."""
    chunk_size: int | None = None
    """Chunked attention (Llama 4): a query sees only the earlier keys of its own chunk of
    ``chunk_size`` positions (``pos // chunk_size`` equal)."""
    chunk_layers: list[bool] | None = None
    """Which layers attend in chunks (default: all, when ``chunk_size`` is set)."""
    temperature_layers: list[bool] | bool | None = None
    """Layers whose queries are scaled by ``1 + temperature_scale * log1p(floor((p +
    temperature_offset) / temperature_floor))`` (attention temperature tuning: Llama 4's NoPE
    layers; Ministral 3's llama-4 scaling on every layer); ``True``: every layer; None: no layer."""
    temperature_floor: float = 8192.0
    temperature_scale: float = 0.1
    temperature_offset: float = 1.0
    """Added to ``p`` before the floor division (Llama 4: 1; Ministral 3: 0)."""
    temperature_position: Literal["cache_index", "position"] = "cache_index"
    """What ``p`` counts: the query's index in the KV cache, padding included (Llama 4's
    ``arange + past length``), or its position id, from each row's first real token (Ministral
    3's ``position_ids``)."""
    clip_qkv: float | None = None
    causal: bool = True
    output_gate: bool = False
    """Multiply each head's output by ``sigmoid(x W_G + b_G)`` before ``W_O`` (Qwen3-Next)."""

    def window(self, layer: int) -> int | None:
        """The sliding window of a layer.

        Returns:
            The window size or None.
        """
        if self.sliding_window is None:
            return None
        if self.window_layers is not None and not self.window_layers[layer]:
            return None
        return self.sliding_window

    def chunk(self, layer: int) -> int | None:
        """The attention chunk size of a layer.

        Returns:
            The chunk size or None.
        """
        if self.chunk_size is None or (self.chunk_layers and not self.chunk_layers[layer]):
            return None
        return self.chunk_size

    def has_qk_norm(self, layer: int) -> bool:
        """Whether a layer normalises its queries and keys.

        Returns:
            True when ``qk_norm`` is set and the layer is one of ``qk_norm_layers``.
        """
        return self.qk_norm is not None and (
            self.qk_norm_layers is None or bool(self.qk_norm_layers[layer])
        )

    def temperature(
        self, layer: int, positions: Int[torch.Tensor, "batch pos"], k_len: int
    ) -> Float[torch.Tensor, "batch pos 1 1"] | None:
        """The query scale of temperature tuning, per query (fp32), or None.

        Args:
            layer: The layer.
            positions: The queries' position ids ``[batch, pos]``.
            k_len: The number of keys (cached + current): the queries' cache indices are the
                last ``pos`` of ``range(k_len)``.

        Example:
            >>> t = AttentionTrait(temperature_layers=[True], temperature_floor=2.0)
            >>> t.temperature(0, torch.tensor([[0, 1]]), 4).flatten()  # cache indices 2, 3
            tensor([1.0693, 1.1099])
            >>> t = AttentionTrait(temperature_layers=True, temperature_floor=2.0,
            ...                    temperature_offset=0.0, temperature_position="position")
            >>> t.temperature(0, torch.tensor([[0, 1, 2, 5]]), 4).flatten()
            tensor([1.0000, 1.0000, 1.0693, 1.1099])

        Returns:
            The scale ``[batch or 1, pos, 1, 1]``, or None for a layer without temperature
            tuning.
        """
        layers = self.temperature_layers
        if not layers or (isinstance(layers, list) and not layers[layer]):
            return None
        if self.temperature_position == "position":
            p = positions.to(torch.float)
        else:
            q_len = positions.shape[1]
            p = torch.arange(k_len - q_len, k_len, device=positions.device, dtype=torch.float)[None]
        scale = torch.log1p(torch.floor((p + self.temperature_offset) / self.temperature_floor))
        return (scale * self.temperature_scale + 1.0)[..., None, None]

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        if self.scale is not None:
            cfg.setdefault("attn_scale", 1.0 / self.scale)
            cfg.setdefault("use_attn_scale", self.scale != 1.0)
        cfg.setdefault("scale_attn_by_inverse_layer_idx", self.scale_by_inverse_layer)
        if self.softcap is not None:
            cfg.setdefault("attn_scores_soft_cap", self.softcap)
        cfg.setdefault("use_qk_norm", self.qk_norm is not None)
        if self.sliding_window is not None:
            cfg.setdefault("window_size", self.sliding_window)
            cfg.setdefault("use_local_attn", True)
            n = len(self.window_layers) if self.window_layers else cfg.get("n_layers", 0)
            cfg.setdefault(
                "attn_types", ["local" if self.window(i) else "global" for i in range(n)]
            )

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        refusals: dict[str, str] = {}
        if self.output_gate:
            refusals["fold_value_biases"] = (
                "the output gate scales b_V's contribution per position, so it is not a constant"
            )
            refusals["refactor_factored_attn_matrices"] = (
                "the output gate sits between W_V and W_O, so W_V W_O is not the OV circuit"
            )
        elif self.sinks:
            refusals["fold_value_biases"] = (
                "attention sinks take part of each pattern row's mass, so rows sum to less "
                "than 1 and b_V's contribution is not a constant"
            )
        elif self.clip_qkv is not None:
            refusals["fold_value_biases"] = (
                "clip_qkv clamps the values after b_V is added, so b_V cannot move past it"
            )
        if self.qk_norm is not None:
            refusals["refactor_factored_attn_matrices"] = (
                "qk-norm normalises queries and keys separately, so only W_Q W_K^T is kept"
            )
        elif self.clip_qkv is not None:
            refusals["refactor_factored_attn_matrices"] = (
                "clip_qkv clamps queries, keys and values separately"
            )
        elif self.sinks:
            refusals["refactor_factored_attn_matrices"] = (
                "attention sinks: pattern rows do not sum to 1, so b_V cannot be folded"
            )
        return refusals

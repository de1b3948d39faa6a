"""Rotary position embeddings: rotate-half (NeoX/Llama) or interleaved (GPT-J) style.

Partial widths and every HF ``rope_type`` are supported; non-default types use HF's own
``ROPE_INIT_FUNCTIONS``, so scaling rules never drift from HF's.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.components.positions import PositionalEncoding
from tlcore.errors import SpecError
from tlcore.spec.traits import Trait

_STATIC_TYPES = {"default", "linear", "llama3", "yarn", "longrope", "proportional"}


class RotaryTrait(Trait):
    """Rotary parameters.

    ``rope_parameters`` is HF's dict (``rope_type``, ``rope_theta``, scaling fields); with
    ``layer_types`` it is nested by layer type (Gemma 3) and ``layer_types`` gives each layer's
    type.
    """

    slot = "positional"
    kind: Literal["rotary"] = "rotary"
    style: Literal["half", "interleaved"] = "half"
    dim: int
    """Rotated width per head (``rotary_dim``; the rest passes through)."""
    rope_parameters: dict[str, Any] | None = None
    base: float | None = None
    """Theta; defaults to ``rope_parameters['rope_theta']``."""
    layer_types: list[str] | None = None
    in_fp32: bool = False
    """Rotate in fp32 with fp32 cos/sin, then cast back (OLMo, OLMo 2); else in the input dtype."""
    layers: list[bool] | None = None
    """Which layers rotate (default: all). The others get no positional information at all
    ("NoPE" layers: SmolLM3's ``no_rope_layers``, Cohere 2's full-attention layers, Llama 4)."""

    def rotates(self, layer: int) -> bool:
        """Whether a layer rotates its queries and keys.

        Returns:
            False for a NoPE layer.
        """
        return self.layers is None or bool(self.layers[layer])

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("positional_embedding_type", "rotary")
        cfg.setdefault("rotary_dim", self.dim)
        cfg.setdefault("rotary_adjacent_pairs", self.style == "interleaved")
        params = self._params(None)
        if self.layer_types and "rope_theta" not in params:
            # Nested per layer type (Gemma 3): TransformerLens's rotary_base is the global layers'
            # theta (its rotary_base_local is the sliding layers').
            params = self._params(
                "full_attention" if "full_attention" in self.layer_types else self.layer_types[0]
            )
        cfg.setdefault("rotary_base", float(self.base or params.get("rope_theta", 10000.0)))

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        return {
            "refactor_factored_attn_matrices": (
                "positional embedding type 'rotary': the QK matrix depends on the query and "
                "key positions, so W_Q/W_K cannot be refactored (TransformerLens asserts the "
                "same)"
            )
        }

    def _params(self, layer_type: str | None) -> dict[str, Any]:
        params = self.rope_parameters or {}
        if layer_type is not None and isinstance(params.get(layer_type), dict):
            return params[layer_type]
        return params


class Rotary(PositionalEncoding):
    """Rotary embedding shared by all layers (one frequency set per layer type).

    Args:
        trait: Rotary parameters.
        cfg: The model config (its ``hf_config`` feeds HF's rope-init functions).
    """

    rotates_qk = True

    def __init__(self, trait: RotaryTrait, cfg: Any) -> None:
        super().__init__()
        self.trait = trait
        self.dim = trait.dim
        self.hf_config = cfg.hf_config
        for layer_type in set(trait.layer_types or [None]):  # type: ignore[list-item]
            rope_type = trait._params(layer_type).get("rope_type", "default")
            if rope_type not in _STATIC_TYPES | {"dynamic"}:
                raise SpecError(f"rotary: unsupported rope_type '{rope_type}'")

    def _inv_freq(
        self, layer_type: str | None, seq_len: int, device: torch.device
    ) -> tuple[torch.Tensor, float]:
        params = self.trait._params(layer_type)
        rope_type = params.get("rope_type", "default")
        alpha = params.get("alpha") if rope_type == "dynamic" else None
        if rope_type == "default" or alpha:
            base = self.trait.base or params.get("rope_theta", 10000.0)
            if alpha:  # NTK-alpha (HunYuan's "dynamic" with a fixed alpha): a static, larger base
                base = base * alpha ** (self.dim / (self.dim - 2))
            exps = (
                torch.arange(0, self.dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
                / self.dim
            )
            return 1.0 / (base**exps), 1.0
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        kwargs: dict[str, Any] = {"layer_type": layer_type} if layer_type is not None else {}
        if rope_type == "dynamic":
            kwargs["seq_len"] = seq_len
        elif rope_type == "longrope":
            original = params.get("original_max_position_embeddings") or getattr(
                self.hf_config, "original_max_position_embeddings", None
            )
            kwargs["seq_len"] = seq_len if original and seq_len > original else None
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](self.hf_config, device, **kwargs)
        return inv_freq.to(device=device, dtype=torch.float), float(scaling)

    def cos_sin(
        self,
        positions: Int[torch.Tensor, "batch pos"],
        layer: int,
        ctx: dict[Any, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines for ``positions`` (memoised per forward in ``ctx``).

        Args:
            positions: Absolute positions.
            ctx: Per-forward memo.

        Returns:
            ``(cos, sin)``, each ``[batch, pos, 1, dim]`` in fp32.
        """
        layer_type = self.trait.layer_types[layer] if self.trait.layer_types else None
        key = ("rotary", layer_type, positions.data_ptr(), tuple(positions.shape))
        if ctx is not None and key in ctx:
            return ctx[key]
        seq_len = int(positions.max()) + 1 if positions.numel() else 1
        inv_freq, scaling = self._inv_freq(layer_type, seq_len, positions.device)
        freqs = positions[..., None].float() * inv_freq
        if self.trait.style == "half":
            emb = torch.cat((freqs, freqs), dim=-1)
        else:
            emb = torch.repeat_interleave(freqs, 2, dim=-1)
        result = ((emb.cos() * scaling)[:, :, None, :], (emb.sin() * scaling)[:, :, None, :])
        if ctx is not None:
            ctx[key] = result
        return result

    def rotate(
        self,
        x: Float[torch.Tensor, "batch pos head d_head"],
        positions: Int[torch.Tensor, "batch pos"],
        layer: int,
        ctx: dict[Any, Any] | None = None,
    ) -> Float[torch.Tensor, "batch pos head d_head"]:
        """Rotate the first ``dim`` features of each head.

        Args:
            x: Queries or keys.
            positions: Their absolute positions.
            ctx: Per-forward memo.

        Returns:
            The rotated tensor, same dtype as ``x``.
        """
        if not self.trait.rotates(layer):  # a NoPE layer
            return x
        cos, sin = self.cos_sin(positions, layer, ctx)
        dtype = x.dtype
        if self.trait.in_fp32:
            # At least fp32: exact for bf16/fp16 inputs (only the result is rounded, as HF does);
            # an fp64 model stays in fp64.
            x = x.to(torch.promote_types(x.dtype, torch.float32))
        else:
            cos, sin = cos.to(dtype), sin.to(dtype)
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        if self.trait.style == "half":
            half = self.dim // 2
            rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        else:
            rotated = torch.stack((-rot[..., 1::2], rot[..., ::2]), dim=-1).flatten(-2)
        out = rot * cos + rotated * sin
        return (torch.cat((out, rest), dim=-1) if rest.shape[-1] else out).to(dtype)


def make_rotary(trait: RotaryTrait, cfg: Any) -> PositionalEncoding:
    """Component factory for ``positional/rotary``.

    Returns:
        The module.
    """
    return Rotary(trait, cfg)

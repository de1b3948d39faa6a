"""Multi-head latent attention (MLA): DeepSeek-V2/V3's low-rank queries, keys and values.

The residual stream is read by four linear maps: queries through a rank-``q_lora_rank`` latent
(``W_Q_a``, an RMSNorm ``q_a_norm``, then the per-head ``W_Q_b``), or directly (``W_Q``) when
``q_lora_rank`` is null; keys and values through one shared latent (``W_KV_a``, ``kv_a_norm``, then
the per-head ``W_K_b`` / ``W_V_b``); and a rotary key part shared by every head (``W_K_rope``).
Each head's query and key are ``[nope | rope]`` (``qk_nope_head_dim + qk_rope_head_dim`` wide), its
value ``v_head_dim`` wide; ``W_O [head_index, v_head_dim, d_model]``.

Hooks (TransformerLens names; ``q``/``k`` are ``qk_head_dim`` wide, ``v``/``z`` ``v_head_dim``):
``hook_q_latent`` ``[batch, pos, q_lora_rank]`` and ``hook_kv_latent`` ``[batch, pos,
kv_lora_rank]`` hold the latents *after* their norms (what the up-projections read, and what HF
caches); ``hook_q``/``hook_k`` ``[batch, pos, head_index, qk_head_dim]`` are before rotation (the
key's rope part, shared, repeated per head), ``hook_rot_q``/``hook_rot_k`` after it (the rope
features in HF's order: de-interleaved when ``rope_interleave``); ``hook_v``, ``hook_z``,
``hook_attn_scores``, ``hook_pattern`` and ``hook_result`` as in TransformerLens. With split
q/k/v inputs (``use_split_qkv_input``) the latents are per head (``[batch, pos, head, rank]``);
keys read the key input's latent (``hook_kv_latent``), values the value input's.

The KV cache stores the expanded, rotated keys and the values per head (HF caches the latents;
the attention it computes is the same).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from pydantic import Field
from torch import nn

from tlcore.components.context import ForwardContext
from tlcore.components.layout import LinearLayout
from tlcore.components.norms import NormFactory, at_least_fp32
from tlcore.components.positions import PositionalEncoding
from tlcore.components.residual_io import HFProbe, Reader, ResidualIO, Writer
from tlcore.errors import SpecError
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait


def yarn_mscale(scale: float, mscale: float) -> float:
    """YaRN's magnitude correction ``0.1 * mscale * ln(scale) + 1`` (1 for ``scale <= 1``).

    Args:
        scale: The context-extension factor.
        mscale: The coefficient (``mscale_all_dim`` for the softmax scale).

    Returns:
        The multiplier.

    Example:
        >>> round(yarn_mscale(40.0, 1.0), 6), yarn_mscale(1.0, 1.0)
        (1.368888, 1.0)
    """
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class MLATrait(Trait):
    """Multi-head latent attention parameters (HF ``DeepseekV2Config``/``DeepseekV3Config`` names).

    ``bias`` gives ``q_a_proj``, ``kv_a_proj_with_mqa`` and ``o_proj`` biases (HF's
    ``attention_bias``; the up-projections never have one). ``rope_interleave``: the rope features
    are stored as interleaved pairs and rotated half-style after de-interleaving (HF DeepSeek-V3);
    DeepSeek-V2's complex rotation is the rotary trait's own ``interleaved`` style instead.
    The softmax scale is ``qk_head_dim ** -0.5``, times ``yarn_mscale(factor, mscale_all_dim)**2``
    when ``rope_parameters`` has a non-default type and ``mscale_all_dim``.
    """

    slot = "attention"
    linear_io = True
    kind: Literal["mla"] = "mla"
    q_lora_rank: int | None = None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    bias: bool = False
    latent_norm: Any = Field(default=None, json_schema_extra={"trait_slot": "norm"})
    rope_interleave: bool = False
    rope_parameters: dict[str, Any] | None = None

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: ``qk_nope_head_dim + qk_rope_head_dim``."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def softmax_scale(self) -> float:
        """The score scale (HF's ``yarn_apply_mscale(rope_parameters, qk_head_dim ** -0.5)``).

        Returns:
            The factor the scores are multiplied by.

        Example:
            >>> t = MLATrait(kv_lora_rank=8, qk_nope_head_dim=12, qk_rope_head_dim=4, v_head_dim=8)
            >>> t.softmax_scale()
            0.25
        """
        scale = self.qk_head_dim**-0.5
        params = self.rope_parameters or {}
        if params.get("rope_type", "default") != "default" and params.get("mscale_all_dim"):
            scale *= yarn_mscale(float(params["factor"]), float(params["mscale_all_dim"])) ** 2
        return scale

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("attn_scale", 1.0 / self.softmax_scale())
        cfg.setdefault("use_attn_scale", True)
        cfg.setdefault("use_qk_norm", False)

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        return {
            "fold_value_biases": (
                "multi-head latent attention has no value bias: values are read from the "
                "normalised key/value latent by a bias-free W_V_b, so there is nothing to fold"
            ),
            "refactor_factored_attn_matrices": (
                "multi-head latent attention: queries, keys and values pass through RMS-normalised "
                "latents, so no W_Q W_K^T or W_V W_O of the residual stream exists to refactor"
            ),
        }


def _heads(latent: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Project a latent into heads: ``[..., r] x [n, r, d] -> [..., n, d]`` (or per head)."""
    if latent.dim() == 4:  # split inputs: one latent per head
        return einops.einsum(latent, weight, "b p n r, n r d -> b p n d")
    n, r, d = weight.shape
    return F.linear(latent, weight.permute(0, 2, 1).reshape(n * d, r)).unflatten(-1, (n, d))


class MultiHeadLatentAttention(LinearLayout, ResidualIO):
    """Multi-head latent attention (see the module docstring for parameters and hooks).

    Args:
        trait: MLA parameters.
        cfg: The model config (``d_model``, ``n_heads``, ``dtype``, the hook flags).
        layer: Block index.
        positional: The model's rotary component (rotates the rope features).
        norm_factory: Builds the latent norms.
    """

    hf_names = ("self_attn",)
    hf_output_names = ("o_proj",)
    linear_layouts = {
        "W_Q": "in_heads",
        "W_Q_a": "matrix",
        "W_Q_b": "in_heads",
        "W_KV_a": "matrix",
        "W_K_rope": "matrix",
        "W_K_b": "in_heads",
        "W_V_b": "in_heads",
        "W_O": "out_heads",
    }

    def __init__(
        self,
        trait: MLATrait,
        cfg: Any,
        layer: int,
        positional: PositionalEncoding | None = None,
        norm_factory: NormFactory | None = None,
    ) -> None:
        super().__init__()
        if norm_factory is None or trait.latent_norm is None:
            raise SpecError("attention/mla needs a latent_norm and the builder's norm_factory")
        if positional is None or not positional.rotates_qk:
            raise SpecError("attention/mla needs a rotary positional component")
        if cfg.n_key_value_heads != cfg.n_heads:
            raise SpecError("attention/mla: every head has its own key and value")
        self.cfg, self.trait, self.layer = cfg, trait, layer
        n, d_model, dtype = cfg.n_heads, cfg.d_model, cfg.dtype
        qk, rope, v = trait.qk_head_dim, trait.qk_rope_head_dim, trait.v_head_dim

        def empty(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, dtype=dtype))

        def bias(width: int) -> nn.Parameter | None:
            return nn.Parameter(torch.zeros(width, dtype=dtype)) if trait.bias else None

        self.q_a_norm: nn.Module | None = None
        if trait.q_lora_rank is None:
            self.W_Q = empty(n, d_model, qk)
            self.b_Q: nn.Parameter | None = None
        else:
            self.W_Q_a = empty(d_model, trait.q_lora_rank)
            self.b_Q_a = bias(trait.q_lora_rank)
            self.q_a_norm = norm_factory(trait.latent_norm, trait.q_lora_rank)
            self.W_Q_b = empty(n, trait.q_lora_rank, qk)
        self.W_KV_a = empty(d_model, trait.kv_lora_rank)
        self.b_KV_a = bias(trait.kv_lora_rank)
        self.W_K_rope = empty(d_model, rope)
        self.b_K_rope = bias(rope)
        kv_a_norm = norm_factory(trait.latent_norm, trait.kv_lora_rank)
        if kv_a_norm is None:
            raise SpecError("attention/mla: latent_norm must build a norm (HF's latents have one)")
        self.kv_a_norm: nn.Module = kv_a_norm
        self.W_K_b = empty(n, trait.kv_lora_rank, trait.qk_nope_head_dim)
        self.W_V_b = empty(n, trait.kv_lora_rank, v)
        self.W_O = empty(n, v, d_model)
        self.b_O = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self._positional = (positional,)  # not a submodule: the model owns it
        self.scale = trait.softmax_scale()
        self.hook_q_latent = HookPoint()
        self.hook_kv_latent = HookPoint()
        self.hook_k = HookPoint()
        self.hook_q = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_result = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_rot_q = HookPoint()

    # -- declarations ----------------------------------------------------------------------------
    def residual_readers(self) -> list[Reader]:  # noqa: D102
        if self.trait.q_lora_rank is None:
            query = Reader(self, "W_Q", "b_Q", -2)
        else:
            query = Reader(self, "W_Q_a", "b_Q_a", 0)
        return [query, Reader(self, "W_KV_a", "b_KV_a", 0), Reader(self, "W_K_rope", "b_K_rope", 0)]

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [Writer(self, "W_O"), Writer(self, "b_O")]

    def output_bias(self) -> torch.Tensor | None:  # noqa: D102
        return self.b_O

    def hf_probes(self) -> list[HFProbe]:  # noqa: D102
        probes = [HFProbe("hook_kv_latent", ("kv_a_layernorm",), "output")]
        if self.q_a_norm is not None:
            probes.insert(0, HFProbe("hook_q_latent", ("q_a_layernorm",), "output"))
        return [*probes, HFProbe("hook_z", self.hf_output_names, "input")]

    # -- forward ---------------------------------------------------------------------------------
    def _linear(self, x: torch.Tensor, weight: str, bias: str) -> torch.Tensor:
        return F.linear(x, getattr(self, weight).T, getattr(self, bias, None))

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_a_norm is None:
            if x.dim() == 4:
                q = einops.einsum(x, self.W_Q, "b p n m, n m d -> b p n d")
                return q if self.b_Q is None else q + self.b_Q
            n, d_model, qk = self.W_Q.shape
            w = self.W_Q.permute(0, 2, 1).reshape(n * qk, d_model)
            b = None if self.b_Q is None else self.b_Q.reshape(n * qk)
            return F.linear(x, w, b).unflatten(-1, (n, qk))
        latent = self.hook_q_latent(self.q_a_norm(self._linear(x, "W_Q_a", "b_Q_a")))
        return _heads(latent, self.W_Q_b)

    def _rotate(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        nope = self.trait.qk_nope_head_dim
        kept, rope = x[..., :nope], x[..., nope:]
        if self.trait.rope_interleave:
            rope = torch.cat((rope[..., 0::2], rope[..., 1::2]), dim=-1)
        rotated = self._positional[0].rotate(rope, ctx.positions, self.layer, ctx.memo)
        return torch.cat((kept, rotated), dim=-1)

    def forward(
        self,
        query_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos head_index d_model"],
        key_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos head_index d_model"],
        value_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos head_index d_model"],
        ctx: ForwardContext,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Attend.

        Args:
            query_input: Normalised residual (or per-head copies) for queries.
            key_input: Same for keys.
            value_input: Same for values.
            ctx: Per-forward state (positions, masks, KV cache).

        Returns:
            The attention output ``[batch, pos, d_model]``.
        """
        n = self.cfg.n_heads
        q = self.hook_q(self._queries(query_input))
        kv_latent = self.hook_kv_latent(self.kv_a_norm(self._linear(key_input, "W_KV_a", "b_KV_a")))
        k_rope = self._linear(key_input, "W_K_rope", "b_K_rope")
        if k_rope.dim() == 3:  # one rotary key shared by every head
            k_rope = k_rope[:, :, None, :].expand(-1, -1, n, -1)
        k = self.hook_k(torch.cat((_heads(kv_latent, self.W_K_b), k_rope), dim=-1))
        if value_input is not key_input:  # split inputs: values read their own latent
            kv_latent = self.kv_a_norm(self._linear(value_input, "W_KV_a", "b_KV_a"))
        v = self.hook_v(_heads(kv_latent, self.W_V_b))
        q = self.hook_rot_q(self._rotate(q, ctx))
        k = self.hook_rot_k(self._rotate(k, ctx))
        if ctx.past_kv_cache is not None:
            k, v = ctx.past_kv_cache[self.layer].append(k, v)
        z = self.hook_z(self._attend(q, k, v, ctx))
        if self.cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "b p h d, h d m -> b p h m"))
            return result.sum(-2) + self.b_O
        w_o = self.W_O.reshape(n * z.shape[-1], -1).T
        return F.linear(z.flatten(-2), w_o, self.b_O)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: ForwardContext
    ) -> torch.Tensor:
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask = None if ctx.is_plain_causal(None) else ctx.mask(None)
        if mask is not None:
            # A fully masked row (a padding query) attends uniformly, as HF's additive mask does.
            mask = mask | ~mask.any(-1, keepdim=True)
        if not (self.hook_attn_scores.has_hooks or self.hook_pattern.has_hooks):
            z = F.scaled_dot_product_attention(
                qh,
                kh,
                vh,
                attn_mask=mask,
                scale=self.scale,
                is_causal=mask is None and ctx.causal and ctx.q_len > 1,
            )
            return z.transpose(1, 2)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * self.scale
        if mask is None and ctx.causal and ctx.q_len > 1:
            mask = ctx.mask(None)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(F.softmax(at_least_fp32(scores), dim=-1).to(qh.dtype))
        return torch.matmul(pattern, vh).transpose(1, 2)


def make_mla(
    trait: MLATrait,
    cfg: Any,
    layer: int,
    positional: PositionalEncoding | None = None,
    norm_factory: NormFactory | None = None,
) -> MultiHeadLatentAttention:
    """Component factory for ``attention/mla`` (arguments as :class:`MultiHeadLatentAttention`).

    Returns:
        The module.
    """
    return MultiHeadLatentAttention(trait, cfg, layer, positional, norm_factory)

"""Causal self-attention with TransformerLens's parameters and hooks.

Parameters: ``W_Q [head_index, d_model, d_head]``, ``W_K/W_V`` (``_W_K/_W_V [kv_head, ...]`` under
GQA/MQA, with ``W_K``/``W_V`` expanding them on read), ``W_O [head_index, d_head, d_model]``, biases
``b_Q/b_K/b_V [head, d_head]`` and ``b_O [d_model]`` (zeros where the checkpoint has none); with
an output gate (Qwen3-Next) ``W_G [head_index, d_model, d_head]`` and ``b_G``, and ``hook_gate``
holding ``sigmoid(x W_G + b_G)``, which multiplies each head's output before ``hook_z`` (so
``hook_z`` stays the input of ``W_O``).

The forward uses ``F.scaled_dot_product_attention`` unless the scores themselves change (a logit
soft-cap, attention sinks). A hook or cache on ``hook_attn_scores``/``hook_pattern`` makes that
layer form them too; its output stays the fused kernel's, bit for bit, unless a hook changed a
value (then it is ``pattern @ v`` from the edited values).
Projection weights are kept in memory in ``F.linear``'s layout (see
:mod:`tlcore.components.layout`), so the projections run the same kernels as HuggingFace with no
copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.attention_kernels import fused, weigh
from tlcore.components.attention_trait import AttentionTrait, QKVOFlags
from tlcore.components.context import ForwardContext
from tlcore.components.layout import LinearLayout
from tlcore.components.norms import NormFactory, at_least_fp32
from tlcore.components.positions import PositionalEncoding
from tlcore.components.residual_io import HFProbe, Reader, ResidualIO, Writer
from tlcore.errors import SpecError
from tlcore.hook_points import HookPoint, keep_values

__all__ = ["Attention", "AttentionTrait", "GroupedQueryAttention", "QKVOFlags", "make_attention"]


class Attention(LinearLayout, ResidualIO):
    """Multi-head attention (grouped variants in :class:`GroupedQueryAttention`).

    Args:
        trait: Attention parameters.
        positional: The model's positional component (rotary / ALiBi act inside attention).
        norm_factory: Builds the qk-norms (needed when ``trait.qk_norm`` is set).
    """

    hf_names = ("self_attn", "attn", "attention", "self_attention")
    # The output projection, not the attention module: some HF attention modules add the
    # residual themselves (BLOOM), so their output is not the branch output.
    hf_output_names = ("o_proj", "dense", "out_proj", "c_proj", "o")

    def __init__(
        self,
        trait: AttentionTrait,
        cfg: Any,
        layer: int,
        positional: PositionalEncoding | None = None,
        norm_factory: NormFactory | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.trait, self.layer = cfg, trait, layer
        n_heads, n_kv, d_model, d_head = cfg.n_heads, cfg.n_key_value_heads, cfg.d_model, cfg.d_head
        dtype = cfg.dtype
        kv = "_" if self._grouped else ""
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head, dtype=dtype))
        self.register_parameter(
            f"{kv}W_K", nn.Parameter(torch.empty(n_kv, d_model, d_head, dtype=dtype))
        )
        self.register_parameter(
            f"{kv}W_V", nn.Parameter(torch.empty(n_kv, d_model, d_head, dtype=dtype))
        )
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model, dtype=dtype))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head, dtype=dtype))
        self.register_parameter(f"{kv}b_K", nn.Parameter(torch.zeros(n_kv, d_head, dtype=dtype)))
        self.register_parameter(f"{kv}b_V", nn.Parameter(torch.zeros(n_kv, d_head, dtype=dtype)))
        self.b_O = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        if trait.sinks:
            self.sinks = nn.Parameter(torch.zeros(n_heads, dtype=dtype))
        if trait.output_gate:
            self.W_G = nn.Parameter(torch.empty(n_heads, d_model, d_head, dtype=dtype))
            self.b_G = nn.Parameter(torch.zeros(n_heads, d_head, dtype=dtype))
            self.hook_gate = HookPoint()
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        if trait.has_qk_norm(layer):
            if norm_factory is None:
                raise SpecError("attention with qk_norm needs the builder's norm_factory")
            q_shape: Any = {
                "per_head": d_head,
                "per_head_distinct": (n_heads, d_head),
                "full_width": n_heads * d_head,
            }[trait.qk_norm_scope]
            k_shape: Any = {
                "per_head": d_head,
                "per_head_distinct": (n_kv, d_head),
                "full_width": n_kv * d_head,
            }[trait.qk_norm_scope]
            self.q_norm = norm_factory(trait.qk_norm, q_shape)
            self.k_norm = norm_factory(trait.qk_norm, k_shape)
        # Not a submodule: the model owns it (one module shared by all layers).
        self._positional = (positional,) if positional is not None else ()
        scale = trait.scale if trait.scale is not None else 1.0 / math.sqrt(d_head)
        self.scale = scale / (layer + 1) if trait.scale_by_inverse_layer else scale
        self.window, self.chunk = trait.window(layer), trait.chunk(layer)
        self.hook_k = HookPoint()
        self.hook_q = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_result = HookPoint()
        if positional is not None and positional.rotates_qk:
            self.hook_rot_k = HookPoint()
            self.hook_rot_q = HookPoint()

    _grouped = False
    linear_layouts = {
        "W_Q": "in_heads",
        "W_K": "in_heads",
        "_W_K": "in_heads",
        "W_V": "in_heads",
        "_W_V": "in_heads",
        "W_O": "out_heads",
        "W_G": "in_heads",
    }

    # -- declarations ----------------------------------------------------------------------------
    def residual_readers(self) -> list[Reader]:  # noqa: D102
        kv = "_" if self._grouped else ""
        gate = [Reader(self, "W_G", "b_G", -2)] if self.trait.output_gate else []
        return [
            Reader(self, "W_Q", "b_Q", -2),
            Reader(self, f"{kv}W_K", f"{kv}b_K", -2),
            Reader(self, f"{kv}W_V", f"{kv}b_V", -2),
            *gate,
        ]

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [Writer(self, "W_O"), Writer(self, "b_O")]

    def output_bias(self) -> torch.Tensor | None:  # noqa: D102
        return self.b_O

    def hf_probes(self) -> list[HFProbe]:  # noqa: D102
        probes = []
        # q/k/v equal HF's projections only where no qk-norm or clamp runs between the two.
        if self.q_norm is None and self.trait.clip_qkv is None:
            probes = [HFProbe(f"hook_{x}", (f"{x}_proj",), "output") for x in "qkv"]
        return [*probes, HFProbe("hook_z", self.hf_output_names, "input")]

    # -- parameters ------------------------------------------------------------------------------
    def _raw(self, name: str) -> torch.Tensor:
        grouped = self._grouped and name in ("W_K", "W_V", "b_K", "b_V")
        return getattr(self, "_" + name) if grouped else getattr(self, name)

    # -- forward ---------------------------------------------------------------------------------
    def _project(self, x: torch.Tensor, name: str, n: int) -> torch.Tensor:
        weight, bias = self._raw(f"W_{name}"), self._raw(f"b_{name}")
        d_head = weight.shape[-1]
        if x.dim() == 4:  # split qkv input: one residual copy per head
            if x.shape[-2] != weight.shape[0]:  # ungrouped: a copy per query head
                weight, bias = getattr(self, f"W_{name}"), getattr(self, f"b_{name}")
            out = einops.einsum(x, weight, "b p n m, n m d -> b p n d") + bias
            if name != "Q" and n != out.shape[-2]:
                return self._per_kv_set(out, lambda flat: self._post_projection(flat, name))
            return self._post_projection(out.flatten(-2), name).view(out.shape)
        w2d = weight.permute(0, 2, 1).reshape(n * d_head, weight.shape[1])
        out = F.linear(x, w2d, bias.reshape(n * d_head))
        return self._post_projection(out, name).view(*x.shape[:-1], n, d_head)

    def _per_kv_set(
        self, heads: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Apply ``fn`` to ``[..., n_kv * d_head]`` slices of ungrouped keys or values.

        ``heads`` ``[..., n_heads, d_head]`` holds a copy per query head (ungrouped split inputs):
        head ``h`` is a copy of kv head ``h // group``. Each of the ``group`` sets of copies goes
        through ``fn`` (a full-width qk-norm) on its own, so per-copy hook edits are kept.
        """
        n_kv = self.cfg.n_key_value_heads
        sets = heads.unflatten(-2, (n_kv, -1)).transpose(-2, -3)  # [..., group, n_kv, d]
        out = fn(sets.flatten(-2)).view(sets.shape)
        return out.transpose(-2, -3).flatten(-3, -2)

    def _post_projection(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        # A full-width qk-norm comes first, then clip_qkv (OLMoE: q_norm(q_proj(x)).clamp_(...)).
        if self.trait.qk_norm_scope == "full_width" and name in ("Q", "K"):
            norm = self.q_norm if name == "Q" else self.k_norm
            if norm is not None:
                flat = norm(flat)
        if self.trait.clip_qkv is not None:
            flat = flat.clamp(-self.trait.clip_qkv, self.trait.clip_qkv)
        return flat

    def forward(
        self,
        query_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos head_index d_model"],
        key_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos kv_head d_model"],
        value_input: Float[torch.Tensor, "batch pos d_model"]
        | Float[torch.Tensor, "batch pos kv_head d_model"],
        ctx: ForwardContext,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Attend.

        Args:
            query_input: Residual (or per-head residual copies) for queries.
            key_input: Same for keys.
            value_input: Same for values.
            ctx: Per-forward state (positions, masks, KV cache).

        Returns:
            The attention output ``[batch, pos, d_model]``.
        """
        cfg = self.cfg
        n_heads, n_kv = cfg.n_heads, cfg.n_key_value_heads
        q = self.hook_q(self._project(query_input, "Q", n_heads))
        k = self._project(key_input, "K", n_kv)
        v = self._project(value_input, "V", n_kv)
        if cfg.ungroup_grouped_query_attention and k.shape[-2] != n_heads:
            k, v = (t.repeat_interleave(n_heads // n_kv, dim=2) for t in (k, v))
        k, v = self.hook_k(k), self.hook_v(v)
        per_head_norm = self.q_norm is not None and self.trait.qk_norm_scope != "full_width"
        if per_head_norm and not self.trait.qk_norm_after_rotary:
            q, k = self.q_norm(q), self._norm_keys(k)  # type: ignore[misc]
        positional = self._positional[0] if self._positional else None
        if positional is not None and positional.rotates_qk:
            q = self.hook_rot_q(positional.rotate(q, ctx.positions, self.layer, ctx.memo))
            k = self.hook_rot_k(positional.rotate(k, ctx.positions, self.layer, ctx.memo))
        if per_head_norm and self.trait.qk_norm_after_rotary:
            q, k = self.q_norm(q), self._norm_keys(k)  # type: ignore[misc]
        temperature = self.trait.temperature(self.layer, ctx.positions, ctx.k_len)
        if temperature is not None:  # the scores grow with the position (Llama 4, Ministral 3)
            q = (q * temperature).to(q.dtype)
        if ctx.past_kv_cache is not None:
            k, v = ctx.past_kv_cache[self.layer].append(k, v)
        z = self._attend(q, k, v, ctx, positional)
        if self.trait.output_gate:
            z = z * self.hook_gate(torch.sigmoid(self._project(query_input, "G", n_heads)))
        z = self.hook_z(z)
        if cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "b p h d, h d m -> b p h m"))
            return result.sum(-2) + self.b_O
        d_head = z.shape[-1]
        w_o = self.W_O.reshape(n_heads * d_head, -1).T
        return F.linear(z.reshape(*z.shape[:-2], n_heads * d_head), w_o, self.b_O)

    def _norm_keys(self, k: torch.Tensor) -> torch.Tensor:
        assert self.k_norm is not None
        n_kv = self.cfg.n_key_value_heads
        if self.trait.qk_norm_scope == "per_head_distinct" and k.shape[-2] != n_kv:
            # Ungrouped keys (ungroup_grouped_query_attention): head h is a copy of kv head
            # h // group, so it takes that head's weight row. Regroup as [..., group, n_kv, d]
            # for the [n_kv, d] weight to broadcast, without dropping per-copy hook edits.
            grouped = k.unflatten(-2, (n_kv, -1)).transpose(-2, -3)
            return self.k_norm(grouped).transpose(-2, -3).flatten(-3, -2)
        return self.k_norm(k)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        ctx: ForwardContext,
        positional: PositionalEncoding | None,
    ) -> torch.Tensor:
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        group = qh.shape[1] // kh.shape[1]
        bias = None
        if positional is not None and positional.biases_scores:
            bias = positional.score_bias_in(ctx, qh.shape[1], self.scale, qh.dtype)
        plain = ctx.is_plain_causal(self.window, self.chunk)
        mask = None if plain else ctx.mask(self.window, self.chunk)
        if mask is not None:
            # A fully masked row (a padding query) attends uniformly, as HF's additive mask does.
            mask = mask | ~mask.any(-1, keepdim=True)
        # The fused kernel is the plain path unless the scores themselves change (soft-cap, sinks).
        plain_fused = self.trait.softcap is None and not self.trait.sinks
        hooks = (self.hook_attn_scores, self.hook_pattern)
        if plain_fused and not any(point.has_hooks for point in hooks):
            return fused(qh, kh, vh, self.scale, bias, mask, ctx, self.window)
        # Form the scores and pattern for the hooks. Under the fused plain path, keep its output
        # unless a hook changed a value, so reading (or patching in the same value) is exact.
        pattern, edited = self._pattern(qh, kh, bias, mask, ctx, group, check=plain_fused)
        if not plain_fused or edited:
            return weigh(pattern, vh)
        z = fused(qh, kh, vh, self.scale, bias, mask, ctx, self.window)
        if any(point.has_bwd_hooks for point in hooks):  # their gradient flows via the pattern
            z = keep_values(z, weigh(pattern, vh))
        return z

    def _pattern(
        self,
        qh: torch.Tensor,
        kh: torch.Tensor,
        bias: torch.Tensor | None,
        mask: torch.Tensor | None,
        ctx: ForwardContext,
        group: int,
        check: bool,
    ) -> tuple[torch.Tensor, bool]:
        """Scores and pattern through their hooks; whether a hook changed either (if ``check``).

        Masked scores are ``-inf``, as TransformerLens's ``IGNORE`` buffer.
        """
        if group > 1:
            kh = kh.repeat_interleave(group, dim=1)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * self.scale
        if self.trait.softcap is not None:
            scores = self.trait.softcap * torch.tanh(scores / self.trait.softcap)
        if bias is not None:
            scores = scores + bias
        if mask is None and ctx.causal and ctx.q_len > 1:
            mask = ctx.mask(self.window, self.chunk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        edited = False
        if check:
            scores, edited = self.hook_attn_scores.run_and_compare(scores)
        else:
            scores = self.hook_attn_scores(scores)
        if self.trait.sinks:
            sink = self.sinks.to(scores.dtype)[None, :, None, None].expand(*scores.shape[:-1], 1)
            full = torch.cat([scores, sink], dim=-1)
            full = full - full.max(dim=-1, keepdim=True).values
            pattern = F.softmax(at_least_fp32(full), dim=-1)[..., :-1].to(qh.dtype)
        else:
            pattern = F.softmax(at_least_fp32(scores), dim=-1).to(qh.dtype)
        if not check:
            return self.hook_pattern(pattern), False
        pattern, pattern_edited = self.hook_pattern.run_and_compare(pattern)
        return pattern, edited or pattern_edited


class GroupedQueryAttention(Attention):
    """Attention with fewer key/value heads than query heads (GQA, MQA).

    Stores ``_W_K/_W_V/_b_K/_b_V`` with ``n_key_value_heads`` heads; ``W_K`` etc. expand them to
    ``n_heads`` (query head ``h`` uses key/value head ``h // (n_heads / n_key_value_heads)``).
    """

    _grouped = True

    def _expand(self, t: Any) -> torch.Tensor:
        return t.repeat_interleave(self.cfg.n_heads // self.cfg.n_key_value_heads, dim=0)

    @property
    def W_K(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        """Keys' weights expanded to one per query head."""
        return self._expand(self._W_K)

    @property
    def W_V(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        """Values' weights expanded to one per query head."""
        return self._expand(self._W_V)

    @property
    def b_K(self) -> Float[torch.Tensor, "head_index d_head"]:
        """Keys' biases expanded to one per query head."""
        return self._expand(self._b_K)

    @property
    def b_V(self) -> Float[torch.Tensor, "head_index d_head"]:
        """Values' biases expanded to one per query head."""
        return self._expand(self._b_V)


def make_attention(
    trait: AttentionTrait,
    cfg: Any,
    layer: int,
    positional: PositionalEncoding | None = None,
    norm_factory: NormFactory | None = None,
) -> Attention:
    """Component factory for ``attention/attention`` (arguments as :class:`Attention`).

    Returns:
        The module (grouped when ``n_key_value_heads < n_heads``).
    """
    cls = GroupedQueryAttention if cfg.n_key_value_heads != cfg.n_heads else Attention
    return cls(trait, cfg, layer, positional, norm_factory)

"""Gated DeltaNet, the linear-attention mixer of Qwen3-Next, in plain torch.

Per layer: ``q, k, v`` (channels ``[q | k | v]``) go through a causal depthwise convolution and
``silu``; ``beta = sigmoid(x W_b)`` and the log-decay ``g = -exp(A_log) softplus(x W_a + dt_bias)``
are per value head. The state ``S`` ``[k_head_dim, v_head_dim]`` of each value head follows the
gated delta rule ``S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - k_t^T exp(g_t) S_{t-1}))^T``
(``q`` and ``k`` L2-normalised, ``q`` scaled by ``1/sqrt(d_k)``); the output ``o_t = S_t^T q_t``
passes a gated RMSNorm (``rms(o) * w * silu(z)``) and ``W_out``. A prompt runs HF's chunked
algorithm (``torch_chunk_gated_delta_rule``), single cached steps its recurrent form, as HF does.

Parameters: ``W_q``/``W_k [d_model, k_heads * d_k]``, ``W_v``/``W_z [d_model, v_heads * d_v]``,
``W_b``/``W_a [d_model, v_heads]``, ``conv_W [channels, kernel]``, ``dt_bias``/``A_log [v_heads]``,
``norm_w [d_v]``, ``W_out [v_heads * d_v, d_model]``.

Hooks (``blocks.{i}.linear_attn.``): ``hook_q``/``hook_k`` ``[batch, pos, k_head, d_k]`` and
``hook_v`` ``[batch, pos, v_head, d_v]`` (after the convolution); ``hook_z`` (the output gate's
input), ``[batch, pos, v_head, d_v]``; ``hook_beta`` and ``hook_decay`` (``g``)
``[batch, pos, v_head]``;
``hook_ssm_state`` ``[batch, pos, v_head, d_k, d_v]`` (the state after each position; hooking it
runs the recurrent form, and an edit changes that position's output only); ``hook_y`` (the rule's
output) and ``hook_post`` (after the gated norm: the input of ``W_out``, heads flattened).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.activations import get_activation
from tlcore.components.context import ForwardContext
from tlcore.components.layout import LinearLayout
from tlcore.components.mixer import (
    MixerTrait,
    SequenceMixer,
    causal_conv,
    load_state,
    padding_mask,
    save_state,
)
from tlcore.components.norms import at_least_fp32
from tlcore.components.residual_io import Reader
from tlcore.hook_points import HookPoint


class GatedDeltaNetTrait(MixerTrait):
    """Gated DeltaNet parameters (HF ``Qwen3NextConfig``'s ``linear_*`` fields)."""

    linear_io = True
    kind: Literal["gated_deltanet"] = "gated_deltanet"
    n_k_heads: int
    n_v_heads: int
    d_k: int
    d_v: int
    conv_kernel: int
    act: str = "silu"
    norm_eps: float = 1e-6
    chunk_size: int = 64


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)


def _prepare(q, k, v, beta, g):  # type: ignore[no-untyped-def]
    """Heads first, fp32, value-head groups expanded, q/k normalised, q scaled."""
    group = v.shape[2] // k.shape[2]
    if group > 1:
        q, k = q.repeat_interleave(group, dim=2), k.repeat_interleave(group, dim=2)
    work = torch.promote_types(v.dtype, torch.float32)  # HF: fp32 (float64 stays float64 here)
    q, k, v, beta, g = (
        t.transpose(1, 2).to(work, memory_format=torch.contiguous_format)
        for t in (q, k, v, beta, g)
    )
    q, k = _l2norm(q), _l2norm(k)
    return q * q.shape[-1] ** -0.5, k, v, beta, g


def recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None,
    keep_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The gated delta rule one position at a time (HF's ``torch_recurrent_gated_delta_rule``).

    Args:
        q: ``[batch, pos, k_head, d_k]``.
        k: Keys, like ``q``.
        v: ``[batch, pos, v_head, d_v]``.
        g: Log-decays ``[batch, pos, v_head]``.
        beta: Write strengths ``[batch, pos, v_head]``.
        state: ``[batch, v_head, d_k, d_v]`` before the first position, or None (zeros).
        keep_states: Also return the state after every position.

    Returns:
        ``(output [batch, pos, v_head, d_v], last state, all states [batch, pos, ...] or None)``.
    """
    dtype = q.dtype
    q, k, v, beta, g = _prepare(q, k, v, beta, g)
    batch, heads, pos, d_k = k.shape
    s = v.new_zeros(batch, heads, d_k, v.shape[-1]) if state is None else state.to(v)
    out, states = torch.zeros_like(v), []
    for t in range(pos):
        s = s * g[:, :, t].exp()[..., None, None]
        kv_mem = (s * k[:, :, t, :, None]).sum(dim=-2)
        delta = (v[:, :, t] - kv_mem) * beta[:, :, t, None]
        s = s + k[:, :, t, :, None] * delta[:, :, None, :]
        out[:, :, t] = (s * q[:, :, t, :, None]).sum(dim=-2)
        if keep_states:
            states.append(s)
    all_states = torch.stack(states, dim=1) if keep_states and states else None
    return out.transpose(1, 2).contiguous().to(dtype), s, all_states


def chunked_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule in chunks (HF's ``torch_chunk_gated_delta_rule``, op for op).

    Args:
        q: ``[batch, pos, k_head, d_k]``.
        k: Keys, like ``q``.
        v: ``[batch, pos, v_head, d_v]``.
        g: Log-decays ``[batch, pos, v_head]``.
        beta: Write strengths ``[batch, pos, v_head]``.
        state: The state before the first position, or None (zeros).
        chunk: Chunk length.

    Returns:
        ``(output [batch, pos, v_head, d_v], last state [batch, v_head, d_k, d_v])``.
    """
    dtype, pos = q.dtype, q.shape[1]
    q, k, v, beta, g = _prepare(q, k, v, beta, g)
    batch, heads, _, d_k = k.shape
    pad = (chunk - pos % chunk) % chunk
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    beta, g = (F.pad(t, (0, pad)) for t in (beta, g))
    v_beta, k_beta = v * beta[..., None], k * beta[..., None]
    q, k, k_beta, v_beta = (
        t.reshape(batch, heads, -1, chunk, t.shape[-1]) for t in (q, k, k_beta, v_beta)
    )
    cum = g.reshape(batch, heads, -1, chunk).cumsum(dim=3)
    upper = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    pair = (cum.unsqueeze(4) - cum.unsqueeze(3)).masked_fill(upper, float("-inf")).exp()
    system = (k_beta @ k.transpose(-1, -2)) * pair
    intra = (q @ k.transpose(-1, -2)) * pair
    decayed_k_beta = k_beta * cum.exp().unsqueeze(-1)
    new_v = torch.linalg.solve_triangular(system, v_beta, upper=False, unitriangular=True)
    k_cum = torch.linalg.solve_triangular(system, decayed_k_beta, upper=False, unitriangular=True)
    s = new_v.new_zeros(batch, heads, d_k, v.shape[-1]) if state is None else state.to(new_v)
    out = torch.zeros_like(new_v)
    q = q * cum.exp().unsqueeze(-1)
    k = k * (cum[..., -1:] - cum).exp().unsqueeze(-1)
    chunk_decay = cum[..., -1].exp()[..., None, None]
    for i in range(q.shape[2]):
        v_new = new_v[:, :, i] - k_cum[:, :, i] @ s
        out[:, :, i] = q[:, :, i] @ s + intra[:, :, i] @ v_new
        s = s * chunk_decay[:, :, i] + k[:, :, i].transpose(-1, -2) @ v_new
    out = out.reshape(batch, heads, -1, v.shape[-1])[:, :, :pos]
    return out.transpose(1, 2).to(dtype, memory_format=torch.contiguous_format), s


class GatedDeltaNet(LinearLayout, SequenceMixer):
    """Qwen3-Next's linear attention (see the module docstring for parameters and hooks).

    Args:
        trait: Gated DeltaNet parameters.
        cfg: The model config (``d_model``, ``dtype``).
        layer: The layer index.
    """

    hf_names = ("linear_attn",)
    hf_output_names = ("out_proj",)
    branch = "linear_attn"
    linear_layouts = {k: "matrix" for k in ("W_q", "W_k", "W_v", "W_z", "W_b", "W_a", "W_out")}

    def __init__(self, trait: GatedDeltaNetTrait, cfg: Any, layer: int) -> None:
        super().__init__(cfg, layer)
        self.trait = trait
        d_model, dtype = cfg.d_model, cfg.dtype
        key_dim, value_dim = trait.n_k_heads * trait.d_k, trait.n_v_heads * trait.d_v
        self.act = get_activation(trait.act)
        for name, width in (("q", key_dim), ("k", key_dim), ("v", value_dim), ("z", value_dim)):
            setattr(self, f"W_{name}", nn.Parameter(torch.empty(d_model, width, dtype=dtype)))
        self.W_b = nn.Parameter(torch.empty(d_model, trait.n_v_heads, dtype=dtype))
        self.W_a = nn.Parameter(torch.empty(d_model, trait.n_v_heads, dtype=dtype))
        channels = 2 * key_dim + value_dim
        self.conv_W = nn.Parameter(torch.empty(channels, trait.conv_kernel, dtype=dtype))
        self.dt_bias = nn.Parameter(torch.empty(trait.n_v_heads, dtype=dtype))
        self.A_log = nn.Parameter(torch.empty(trait.n_v_heads, dtype=dtype))
        self.norm_w = nn.Parameter(torch.empty(trait.d_v, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(value_dim, d_model, dtype=dtype))
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_beta = HookPoint()
        self.hook_decay = HookPoint()
        self.hook_ssm_state = HookPoint()
        self.hook_y = HookPoint()
        self.hook_post = HookPoint()

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        return [Reader(self, f"W_{n}", f"b_{n}", 0) for n in "qkvzba"]

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        bias = getattr(self, f"b_{name}", None)  # created only by folding a LayerNorm bias in
        return F.linear(x, getattr(self, f"W_{name}").T, bias)

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"], ctx: ForwardContext
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Mix ``x`` (the normalised residual) along positions.

        Args:
            x: ``[batch, pos, d_model]``.
            ctx: The forward context (padding mask, the KV cache holding the state).

        Returns:
            The mixer output ``[batch, pos, d_model]``.
        """
        trait, mask = self.trait, padding_mask(ctx)
        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)
        batch, pos, _ = x.shape
        qkv = torch.cat([self._linear(x, n) for n in "qkv"], dim=-1)
        past = load_state(ctx, self.layer)
        conv, tail = causal_conv(
            qkv.transpose(1, 2), self.conv_W, None, past["conv"] if past else None
        )
        key_dim, value_dim = trait.n_k_heads * trait.d_k, trait.n_v_heads * trait.d_v
        mixed = self.act(conv).transpose(1, 2)
        q, k, v = torch.split(mixed, [key_dim, key_dim, value_dim], dim=-1)
        q = self.hook_q(q.reshape(batch, pos, trait.n_k_heads, trait.d_k))
        k = self.hook_k(k.reshape(batch, pos, trait.n_k_heads, trait.d_k))
        v = self.hook_v(v.reshape(batch, pos, trait.n_v_heads, trait.d_v))
        z = self.hook_z(self._linear(x, "z").reshape(batch, pos, trait.n_v_heads, trait.d_v))
        beta = self.hook_beta(self._linear(x, "b").sigmoid())
        a = at_least_fp32(self._linear(x, "a"))  # HF: float32 (float64 stays float64 here)
        g = self.hook_decay(-at_least_fp32(self.A_log).exp() * F.softplus(a + self.dt_bias))
        state = past["recurrent"] if past else None
        if self.hook_ssm_state.has_hooks or (state is not None and pos == 1):
            y, last, states = recurrent_delta_rule(
                q, k, v, g, beta, state, self.hook_ssm_state.has_hooks
            )
            if states is not None:  # the output read from the (possibly edited) states
                states = self.hook_ssm_state(states)
                q_read = _prepare(q, k, v, beta, g)[0].transpose(1, 2)
                y = (states * q_read[..., None]).sum(dim=-2).to(y.dtype)
        else:
            y, last = chunked_delta_rule(q, k, v, g, beta, state, trait.chunk_size)
        save_state(ctx, self.layer, {"conv": tail, "recurrent": last})
        y = self.hook_y(y)
        post = self.hook_post(self._gated_norm(y, z).reshape(batch, pos, -1))
        return F.linear(post, self.W_out.T)

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """HF's ``Qwen3NextRMSNormGated``: ``rms(y) * w * silu(z)`` over each head's ``d_v``."""
        dtype = y.dtype
        work = torch.promote_types(dtype, torch.float32)
        yf = y.to(work)
        yf = yf * torch.rsqrt(yf.pow(2).mean(-1, keepdim=True) + self.trait.norm_eps)
        out = self.norm_w * yf.to(dtype)
        return (out * F.silu(z.to(work))).to(dtype)


def make_gated_deltanet(trait: GatedDeltaNetTrait, cfg: Any, layer: int) -> GatedDeltaNet:
    """Component factory for ``mixer/gated_deltanet``.

    Returns:
        The module.
    """
    return GatedDeltaNet(trait, cfg, layer)

"""Mamba-2's multi-head state-space mixer (SSD), in plain torch.

Per layer: ``z, xBC, dt = in_proj(h)``; ``xBC = act(conv(xBC))`` (depthwise, causal) split into
``x`` (``heads * head_dim``) and ``B``, ``C`` (``groups * d_state``, each group shared by
``heads / groups`` heads); ``dt = clamp(softplus(dt + dt_bias))`` per head; per head the state
``s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t^T`` (``A`` a scalar per head) and
``y_t = s_t C_t + D x_t``; then a gated RMSNorm per group (``rms(y * silu(z)) * w``) and
``out_proj``. A prompt runs HF's chunked SSD algorithm (``mamba2_chunk_scan``), a single cached
step its recurrent update, as HF does.

Parameters: ``W_gate [d_model, d_inner]``, ``W_in [d_model, d_inner + 2 groups d_state]``,
``W_dt [d_model, heads]`` (the three parts of HF's ``in_proj``; ``b_gate``/``b_in``/``b_dt`` with
``use_bias``),
``conv_W [channels, kernel]``, ``conv_b``, ``dt_bias``/``A_log``/``D [heads]``,
``norm_w [d_inner]``, ``W_out [d_inner, d_model]``, ``b_out``.

Hooks (``blocks.{i}.mixer.``): ``hook_gate`` (``z``) ``[batch, pos, d_inner]``; ``hook_conv``
(``xBC`` after the convolution and activation); ``hook_x`` ``[batch, pos, head, head_dim]``;
``hook_B``, ``hook_C`` ``[batch, pos, group, d_state]``; ``hook_dt`` ``[batch, pos, head]``;
``hook_ssm_state`` ``[batch, pos, head, head_dim, d_state]`` (computed only when hooked, by the
recurrent form; an edit changes that position's output only); ``hook_y`` (the scan output with the
``D`` skip) and ``hook_post`` (after the gated norm: the input of ``W_out``).
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


class Mamba2Trait(MixerTrait):
    """Mamba-2 parameters (HF ``Mamba2Config``)."""

    linear_io = True
    kind: Literal["mamba2"] = "mamba2"
    n_heads: int
    head_dim: int
    n_groups: int
    d_state: int
    conv_kernel: int
    chunk_size: int = 256
    act: str = "silu"
    bias: bool = False
    conv_bias: bool = True
    norm_eps: float = 1e-5
    dt_limit: tuple[float, float] = (0.0, float("inf"))


def _segment_sum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = sum(x[..., j+1 : i+1])`` below the diagonal, ``-inf`` above (HF's)."""
    size = x.size(-1)
    x = x[..., None].expand(*x.size(), size)
    below = torch.tril(torch.ones(size, size, device=x.device, dtype=torch.bool), diagonal=-1)
    sums = torch.cumsum(x.masked_fill(~below, 0), dim=-2)
    keep = torch.tril(torch.ones(size, size, device=x.device, dtype=torch.bool), diagonal=0)
    return sums.masked_fill(~keep, -torch.inf)


def _chunks(t: torch.Tensor, pad: int, chunk: int) -> torch.Tensor:
    """Pad the position axis (1) by ``pad`` and fold it into ``[n_chunks, chunk]``."""
    widths = [0, 0] * (t.dim() - 2) + [0, pad]
    t = F.pad(t, widths)
    return t.reshape(t.shape[0], -1, chunk, *t.shape[2:])


def chunked_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    state: torch.Tensor | None,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2's scan in chunks (HF's ``mamba2_chunk_scan``, op for op).

    Args:
        x: ``[batch, pos, head, head_dim]``.
        dt: Step sizes after softplus and clamp ``[batch, pos, head]``.
        A: ``[head]`` (negative).
        B: ``[batch, pos, group, d_state]``.
        C: Like ``B``.
        D: The skip ``[head]``.
        state: ``[batch, head, head_dim, d_state]`` before the first position, or None.
        chunk: Chunk length.

    Returns:
        ``(y [batch, pos, head, head_dim] with the skip, last state)``.
    """
    batch, pos, heads, _ = x.shape
    work = torch.promote_types(x.dtype, torch.float32)
    x = x.to(work)
    group = heads // B.shape[2]
    B = B.to(work).repeat_interleave(group, dim=2, output_size=heads)
    C = C.to(work).repeat_interleave(group, dim=2, output_size=heads)
    pad = (chunk - pos % chunk) % chunk
    skip = D[..., None] * F.pad(x, [0, 0, 0, 0, 0, pad])
    x = x * dt[..., None].to(work)
    A = A.to(work) * dt.to(work)
    x, A, B, C = (_chunks(t, pad, chunk) for t in (x, A, B, C))
    A = A.permute(0, 3, 1, 2)
    A_cum = torch.cumsum(A, dim=-1)
    L = torch.exp(_segment_sum(A))
    G = torch.einsum("bclhn,bcshn->bclsh", C, B)
    M = G * L.permute(0, 2, 3, 4, 1)
    y_diag = torch.einsum("bclsh,bcshp->bclhp", M, x)
    decay = torch.exp(A_cum[:, :, :, -1:] - A_cum)
    B_decay = B * decay.permute(0, -2, -1, 1)[..., None]
    states = torch.einsum("bclhn,bclhp->bchpn", B_decay, x)
    first = state[:, None].to(states) if state is not None else torch.zeros_like(states[:, :1])
    states = torch.cat([first, states], dim=1)
    decay_chunk = torch.exp(_segment_sum(F.pad(A_cum[:, :, :, -1], (1, 0)))).transpose(1, 3)
    new_states = torch.einsum("bzch,bzhpn->bchpn", decay_chunk, states)
    states, last = new_states[:, :-1], new_states[:, -1]
    C_states = torch.einsum("bclhn,bchpn->bclhp", C, states)
    y_off = C_states * torch.exp(A_cum).permute(0, 2, 3, 1)[..., None]
    y = (y_diag + y_off).contiguous().reshape(batch, -1, heads, x.shape[-1]) + skip
    return y[:, :pos], last


def recurrent_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    state: torch.Tensor | None,
    keep_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mamba-2's scan one position at a time (HF's ``mamba2_selective_state_update``).

    Args:
        x: ``[batch, pos, head, head_dim]``.
        dt: Step sizes after softplus ``[batch, pos, head]``.
        A: ``[head]``.
        B: ``[batch, pos, group, d_state]``.
        C: Like ``B``.
        D: ``[head]``.
        state: The state before the first position, or None (zeros).
        keep_states: Also return the state after every position.

    Returns:
        ``(y with the skip, last state, all states [batch, pos, ...] or None)``.
    """
    batch, pos, heads, head_dim = x.shape
    group = heads // B.shape[2]
    if state is None:
        state = torch.zeros(batch, heads, head_dim, B.shape[-1], dtype=A.dtype, device=x.device)
    ys, states = [], []
    for t in range(pos):
        step = dt[:, t, :, None, None].expand(-1, -1, head_dim, 1)
        dA = torch.exp(at_least_fp32(step) * at_least_fp32(A)[:, None, None]).to(state)
        B_t = B[:, t].repeat_interleave(group, dim=1)[:, :, None, :]
        state = state * dA + ((step * B_t) * x[:, t, ..., None]).to(state)
        C_t = C[:, t].repeat_interleave(group, dim=1).to(state.dtype)
        out = torch.bmm(
            state.reshape(batch * heads, head_dim, -1), C_t.reshape(-1, C_t.shape[-1], 1)
        )
        ys.append(out.view(batch, heads, head_dim) + x[:, t] * D[:, None])
        if keep_states:
            states.append(state)
    y = torch.stack(ys, dim=1).to(x.dtype)
    return y, state, (torch.stack(states, dim=1) if keep_states else None)


class Mamba2Mixer(LinearLayout, SequenceMixer):
    """Mamba-2's mixer (see the module docstring for parameters and hooks).

    Args:
        trait: Mamba-2 parameters.
        cfg: The model config (``d_model``, ``dtype``).
        layer: The layer index.
    """

    hf_names = ("mixer", "mamba")  # Mamba2Model, GraniteMoeHybrid
    hf_output_names = ("out_proj",)
    linear_layouts = {k: "matrix" for k in ("W_gate", "W_in", "W_dt", "W_out")}

    def __init__(self, trait: Mamba2Trait, cfg: Any, layer: int) -> None:
        super().__init__(cfg, layer)
        self.trait = trait
        d_model, dtype, heads = cfg.d_model, cfg.dtype, trait.n_heads
        d_inner = heads * trait.head_dim
        channels = d_inner + 2 * trait.n_groups * trait.d_state
        self.act = get_activation(trait.act)
        for name, width in (("gate", d_inner), ("in", channels), ("dt", heads)):
            setattr(self, f"W_{name}", nn.Parameter(torch.empty(d_model, width, dtype=dtype)))
            bias = nn.Parameter(torch.zeros(width, dtype=dtype)) if trait.bias else None
            setattr(self, f"b_{name}", bias)
        self.conv_W = nn.Parameter(torch.empty(channels, trait.conv_kernel, dtype=dtype))
        self.conv_b = nn.Parameter(torch.zeros(channels, dtype=dtype)) if trait.conv_bias else None
        self.dt_bias = nn.Parameter(torch.empty(heads, dtype=dtype))
        self.A_log = nn.Parameter(torch.empty(heads, dtype=dtype))
        self.D = nn.Parameter(torch.empty(heads, dtype=dtype))
        self.norm_w = nn.Parameter(torch.empty(d_inner, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_inner, d_model, dtype=dtype))
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self.hook_gate = HookPoint()
        self.hook_conv = HookPoint()
        self.hook_x = HookPoint()
        self.hook_B = HookPoint()
        self.hook_C = HookPoint()
        self.hook_dt = HookPoint()
        self.hook_ssm_state = HookPoint()
        self.hook_y = HookPoint()
        self.hook_post = HookPoint()

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        return [Reader(self, f"W_{n}", f"b_{n}", 0) for n in ("gate", "in", "dt")]

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
        batch, pos, _ = x.shape
        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)
        # One projection for the three parts, as HF's in_proj (the same kernel, bit for bit).
        parts = ("gate", "in", "dt")
        weight = torch.cat([getattr(self, f"W_{n}").T for n in parts], dim=0)
        widths = [getattr(self, f"W_{n}").shape[-1] for n in parts]
        biases = [getattr(self, f"b_{n}", None) for n in parts]
        bias = None  # biases come with use_bias, or from folding a LayerNorm's bias in
        if any(b is not None for b in biases):
            bias = torch.cat(
                [b if b is not None else x.new_zeros(w) for b, w in zip(biases, widths)]
            )
        z, xbc, dt = F.linear(x, weight, bias).split(widths, dim=-1)
        z = self.hook_gate(z)
        past = load_state(ctx, self.layer)
        conv, tail = causal_conv(
            xbc.transpose(1, 2), self.conv_W, self.conv_b, past["conv"] if past else None
        )
        xbc = self.hook_conv(self.act(conv).transpose(1, 2))
        if mask is not None:
            xbc = xbc * mask[:, :, None].to(xbc.dtype)
        group_width = trait.n_groups * trait.d_state
        u, B, C = torch.split(xbc, [xbc.shape[-1] - 2 * group_width, group_width, group_width], -1)
        u = self.hook_x(u.reshape(batch, pos, trait.n_heads, trait.head_dim))
        B = self.hook_B(B.reshape(batch, pos, trait.n_groups, trait.d_state))
        C = self.hook_C(C.reshape(batch, pos, trait.n_groups, trait.d_state))
        A = -torch.exp(at_least_fp32(self.A_log))
        state = past["ssm"] if past else None
        recurrent = self.hook_ssm_state.has_hooks or (state is not None and pos == 1)
        dt = F.softplus(dt + self.dt_bias.to(dt.dtype))
        if not recurrent:  # HF clamps in its chunked scan only
            dt = torch.clamp(dt, min=trait.dt_limit[0], max=trait.dt_limit[1])
        dt = self.hook_dt(dt)
        if recurrent:
            keep = self.hook_ssm_state.has_hooks
            y, last, states = recurrent_ssd(u, dt, A, B, C, self.D, state, keep)
            if states is not None:  # the output read from the (possibly edited) states
                states = self.hook_ssm_state(states)
                C_h = C.repeat_interleave(trait.n_heads // trait.n_groups, dim=2)
                y = (states @ C_h[..., None].to(states.dtype))[..., 0] + u * self.D[:, None]
                y = y.to(u.dtype)
        else:
            y, last = chunked_ssd(u, dt, A, B, C, self.D, state, trait.chunk_size)
        save_state(ctx, self.layer, {"conv": tail, "ssm": last})
        y = self.hook_y(y.reshape(batch, pos, -1))
        post = self.hook_post(self._gated_norm(y, z))
        return F.linear(post.to(x.dtype), self.W_out.T, self.b_out)

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """HF's ``Mamba2RMSNormGated``: ``rms(y * silu(z))`` per group, times the weight."""
        dtype = y.dtype
        work = torch.promote_types(dtype, torch.float32)
        h = y.to(work) * F.silu(z.to(work))
        grouped = h.view(*h.shape[:-1], self.trait.n_groups, -1)
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.trait.norm_eps)
        return self.norm_w * grouped.view(h.shape).to(dtype)


def make_mamba2(trait: Mamba2Trait, cfg: Any, layer: int) -> Mamba2Mixer:
    """Component factory for ``mixer/mamba2``.

    Returns:
        The module.
    """
    return Mamba2Mixer(trait, cfg, layer)

"""Mamba's selective state-space mixer (Mamba-1 and Falcon-Mamba), in plain torch.

Per layer: ``x, z = in_proj(h)``; ``x = act(conv(x))`` (depthwise, causal); ``dt, B, C = x_proj(x)``
(Falcon-Mamba: each RMS-normalised without a weight); ``dt = softplus(dt_proj(dt))``; the selective
scan ``s_t = exp(dt_t A) s_{t-1} + dt_t B_t x_t``, ``y_t = C_t s_t + D x_t``; output
``out_proj(y * silu(z))``. This is HF's torch path (``MambaMixer`` without kernels) step for step.

Parameters: ``W_in``/``W_gate [d_model, d_inner]`` (the two halves of HF's ``in_proj``) with
``b_in``/``b_gate``, ``conv_W [d_inner, kernel]``, ``conv_b`` (when the checkpoint has one),
``W_x [d_inner, dt_rank + 2 d_state]`` (HF's ``x_proj``), ``W_dt [dt_rank, d_inner]``, ``b_dt``,
``A_log [d_inner, d_state]`` (``A = -exp(A_log)``), ``D [d_inner]``, ``W_out [d_inner, d_model]``,
``b_out``.

Hooks (``blocks.{i}.mixer.``): ``hook_in`` (``x`` before the convolution) and ``hook_gate``
(``z``), ``[batch, pos, d_inner]``; ``hook_conv`` (after the convolution and activation);
``hook_dt`` (the step size after softplus); ``hook_B``, ``hook_C`` ``[batch, pos, d_state]``;
``hook_ssm_state`` ``[batch, pos, d_inner, d_state]`` (the state after each position, computed
only when hooked; an edit changes that position's output, not later states); ``hook_y`` (the scan
output ``C s + D x``) and ``hook_post`` (``y * silu(z)``, the input of ``W_out``).
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


class MambaTrait(MixerTrait):
    """Mamba-1 parameters (HF ``MambaConfig`` / ``FalconMambaConfig``)."""

    linear_io = True
    kind: Literal["mamba"] = "mamba"
    d_inner: int
    d_state: int
    conv_kernel: int
    dt_rank: int
    act: str = "silu"
    bias: bool = False
    """Whether ``in_proj``/``out_proj`` have biases (HF ``use_bias``)."""
    conv_bias: bool = True
    bc_dt_norm_eps: float | None = None
    """Falcon-Mamba: RMS-normalise ``dt``, ``B`` and ``C`` (no weight) with this epsilon."""


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's weightless RMSNorm (in at least fp32, cast back)."""
    xf = at_least_fp32(x)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def selective_scan(
    x: Float[torch.Tensor, "batch pos d_inner"],
    dt: Float[torch.Tensor, "batch pos d_inner"],
    A: Float[torch.Tensor, "d_inner d_state"],
    B: Float[torch.Tensor, "batch pos d_state"],
    C: Float[torch.Tensor, "batch pos d_state"],
    state: Float[torch.Tensor, "batch d_inner d_state"] | None,
    keep_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mamba's recurrence ``s_t = exp(dt_t A) s_{t-1} + dt_t B_t x_t``, ``y_t = s_t C_t``.

    Args:
        x: The scan input (after the convolution).
        dt: Step sizes (after softplus).
        A: The (negative) state matrix.
        B: Input projections.
        C: Output projections.
        state: The state before the first position (None: zeros).
        keep_states: Also return the state after every position.

    Returns:
        ``(y [batch, pos, d_inner] without the D skip, last state, all states or None)``.

    Example:
        >>> y, s, _ = selective_scan(torch.ones(1, 2, 1), torch.ones(1, 2, 1),
        ...                          torch.zeros(1, 1), torch.ones(1, 2, 1),
        ...                          torch.ones(1, 2, 1), None)
        >>> y.flatten().tolist(), s.item()   # A = 0: the state sums dt * B * x
        ([1.0, 2.0], 2.0)
    """
    batch, pos, d_inner = x.shape
    decay = torch.exp(A[None, None] * dt[..., None])  # [batch, pos, d_inner, d_state]
    drive = (dt[..., None] * at_least_fp32(B)[:, :, None, :]) * at_least_fp32(x)[..., None]
    s = at_least_fp32(state) if state is not None else x.new_zeros(batch, d_inner, A.shape[-1])
    ys, states = [], []
    for t in range(pos):
        s = decay[:, t] * s + drive[:, t]
        ys.append(torch.matmul(s.to(x.dtype), C[:, t, :, None])[..., 0])
        if keep_states:
            states.append(s)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(batch, 0, d_inner)
    return y, s, (torch.stack(states, dim=1) if keep_states and states else None)


class MambaMixer(LinearLayout, SequenceMixer):
    """Mamba-1's mixer (see the module docstring for parameters and hooks).

    Args:
        trait: Mamba parameters.
        cfg: The model config (``d_model``, ``dtype``).
        layer: The layer index.
    """

    hf_output_names = ("out_proj",)
    linear_layouts = {k: "matrix" for k in ("W_in", "W_gate", "W_x", "W_dt", "W_out")}

    def __init__(self, trait: MambaTrait, cfg: Any, layer: int) -> None:
        super().__init__(cfg, layer)
        self.trait = trait
        d_model, d_inner, n, dtype = cfg.d_model, trait.d_inner, trait.d_state, cfg.dtype
        self.act = get_activation(trait.act)
        self.W_in = nn.Parameter(torch.empty(d_model, d_inner, dtype=dtype))
        self.W_gate = nn.Parameter(torch.empty(d_model, d_inner, dtype=dtype))
        self.b_in = nn.Parameter(torch.zeros(d_inner, dtype=dtype))
        self.b_gate = nn.Parameter(torch.zeros(d_inner, dtype=dtype))
        self.conv_W = nn.Parameter(torch.empty(d_inner, trait.conv_kernel, dtype=dtype))
        self.conv_b = nn.Parameter(torch.zeros(d_inner, dtype=dtype)) if trait.conv_bias else None
        self.W_x = nn.Parameter(torch.empty(d_inner, trait.dt_rank + 2 * n, dtype=dtype))
        self.W_dt = nn.Parameter(torch.empty(trait.dt_rank, d_inner, dtype=dtype))
        self.b_dt = nn.Parameter(torch.zeros(d_inner, dtype=dtype))
        self.A_log = nn.Parameter(torch.empty(d_inner, n, dtype=dtype))
        self.D = nn.Parameter(torch.empty(d_inner, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_inner, d_model, dtype=dtype))
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self.hook_in = HookPoint()
        self.hook_gate = HookPoint()
        self.hook_conv = HookPoint()
        self.hook_dt = HookPoint()
        self.hook_B = HookPoint()
        self.hook_C = HookPoint()
        self.hook_ssm_state = HookPoint()
        self.hook_y = HookPoint()
        self.hook_post = HookPoint()

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        return [Reader(self, "W_in", "b_in", 0), Reader(self, "W_gate", "b_gate", 0)]

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
        # One projection for both halves, as HF's in_proj (the same kernel, bit for bit).
        weight = torch.cat([self.W_in.T, self.W_gate.T], dim=0)
        u, z = F.linear(x, weight, torch.cat([self.b_in, self.b_gate])).chunk(2, dim=-1)
        u, z = self.hook_in(u), self.hook_gate(z)
        past = load_state(ctx, self.layer)
        conv, conv_tail = causal_conv(
            u.transpose(1, 2),
            self.conv_W,
            self.conv_b,
            past["conv"] if past else None,
        )
        u = self.hook_conv(self.act(conv).transpose(1, 2))
        if mask is not None:
            u = u * mask[:, :, None].to(u.dtype)
        dt, B, C = torch.split(
            F.linear(u, self.W_x.T), [trait.dt_rank, trait.d_state, trait.d_state], dim=-1
        )
        if trait.bc_dt_norm_eps is not None:
            dt, B, C = (_rms(t, trait.bc_dt_norm_eps) for t in (dt, B, C))
        dt = (self.W_dt.T @ dt.transpose(1, 2)).transpose(1, 2)
        dt = self.hook_dt(F.softplus(dt + at_least_fp32(self.b_dt)))
        B, C = self.hook_B(B), self.hook_C(C)
        A = -torch.exp(at_least_fp32(self.A_log))
        keep = self.hook_ssm_state.has_hooks
        y, state, states = selective_scan(u, dt, A, B, C, past["ssm"] if past else None, keep)
        if states is not None:
            states = self.hook_ssm_state(states)
            y = torch.matmul(states.to(u.dtype), C[..., None])[..., 0]
        save_state(ctx, self.layer, {"conv": conv_tail, "ssm": state})
        y = self.hook_y(y + u * self.D)
        post = self.hook_post(y * F.silu(z))
        return F.linear(post.to(x.dtype), self.W_out.T, self.b_out)


def make_mamba(trait: MambaTrait, cfg: Any, layer: int) -> MambaMixer:
    """Component factory for ``mixer/mamba``.

    Returns:
        The module.
    """
    return MambaMixer(trait, cfg, layer)

"""Feed-forward layers: plain ``W_out act(W_in x)`` and gated ``W_out (act(W_gate x) * W_in x)``.

TransformerLens's hooks: ``hook_pre`` (the activation's input: ``W_in x`` for plain, ``W_gate x``
for gated), ``hook_pre_linear`` (gated only: ``W_in x``) and ``hook_post`` (the activation's
output). A plain MLP with ``act_norm`` (TransformerLens's ``act_fn="solu_ln"``) normalises the
activation: ``hook_mid`` holds ``act(pre)``, its LayerNorm is ``mlp.ln``, and ``hook_post`` the
normalised output. A trainable activation (``xielu``) is a module, ``mlp.act_fn``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.activations import make_activation
from tlcore.components.layout import LinearLayout
from tlcore.components.norms import LayerNormTrait, make_layernorm
from tlcore.components.residual_io import HFProbe, Reader, ResidualIO, Writer
from tlcore.errors import SpecError
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait


class PlainMLPTrait(Trait):
    """A two-layer MLP; ``act`` defaults to the config's ``act_fn``.

    ``act_norm``: a LayerNorm over ``d_mlp`` after the activation (SoLU's, TransformerLens's
    ``act_fn="solu_ln"``; without weight and bias for its LNPre models), exposing ``hook_mid``
    (before it) and ``mlp.ln``.
    """

    slot = "mlp"
    linear_io = True
    kind: Literal["plain"] = "plain"
    act: str | None = None
    bias: bool = True
    act_norm: LayerNormTrait | None = None

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        if self.act is not None:
            cfg.setdefault("act_fn", self.act)
        cfg.setdefault("gated_mlp", False)


class GatedMLPTrait(Trait):
    """A gated MLP (SwiGLU / GeGLU); ``act`` defaults to the config's ``act_fn``."""

    slot = "mlp"
    linear_io = True
    kind: Literal["gated"] = "gated"
    act: str | None = None
    bias: bool = False

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        if self.act is not None:
            cfg.setdefault("act_fn", self.act)
        cfg.setdefault("gated_mlp", True)


class MLP(LinearLayout, ResidualIO):
    """Plain MLP: ``W_in [d_model, d_mlp]``, ``b_in``, ``W_out [d_mlp, d_model]``, ``b_out``.

    Args:
        d_model: Input/output width.
        d_mlp: Hidden width.
        act: Activation name (``gelu_new``, ``silu``...).
        dtype: Parameter dtype.
    """

    hf_names = ("mlp", "feed_forward", "block_sparse_moe")
    hf_output_names = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")

    def __init__(
        self,
        d_model: int,
        d_mlp: int,
        act: str,
        dtype: torch.dtype,
        act_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.act_fn = make_activation(act)
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.b_in = nn.Parameter(torch.zeros(d_mlp, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model, dtype=dtype))
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        self.ln = act_norm
        if act_norm is not None:
            self.hook_mid = HookPoint()

    linear_layouts = {"W_in": "matrix", "W_gate": "matrix", "W_out": "matrix"}

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        readers = [Reader(self, "W_in", "b_in", 0)]
        if isinstance(getattr(self, "W_gate", None), torch.Tensor):
            readers.append(Reader(self, "W_gate", "b_gate", 0))
        return readers

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [Writer(self, "W_out"), Writer(self, "b_out")]

    def output_bias(self) -> torch.Tensor | None:  # noqa: D102
        return self.b_out

    def hf_probes(self) -> list[HFProbe]:  # noqa: D102
        return [HFProbe("hook_post", self.hf_output_names, "input")]

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Apply the MLP.

        Args:
            x: Normalised residual.

        Returns:
            MLP output.
        """
        pre = self.hook_pre(F.linear(x, self.W_in.T, self.b_in))
        if self.ln is not None:
            post = self.hook_post(self.ln(self.hook_mid(self.act_fn(pre))))
        else:
            post = self.hook_post(self.act_fn(pre))
        return F.linear(post, self.W_out.T, self.b_out)


class GatedMLP(MLP):
    """Gated MLP: adds ``W_gate [d_model, d_mlp]`` (and ``b_gate`` when the checkpoint has one).

    Args:
        d_model: Input/output width.
        d_mlp: Hidden width.
        act: Activation name, applied to the gate.
        dtype: Parameter dtype.
        gate_bias: Whether the gate projection has a bias.
    """

    def __init__(
        self, d_model: int, d_mlp: int, act: str, dtype: torch.dtype, gate_bias: bool = False
    ) -> None:
        super().__init__(d_model, d_mlp, act, dtype)
        self.W_gate = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.b_gate = nn.Parameter(torch.zeros(d_mlp, dtype=dtype)) if gate_bias else None
        self.hook_pre_linear = HookPoint()

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Apply the gated MLP.

        Args:
            x: Normalised residual.

        Returns:
            MLP output.
        """
        pre = self.hook_pre(F.linear(x, self.W_gate.T, self.b_gate))
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T, self.b_in))
        post = self.hook_post(self.act_fn(pre) * pre_linear)
        return F.linear(post, self.W_out.T, self.b_out)


def _act(trait: PlainMLPTrait | GatedMLPTrait, cfg: Any) -> str:
    act = trait.act or cfg.act_fn
    if act is None:
        raise SpecError(f"mlp/{trait.kind}: no activation (set 'act' or config 'act_fn')")
    return act


def make_plain_mlp(trait: PlainMLPTrait, cfg: Any, layer: int) -> MLP:
    """Component factory for ``mlp/plain`` (the same for every ``layer``).

    Returns:
        The module.
    """
    act_norm = None
    if trait.act_norm is not None:
        act_norm = make_layernorm(trait.act_norm, cfg.d_mlp, cfg.dtype)
    return MLP(cfg.d_model, cfg.d_mlp, _act(trait, cfg), cfg.dtype, act_norm)


def make_gated_mlp(trait: GatedMLPTrait, cfg: Any, layer: int) -> GatedMLP:
    """Component factory for ``mlp/gated`` (the same for every ``layer``).

    Returns:
        The module.
    """
    return GatedMLP(cfg.d_model, cfg.d_mlp, _act(trait, cfg), cfg.dtype, gate_bias=trait.bias)

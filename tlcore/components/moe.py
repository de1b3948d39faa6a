"""Mixture of experts: a router picks ``top_k`` experts per token (Mixtral, Qwen, GPT-OSS, Llama 4).

Parameter names follow TransformerLens: the router ``W_gate`` (an ``nn.Linear``: ``W_gate.weight
[expert, d_model]``) and ``experts.{e}.W_in/W_gate/W_out``. Hooks: ``hook_expert_weights`` (router
probabilities ``[batch*pos, expert]``), ``hook_expert_indices`` (``[batch*pos, top_k]``) and each
expert's MLP hooks over the tokens routed to it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.mlp import MLP, GatedMLP
from tlcore.components.residual_io import Reader, ResidualIO, Writer
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait


class MoETrait(Trait):
    """MoE parameters.

    ``routing``: ``softmax_topk`` (softmax over all experts, then top-k, optionally renormalised:
    Mixtral, Qwen), ``topk_softmax`` (top-k on the logits, softmax over those k: GPT-OSS) or
    ``topk_sigmoid`` (top-k on the logits, each chosen expert weighted by its logit's sigmoid:
    Llama 4). ``weigh_input``: the weight scales the expert's input instead of its output
    (Llama 4: ``expert(w * x)``, not ``w * expert(x)``).
    ``dense_layers`` marks layers that use a dense gated MLP of width ``d_mlp`` instead; so do the
    layers in ``dense_layer_indices`` and, with ``sparse_step`` > 1, every layer ``i`` where
    ``(i + 1) % sparse_step != 0`` (Qwen-MoE's ``mlp_only_layers`` / ``decoder_sparse_step``);
    with ``sparse_layers`` every layer not listed there (Llama 4's ``moe_layers``).
    ``expert_kind`` ``clamped_swiglu`` is GPT-OSS's ``(clamp(up)+1) * glu(clamp(gate))``.
    """

    slot = "mlp"
    linear_io = True
    routes_tokens = True
    kind: Literal["moe"] = "moe"
    n_experts: int
    top_k: int
    d_expert: int | None = None
    act: str | None = None
    routing: Literal["softmax_topk", "topk_softmax", "topk_sigmoid"] = "softmax_topk"
    weigh_input: bool = False
    renormalize: bool = True
    router_bias: bool = False
    expert_bias: bool = False
    expert_kind: Literal["gated", "clamped_swiglu"] = "gated"
    swiglu_limit: float = 7.0
    swiglu_alpha: float = 1.702
    shared_expert_size: int | None = None
    shared_expert_gate: bool = False
    shared_expert_outside: bool = False
    """HF computes the shared expert outside its routed-experts module (GraniteMoeHybrid's
    ``shared_mlp``), so that module's output is not this branch's: the parity probes skip it."""
    dense_layers: list[bool] | None = None
    dense_layer_indices: list[int] = []
    sparse_step: int = 1
    sparse_layers: list[int] | None = None

    def is_dense(self, layer: int) -> bool:
        """Tell whether a layer uses a dense gated MLP instead of the experts.

        Returns:
            True for a dense layer.
        """
        if self.dense_layers is not None and self.dense_layers[layer]:
            return True
        if self.sparse_layers is not None and layer not in self.sparse_layers:
            return True
        # No experts at all also means dense everywhere (HF's ``num_experts > 0`` condition).
        return (
            layer in self.dense_layer_indices
            or self.n_experts == 0
            or (layer + 1) % self.sparse_step != 0
        )

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("num_experts", self.n_experts)
        cfg.setdefault("experts_per_token", self.top_k)
        cfg.setdefault("gated_mlp", True)
        if self.act is not None:
            cfg.setdefault("act_fn", self.act)


class ClampedSwiGLUExpert(GatedMLP):
    """GPT-OSS expert: ``(clamp(up, ±L) + 1) * g * σ(α g)`` with ``g = min(gate, L)``.

    Args:
        d_model: Input/output width.
        d_mlp: Hidden width.
        dtype: Parameter dtype.
        limit: Clamp limit ``L``.
        alpha: Sigmoid slope ``α``.
    """

    def __init__(
        self, d_model: int, d_mlp: int, dtype: torch.dtype, limit: float, alpha: float
    ) -> None:
        super().__init__(d_model, d_mlp, "silu", dtype, gate_bias=True)
        self.limit, self.alpha = limit, alpha

    def forward(self, x: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_model"]:
        """Apply the expert.

        Args:
            x: Tokens routed here.

        Returns:
            Expert output.
        """
        gate = self.hook_pre(F.linear(x, self.W_gate.T, self.b_gate)).clamp(max=self.limit)
        up = self.hook_pre_linear(F.linear(x, self.W_in.T, self.b_in)).clamp(
            -self.limit, self.limit
        )
        post = self.hook_post((up + 1) * (gate * torch.sigmoid(gate * self.alpha)))
        return F.linear(post, self.W_out.T, self.b_out)


class MoE(nn.Module, ResidualIO):
    """Routed experts (plus an optional always-on shared expert).

    Args:
        trait: MoE parameters.
        cfg: The model config (``d_model``, ``d_mlp``, ``act_fn``, ``dtype``).
    """

    hf_names: tuple[str, ...] = MLP.hf_names

    def __init__(self, trait: MoETrait, cfg: Any) -> None:
        super().__init__()
        self.trait = trait
        d_model, dtype = cfg.d_model, cfg.dtype
        d_expert = trait.d_expert or cfg.d_mlp
        act = trait.act or cfg.act_fn or "silu"
        self.W_gate = nn.Linear(d_model, trait.n_experts, bias=trait.router_bias, dtype=dtype)
        if trait.expert_kind == "clamped_swiglu":
            experts: list[nn.Module] = [
                ClampedSwiGLUExpert(
                    d_model, d_expert, dtype, trait.swiglu_limit, trait.swiglu_alpha
                )
                for _ in range(trait.n_experts)
            ]
        else:
            experts = [
                GatedMLP(d_model, d_expert, act, dtype, gate_bias=trait.expert_bias)
                for _ in range(trait.n_experts)
            ]
        self.experts = nn.ModuleList(experts)
        self.shared_expert = (
            GatedMLP(d_model, trait.shared_expert_size, act, dtype)
            if trait.shared_expert_size
            else None
        )
        self.shared_expert_gate = (
            nn.Linear(d_model, 1, bias=False, dtype=dtype) if trait.shared_expert_gate else None
        )
        self.hook_expert_weights = HookPoint()
        self.hook_expert_indices = HookPoint()
        if trait.shared_expert_outside:
            self.hf_names = ()  # no HF module computes this branch's output

    def _mlps(self) -> list[MLP]:
        shared = [self.shared_expert] if self.shared_expert is not None else []
        return [*self.experts, *shared]  # type: ignore[list-item]

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        readers = [Reader(self.W_gate, "weight", "bias", -1)]  # router: [n_experts, d_model]
        readers += [r for mlp in self._mlps() for r in mlp.residual_readers()]
        if self.shared_expert_gate is not None:
            readers.append(Reader(self.shared_expert_gate, "weight", "bias", -1))
        return readers

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [w for mlp in self._mlps() for w in mlp.residual_writers()]

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Route each token to its top-k experts and sum their weighted outputs.

        Args:
            x: Normalised residual.

        Returns:
            MoE output.
        """
        batch, pos, d_model = x.shape
        flat = x.reshape(-1, d_model)
        logits = self.W_gate(flat)
        k = self.trait.top_k
        if self.trait.routing == "softmax_topk":
            probs = self.hook_expert_weights(F.softmax(logits, dim=-1, dtype=torch.float))
            weights, indices = torch.topk(probs, k, dim=-1)
            if self.trait.renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        else:
            top_logits, indices = torch.topk(logits, k, dim=-1)
            if self.trait.routing == "topk_sigmoid":
                wide = torch.promote_types(logits.dtype, torch.float)  # at least fp32, as HF
                weights = torch.sigmoid(top_logits.to(wide))
            else:
                weights = F.softmax(top_logits, dim=-1, dtype=torch.float)
            probs = torch.zeros_like(logits, dtype=weights.dtype).scatter(1, indices, weights)
            self.hook_expert_weights(probs)
        indices = self.hook_expert_indices(indices)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(flat)
        for e in indices.unique().tolist():
            token, slot = torch.where(indices == e)
            weight = weights[token, slot, None]
            if self.trait.weigh_input:
                routed = self.experts[e](flat[token] * weight)
            else:
                routed = self.experts[e](flat[token]) * weight
            out.index_add_(0, token, routed.to(out.dtype))
        if self.shared_expert is not None:
            shared = self.shared_expert(flat)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(flat)) * shared
            out = out + shared
        return out.view(batch, pos, d_model)


def make_moe(trait: MoETrait, cfg: Any, layer: int) -> nn.Module:
    """Component factory for ``mlp/moe``.

    Returns:
        The experts, or a dense gated MLP for a dense ``layer`` (:meth:`MoETrait.is_dense`).
    """
    if trait.is_dense(layer):
        act = trait.act or cfg.act_fn or "silu"
        return GatedMLP(cfg.d_model, cfg.d_mlp, act, cfg.dtype)
    return MoE(trait, cfg)

"""DeepSeek-style mixture of experts: group-limited routing, sigmoid scores, shared experts.

The router scores every expert (``softmax`` or ``sigmoid`` of ``W_gate``, in at least float32, as
HF), picks ``top_k`` of them by a ``selection`` rule, optionally renormalises the picked scores and
multiplies them by ``routed_scaling_factor``; the ``n_shared_experts`` always-on experts form one
gated MLP (``shared_expert``) added to every token. The first ``first_dense_layers`` layers use a
dense gated MLP of width ``d_mlp`` instead (HF's ``first_k_dense_replace``).

Selection rules (HF's ``topk_method``):

- ``greedy``: the ``top_k`` highest scores.
- ``group_limited_greedy``: experts form ``n_group`` equal groups; only the ``topk_group`` groups
  with the highest best score stay eligible (DeepSeek-V2).
- ``noaux_tc``: choices use the scores plus ``e_score_correction_bias`` (a per-expert load
  balancing bias); a group's score is the sum of its two best biased scores; the weights are the
  unbiased scores of the chosen experts (DeepSeek-V3).

Hooks: ``hook_expert_weights`` (the scores of all experts ``[batch*pos, expert]``, before any
bias), ``hook_expert_indices`` (``[batch*pos, top_k]``) and each expert's MLP hooks.
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


class GroupedMoETrait(Trait):
    """Parameters of the ``grouped_moe`` MLP kind (see the module docstring)."""

    slot = "mlp"
    linear_io = True
    routes_tokens = True
    kind: Literal["grouped_moe"] = "grouped_moe"
    n_experts: int
    top_k: int
    d_expert: int
    act: str | None = None
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    selection: Literal["greedy", "group_limited_greedy", "noaux_tc"] = "greedy"
    n_group: int | None = None
    topk_group: int | None = None
    score_correction_bias: bool = False
    """Whether the router has ``e_score_correction_bias`` (read by ``noaux_tc``)."""
    renormalize: bool = False
    routed_scaling_factor: float = 1.0
    n_shared_experts: int = 0
    first_dense_layers: int = 0
    bias: bool = False
    """Biases on the dense and shared MLPs (HF ``mlp_bias``; routed experts have none)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("num_experts", self.n_experts)
        cfg.setdefault("experts_per_token", self.top_k)
        cfg.setdefault("gated_mlp", True)
        if self.act is not None:
            cfg.setdefault("act_fn", self.act)


class GroupedMoE(nn.Module, ResidualIO):
    """Routed experts with a group-limited router and shared experts.

    Args:
        trait: The MoE parameters.
        cfg: The model config (``d_model``, ``act_fn``, ``dtype``).
    """

    hf_names = MLP.hf_names
    keep_in_fp32 = ("W_gate.weight", "e_score_correction_bias")
    """Loaded in float32 in a bf16/fp16 model, as HF keeps them (routing choices depend on them)."""

    def __init__(self, trait: GroupedMoETrait, cfg: Any) -> None:
        super().__init__()
        self.trait = trait
        d_model, dtype = cfg.d_model, cfg.dtype
        act = trait.act or cfg.act_fn or "silu"
        self.W_gate = nn.Linear(d_model, trait.n_experts, bias=False, dtype=dtype)
        if trait.score_correction_bias:
            self.e_score_correction_bias = nn.Parameter(
                torch.zeros(trait.n_experts, dtype=dtype), requires_grad=False
            )
        self.experts = nn.ModuleList(
            GatedMLP(d_model, trait.d_expert, act, dtype) for _ in range(trait.n_experts)
        )
        self.shared_expert = (
            GatedMLP(d_model, trait.d_expert * trait.n_shared_experts, act, dtype, trait.bias)
            if trait.n_shared_experts
            else None
        )
        self.hook_expert_weights = HookPoint()
        self.hook_expert_indices = HookPoint()

    def _mlps(self) -> list[MLP]:
        shared = [self.shared_expert] if self.shared_expert is not None else []
        return [*self.experts, *shared]

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        readers = [Reader(self.W_gate, "weight", "bias", -1)]  # router: [n_experts, d_model]
        return readers + [r for mlp in self._mlps() for r in mlp.residual_readers()]

    def residual_writers(self) -> list[Writer]:  # noqa: D102
        return [w for mlp in self._mlps() for w in mlp.residual_writers()]

    def route(self, flat: Float[torch.Tensor, "n d_model"]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick each token's experts and their weights (in at least float32, as HF).

        Args:
            flat: Normalised residual, one row per token.

        Returns:
            ``(weights [n, top_k], indices [n, top_k])``.
        """
        trait = self.trait
        work = torch.promote_types(flat.dtype, torch.float32)  # HF: float32 (fp64 stays fp64)
        bias = self.W_gate.bias.to(work) if self.W_gate.bias is not None else None
        logits = F.linear(flat.to(work), self.W_gate.weight.to(work), bias)
        if trait.scoring == "softmax":
            scores = logits.softmax(dim=-1)
        else:
            scores = logits.sigmoid()
        scores = self.hook_expert_weights(scores)
        choice = scores
        if trait.selection == "noaux_tc" and trait.score_correction_bias:
            choice = scores + self.e_score_correction_bias.to(work)
        if trait.selection != "greedy":
            choice = self._limit_groups(choice)
        if trait.selection == "noaux_tc":
            indices = torch.topk(choice, trait.top_k, dim=-1, sorted=False)[1]
            weights = scores.gather(1, indices)
        else:
            weights, indices = torch.topk(choice, trait.top_k, dim=-1, sorted=False)
        if trait.renormalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * trait.routed_scaling_factor, self.hook_expert_indices(indices)

    def _limit_groups(self, choice: torch.Tensor) -> torch.Tensor:
        """Keep the experts of the ``topk_group`` best groups; mask the rest out."""
        trait = self.trait
        n_group = trait.n_group or 1
        grouped = choice.view(-1, n_group, trait.n_experts // n_group)
        if trait.selection == "noaux_tc":
            group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
            fill = float("-inf")
        else:
            group_scores = grouped.max(dim=-1).values
            fill = 0.0
        group_idx = torch.topk(group_scores, k=trait.topk_group or n_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        keep = group_mask.unsqueeze(-1).expand_as(grouped).reshape(-1, trait.n_experts)
        return choice.masked_fill(~keep.bool(), fill)

    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Route each token to its experts, sum their weighted outputs, add the shared experts.

        Args:
            x: Normalised residual.

        Returns:
            MoE output.
        """
        batch, pos, d_model = x.shape
        flat = x.reshape(-1, d_model)
        weights, indices = self.route(flat)
        out = torch.zeros_like(flat)
        for e in indices.unique().tolist():
            token, slot = torch.where(indices == e)
            routed = self.experts[e](flat[token]) * weights[token, slot, None]
            out.index_add_(0, token, routed.to(out.dtype))
        out = out.view(batch, pos, d_model)
        if self.shared_expert is not None:
            out = out + self.shared_expert(x)
        return out


def make_grouped_moe(trait: GroupedMoETrait, cfg: Any, layer: int) -> nn.Module:
    """Component factory for ``mlp/grouped_moe``.

    Returns:
        The experts, or a dense gated MLP of width ``d_mlp`` for ``layer < first_dense_layers``.
    """
    if layer < trait.first_dense_layers:
        act = trait.act or cfg.act_fn or "silu"
        return GatedMLP(cfg.d_model, cfg.d_mlp, act, cfg.dtype, gate_bias=trait.bias)
    return GroupedMoE(trait, cfg)

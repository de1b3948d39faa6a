"""The HuggingFace reference of the ``gated_residual`` spec: a ``transformers`` model of its own.

transformers ships no gated-residual architecture, so the plugin brings the model the parity tool
compares against: ``GatedResidualConfig`` (``model_type: tlcore_gated``) and
``GatedResidualForCausalLM``, registered with ``AutoConfig`` and ``AutoModelForCausalLM`` when this
module is imported (the spec names it in ``parity.hf_module``). It is written the way HF models are
(eager attention, ``save_pretrained``/``from_pretrained``, ``generate``), independently of tlcore.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

MODEL_TYPE = "tlcore_gated"


class GatedResidualConfig(PretrainedConfig):
    """Config of the gated-residual model (GPT-2-like sizes, ScaleNorm, per-channel gates)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 512,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 256,
        max_position_embeddings: int = 64,
        hidden_act: str = "gelu",
        norm_eps: float = 1e-5,
        use_post_norms: bool = False,
        use_cache: bool = False,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.norm_eps = norm_eps
        self.use_post_norms = use_post_norms
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class ScaleNorm(nn.Module):
    """``weight · x / sqrt(Σx² + eps)`` with one scalar weight."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.weight * x / (x.pow(2).sum(-1, keepdim=True) + self.eps).sqrt()


class Attention(nn.Module):
    """Causal multi-head attention with biases, eager softmax."""

    def __init__(self, config: GatedResidualConfig) -> None:
        super().__init__()
        d, self.n_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = d // self.n_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        batch, pos, _ = x.shape
        q, k, v = (
            proj(x).view(batch, pos, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(pos, pos, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        z = F.softmax(scores.float(), dim=-1).to(q.dtype) @ v
        return self.o_proj(z.transpose(1, 2).reshape(batch, pos, -1))


class MLP(nn.Module):
    """``down(act(up(x)))`` with biases."""

    def __init__(self, config: GatedResidualConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.down_proj(self.act(self.up_proj(x)))


class GatedResidualLayer(nn.Module):
    """``x + attn_gate * [post](attn(norm x))``, then the same for the MLP."""

    def __init__(self, config: GatedResidualConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.input_norm = ScaleNorm(config.norm_eps)
        self.self_attn = Attention(config)
        self.attn_gate = nn.Parameter(torch.ones(d))
        self.post_attention_norm = ScaleNorm(config.norm_eps)
        self.mlp = MLP(config)
        self.mlp_gate = nn.Parameter(torch.ones(d))
        if config.use_post_norms:
            self.attn_post_norm = ScaleNorm(config.norm_eps)
            self.mlp_post_norm = ScaleNorm(config.norm_eps)
        self.use_post_norms = config.use_post_norms

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # noqa: D102
        attn = self.self_attn(self.input_norm(hidden_states))
        if self.use_post_norms:
            attn = self.attn_post_norm(attn)
        hidden_states = hidden_states + self.attn_gate * attn
        mlp = self.mlp(self.post_attention_norm(hidden_states))
        if self.use_post_norms:
            mlp = self.mlp_post_norm(mlp)
        return hidden_states + self.mlp_gate * mlp


class GatedResidualModel(nn.Module):
    """Token and learned position embeddings, the layers, a final ScaleNorm."""

    def __init__(self, config: GatedResidualConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(
            GatedResidualLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = ScaleNorm(config.norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # noqa: D102
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(positions)[None]
        for layer in self.layers:
            hidden = layer(hidden)
        return self.norm(hidden)


class GatedResidualForCausalLM(PreTrainedModel, GenerationMixin):
    """The causal LM: the model and an untied ``lm_head``."""

    config_class = GatedResidualConfig
    base_model_prefix = "model"

    def __init__(self, config: GatedResidualConfig) -> None:
        super().__init__(config)
        self.model = GatedResidualModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:  # noqa: D102
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:  # noqa: D102
        return self.lm_head

    def forward(  # noqa: D102
        self, input_ids: torch.Tensor, **kwargs: Any
    ) -> CausalLMOutputWithPast:
        return CausalLMOutputWithPast(logits=self.lm_head(self.model(input_ids)))

    def prepare_inputs_for_generation(  # noqa: D102
        self, input_ids: torch.Tensor, **kwargs: Any
    ) -> dict[str, Any]:
        return {"input_ids": input_ids}  # no KV cache: the whole sequence every step


AutoConfig.register(MODEL_TYPE, GatedResidualConfig, exist_ok=True)
AutoModelForCausalLM.register(GatedResidualConfig, GatedResidualForCausalLM, exist_ok=True)

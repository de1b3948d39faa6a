"""TransformerLens's weight processing, applied in place to a built model.

The five steps of TransformerLens 2.x's ``process_weights_`` (same names, same order, same maths):

1. :func:`fold_layer_norm`: fold each pre-norm's weight (and LayerNorm bias) into the linear maps
   that read it, centre those reading weights (LayerNorm only), and leave the norm parameter-free
   (TransformerLens's ``LNPre``/``RMSPre``). Gemma's ``1 + w`` norms fold ``1 + w``.
2. :func:`center_writing_weights`: subtract the ``d_model`` mean from everything that writes to the
   residual stream (``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``).
3. :func:`center_unembed`: subtract the vocabulary mean from ``W_U`` and ``b_U``.
4. :func:`fold_value_biases`: ``b_O += Σ_h b_V[h] @ W_O[h]``, then ``b_V = 0``.
5. :func:`refactor_factored_attn_matrices`: rebalance ``W_Q``/``W_K`` and ``W_V``/``W_O`` by SVD
   (off by default).

Each step is exact (log-probabilities are unchanged; raw logits move by a per-position constant)
only for some architectures. Which ones is decided from the model's traits, never from its name, by
:func:`processing_plan`; a requested step that does not apply is skipped with a logged warning, and
``model.cfg`` records what was applied (``cfg.fold_ln`` ...) together with the reason in
``cfg.extra["weight_processing"]``.

The maths runs in at least float32 and is written back in each parameter's own dtype and device.
Parameters keep their identity (their ``.data`` is replaced), so the tensors they held before are
not modified: weights tied by sharing storage are untied, as in TransformerLens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tlcore.components.attention import Attention
from tlcore.components.mlp import MLP
from tlcore.components.moe import MoE
from tlcore.components.norms import LayerNorm, RMSNorm
from tlcore.errors import UnsupportedConfigError
from tlcore.factored_matrix import FactoredMatrix

if TYPE_CHECKING:
    from tlcore.config import HookedTransformerConfig

logger = logging.getLogger(__name__)

FLAGS: tuple[str, ...] = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)
"""The processing flags, in the order :func:`process_weights_` applies them."""

# Layouts whose pre-norms feed only linear maps. Sandwich post-norms (ln*_post) are not folded.
_FOLD_LAYOUTS = frozenset({"pre_norm", "parallel", "sandwich"})
# Layouts where every write to the residual stream lands there unchanged.
_CENTER_LAYOUTS = frozenset({"pre_norm", "parallel"})
_POST_LAYOUTS = frozenset({"post_norm", "post_only"})
_NORM_KINDS = frozenset({"layernorm", "rmsnorm", "none"})
_PRE_FORM = {"LN": "LNPre", "RMS": "RMSPre"}


# ---------------------------------------------------------------------------------------- the plan
def processing_plan(cfg: HookedTransformerConfig) -> dict[str, tuple[bool, str]]:
    """Say, for each processing flag, whether it is exact for this architecture, and why not.

    Decided from the resolved traits (block layout, norm kinds, positions, attention and unembed
    parameters) with TransformerLens's guards: no ``fold_ln`` for post-norm layouts or shortformer
    positions, ``center_writing_weights`` only when every reader of the residual stream is a
    LayerNorm, no ``center_unembed`` with a final logit soft-cap, no refactor with rotary positions.

    Args:
        cfg: A resolved config (with ``traits``).

    Returns:
        ``{flag: (applies, reason)}`` for every flag in :data:`FLAGS`; the reason says what the step
        does when it applies and why it is skipped when it does not.

    Examples:
        >>> from tlcore.config import HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(d_model=8, n_layers=1, n_ctx=4, d_head=4, n_heads=2,
        ...                               d_vocab=10, act_fn="relu", normalization_type="RMS")
        >>> processing_plan(cfg)["fold_ln"]
        (True, 'folds ln1, ln2, ln_final into the linear maps reading them')
        >>> processing_plan(cfg)["center_writing_weights"][0]  # RMSNorm does not remove the mean
        False
    """
    return {
        "fold_ln": _plan_fold_ln(cfg),
        "center_writing_weights": _plan_center_writing_weights(cfg),
        "center_unembed": _plan_center_unembed(cfg),
        "fold_value_biases": _plan_fold_value_biases(cfg),
        "refactor_factored_attn_matrices": _plan_refactor(cfg),
    }


def _trait(cfg: HookedTransformerConfig, slot: str) -> Any:
    try:
        return cfg.trait(slot)
    except KeyError:
        return None


def _kind(cfg: HookedTransformerConfig, slot: str) -> str | None:
    trait = _trait(cfg, slot)
    return None if trait is None else trait.kind


def _is_shortformer(cfg: HookedTransformerConfig) -> bool:
    return (
        _kind(cfg, "positional") == "shortformer" or cfg.positional_embedding_type == "shortformer"
    )


def _is_rotary(cfg: HookedTransformerConfig) -> bool:
    return _kind(cfg, "positional") == "rotary" or cfg.positional_embedding_type == "rotary"


def _unknown_component(cfg: HookedTransformerConfig) -> str | None:
    """Name a component kind the processing has no rule for (a plugin's), or None."""
    for slot in ("attention", "mlp", "unembed"):
        if not type(cfg.trait(slot)).linear_io:
            return (
                f"{slot} kind '{_kind(cfg, slot)}' does not declare linear_io (reads and writes "
                f"the residual stream only through linear maps), so folding is not known exact"
            )
    return None


def _plan_fold_ln(cfg: HookedTransformerConfig) -> tuple[bool, str]:
    block = _kind(cfg, "block")
    if block is None:
        return False, "the config has no traits (no block layout)"
    if block in _POST_LAYOUTS:
        # A post-norm's output is the residual stream itself (or a branch added to it), not only the
        # input of linear maps; TransformerLens refuses fold_ln for OLMo-2 for the same reason.
        return False, (
            f"block layout '{block}' normalises after the residual add, so its norms do "
            f"not feed only linear maps and cannot be folded (TransformerLens refuses "
            f"fold_ln for post-norm models such as OLMo-2)"
        )
    if block not in _FOLD_LAYOUTS:
        return False, f"no folding rule for block layout '{block}'"
    if _is_shortformer(cfg):
        return False, (
            "shortformer positions are added to the query/key inputs after ln1, so ln1 "
            "cannot be folded into W_Q/W_K (TransformerLens refuses too)"
        )
    kinds = {slot: _kind(cfg, slot) for slot in ("norm", "final_norm")}
    for slot, kind in kinds.items():
        if kind not in _NORM_KINDS:
            return False, f"no folding rule for {slot} kind '{kind}'"
    unknown = _unknown_component(cfg)
    if unknown:
        return False, unknown
    names = []
    if kinds["norm"] != "none":
        names += ["ln1"] if block == "parallel" and _parallel_norms(cfg) == 1 else ["ln1", "ln2"]
    if kinds["final_norm"] != "none":
        names.append("ln_final")
    if not names:
        return False, "the model has no block or final norm to fold"
    reason = f"folds {', '.join(names)} into the linear maps reading them"
    if block == "sandwich":
        reason += "; the post-norms ln1_post/ln2_post keep their weights"
    return True, reason


def _plan_center_writing_weights(cfg: HookedTransformerConfig) -> tuple[bool, str]:
    block = _kind(cfg, "block")
    if block is None:
        return False, "the config has no traits (no block layout)"
    if _is_shortformer(cfg):
        return False, (
            "shortformer positions are added to the query/key inputs, not the residual "
            "stream (TransformerLens refuses too)"
        )
    if block == "sandwich":
        return False, (
            "block layout 'sandwich': the post-norms ln1_post/ln2_post sit between W_O/"
            "W_out and the residual stream, so centring those weights centres nothing "
            "that is written"
        )
    if block in _POST_LAYOUTS:
        return False, (
            f"block layout '{block}': the residual stream is read without a centring "
            f"LayerNorm in front of every reader"
        )
    if block not in _CENTER_LAYOUTS:
        return False, f"no centring rule for block layout '{block}'"
    for slot in ("norm", "final_norm"):
        kind = _kind(cfg, slot)
        if kind != "layernorm":
            return False, (
                f"the residual stream is read through a '{kind}' {slot.replace('_', ' ')},"
                f" which does not remove the mean; centring is exact only when every "
                f"reader is a LayerNorm (TransformerLens: normalization_type LN/LNPre, "
                f"no final RMS)"
            )
    unknown = _unknown_component(cfg)
    if unknown:
        return False, unknown
    return True, "subtracts the d_model mean from W_E, W_pos, W_O, b_O, W_out and b_out"


def _plan_center_unembed(cfg: HookedTransformerConfig) -> tuple[bool, str]:
    unembed = _trait(cfg, "unembed")
    if unembed is None:
        return False, "the config has no traits (no unembed)"
    if not type(unembed).linear_io:
        return False, f"unembed kind '{unembed.kind}' does not declare linear_io"
    softcap = getattr(unembed, "softcap", None)
    if softcap is None and cfg.output_logits_soft_cap > 0:
        softcap = cfg.output_logits_soft_cap
    if softcap is not None:
        return False, (
            f"the final logit soft-cap ({softcap}) is not shift-invariant, so centring "
            f"W_U would change the log-probs (TransformerLens refuses too)"
        )
    if _is_shortformer(cfg):
        return False, "TransformerLens disables center_unembed for shortformer models"
    return True, (
        "subtracts the vocabulary mean from W_U and b_U (log-probs unchanged, logits "
        "shift by a per-position constant)"
    )


def _plan_fold_value_biases(cfg: HookedTransformerConfig) -> tuple[bool, str]:
    attention = _trait(cfg, "attention")
    if attention is None:
        return False, "the config has no traits (no attention)"
    if not type(attention).linear_io:
        return False, f"attention kind '{attention.kind}' does not declare linear_io"
    if getattr(attention, "sinks", False):
        return False, (
            "attention sinks take part of each pattern row's mass, so rows sum to less "
            "than 1 and b_V's contribution is not a constant"
        )
    if getattr(attention, "clip_qkv", None) is not None:
        return False, "clip_qkv clamps the values after b_V is added, so b_V cannot move past it"
    return True, "folds b_V through W_O into b_O and zeroes b_V"


def _plan_refactor(cfg: HookedTransformerConfig) -> tuple[bool, str]:
    attention = _trait(cfg, "attention")
    if attention is None:
        return False, "the config has no traits (no attention)"
    if _is_rotary(cfg):
        return False, (
            "positional embedding type 'rotary': the QK matrix depends on the query and "
            "key positions, so W_Q/W_K cannot be refactored (TransformerLens asserts the "
            "same)"
        )
    if not type(attention).linear_io:
        return False, f"attention kind '{attention.kind}' does not declare linear_io"
    if cfg.n_key_value_heads not in (None, cfg.n_heads):
        return False, (
            "grouped keys/values: a refactored W_K is per query head and cannot be "
            "stored in the shared key/value heads"
        )
    if getattr(attention, "qk_norm", None) is not None:
        return False, "qk-norm normalises queries and keys separately, so only W_Q W_K^T is kept"
    if getattr(attention, "clip_qkv", None) is not None:
        return False, "clip_qkv clamps queries, keys and values separately"
    if getattr(attention, "sinks", False):
        return False, "attention sinks: pattern rows do not sum to 1, so b_V cannot be folded"
    return True, "rebalances W_Q/W_K (with biases) and W_V/W_O by SVD"


def _parallel_norms(cfg: HookedTransformerConfig) -> int:
    return int(getattr(_trait(cfg, "block"), "norms", 2))


def _mlp_norm_name(cfg: HookedTransformerConfig) -> str:
    return "ln1" if _kind(cfg, "block") == "parallel" and _parallel_norms(cfg) == 1 else "ln2"


def _record(cfg: HookedTransformerConfig, flag: str, applied: bool, reason: str) -> bool:
    setattr(cfg, flag, applied)
    cfg.extra.setdefault("weight_processing", {})[flag] = {"applied": applied, "reason": reason}
    return applied


def _skip(cfg: HookedTransformerConfig, flag: str, reason: str) -> bool:
    # TransformerLens skips centring silently for RMS models, where it is never possible; every
    # other skip surprises someone who asked for it, so it is a warning.
    log = logger.info if flag == "center_writing_weights" else logger.warning
    log("%s skipped: %s", flag, reason)
    return _record(cfg, flag, False, reason)


# --------------------------------------------------------------------------------- tensor helpers
def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Fold in at least fp32 and round once, so bf16/fp16 models lose no more than one rounding.
    return torch.promote_types(dtype, torch.float64)


def _up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device=like.device, dtype=_work_dtype(like.dtype))


def _own(t: torch.Tensor) -> torch.Tensor:
    return _up(t, t)


def _param(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor), f"{type(module).__name__}.{name} is not a tensor"
    return value


def _precise(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32 if t.device.type == "mps" else torch.float64)


def _assign(
    module: nn.Module,
    name: str,
    value: torch.Tensor,
    dtype: torch.dtype,
    requires_grad: bool = True,
) -> None:
    """Write ``value`` into ``module.name`` (a new Parameter if it was None), in ``dtype``."""
    value = value.to(dtype).contiguous()
    current = getattr(module, name, None)
    if isinstance(current, nn.Parameter):
        current.data = value
    else:
        setattr(module, name, nn.Parameter(value, requires_grad=requires_grad))


def _center(module: nn.Module, name: str, dim: int = -1) -> None:
    param = getattr(module, name)
    work = _up(param, param)
    _assign(module, name, work - work.mean(dim, keepdim=True), param.dtype)


@dataclass(frozen=True)
class _Reader:
    """A linear map reading a norm's output: ``module.weight`` (``d_model`` on ``axis``) + bias."""

    module: nn.Module
    weight: str
    bias: str
    axis: int


def _fold_into(
    reader: _Reader, norm_w: torch.Tensor | None, norm_b: torch.Tensor | None, center: bool
) -> None:
    """``W (w * x̂ + b) + c == (W * w) x̂ + (c + W b)``, then centre ``W`` over ``d_model``."""
    weight = getattr(reader.module, reader.weight)
    shape = [1] * weight.dim()
    shape[reader.axis] = -1
    w_work = _up(weight, weight)
    if norm_b is not None and bool((norm_b != 0).any()):
        # The bias uses the weight before it is scaled: W (w x̂ + b) = (W w) x̂ + W b.
        extra = (w_work * _up(norm_b, weight).reshape(shape)).sum(reader.axis)
        bias = getattr(reader.module, reader.bias, None)
        if bias is None:
            _assign(reader.module, reader.bias, extra, weight.dtype, weight.requires_grad)
        else:
            _assign(reader.module, reader.bias, _up(bias, bias) + extra, bias.dtype)
    if norm_w is not None:
        w_work = w_work * _up(norm_w, weight).reshape(shape)
    if center:
        # LayerNormPre's output sums to zero, so the d_model mean of each column is never read.
        w_work = w_work - w_work.mean(reader.axis, keepdim=True)
    _assign(reader.module, reader.weight, w_work, weight.dtype)


def _norm_affine(norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
    """Return ``(effective weight, bias, centres)`` of a block/final norm."""
    if isinstance(norm, LayerNorm):
        return norm.w, norm.b, True
    if isinstance(norm, RMSNorm):
        w: torch.Tensor | None = norm.w
        if w is not None and norm.offset:
            w = 1.0 + _own(w)
        return w, None, False
    raise UnsupportedConfigError(f"fold_ln: no folding rule for norm module {type(norm).__name__}")


def _strip(norm: nn.Module) -> None:
    """Turn a folded norm into its parameter-free ``Pre`` form (LNPre / RMSPre)."""
    # Assigning None to a registered parameter unregisters it (the state dict loses the key).
    if isinstance(norm, (LayerNorm, RMSNorm)):
        norm.w = None
    if isinstance(norm, LayerNorm):
        norm.b = None


def _attention_readers(attn: nn.Module) -> list[_Reader]:
    if not isinstance(attn, Attention):
        raise UnsupportedConfigError(
            f"no processing rule for attention module {type(attn).__name__}"
        )
    kv = "_" if attn._grouped else ""
    return [
        _Reader(attn, "W_Q", "b_Q", -2),
        _Reader(attn, f"{kv}W_K", f"{kv}b_K", -2),
        _Reader(attn, f"{kv}W_V", f"{kv}b_V", -2),
    ]


def _mlp_readers(mlp: nn.Module) -> list[_Reader]:
    if isinstance(mlp, MoE):
        readers = [_Reader(mlp.W_gate, "weight", "bias", -1)]  # router: [n_experts, d_model]
        for expert in mlp.experts:
            readers += _mlp_readers(expert)
        if mlp.shared_expert is not None:
            readers += _mlp_readers(mlp.shared_expert)
        if mlp.shared_expert_gate is not None:
            readers.append(_Reader(mlp.shared_expert_gate, "weight", "bias", -1))
        return readers
    if isinstance(mlp, MLP):
        readers = [_Reader(mlp, "W_in", "b_in", 0)]
        if isinstance(getattr(mlp, "W_gate", None), torch.Tensor):
            readers.append(_Reader(mlp, "W_gate", "b_gate", 0))
        return readers
    raise UnsupportedConfigError(f"no processing rule for mlp module {type(mlp).__name__}")


def _mlp_writers(mlp: nn.Module) -> list[tuple[nn.Module, str]]:
    if isinstance(mlp, MoE):
        out: list[tuple[nn.Module, str]] = []
        for expert in [*mlp.experts, mlp.shared_expert]:
            if expert is not None:
                out += _mlp_writers(expert)
        return out
    if isinstance(mlp, MLP):
        return [(mlp, "W_out"), (mlp, "b_out")]
    raise UnsupportedConfigError(f"no processing rule for mlp module {type(mlp).__name__}")


def _optimize_layout(model: nn.Module) -> None:
    """Re-stride new (plain contiguous) projection weights into the layout the forward expects."""
    method = getattr(model, "optimize_layout_", None)
    if callable(method):
        method()
        return
    for module in model.modules():
        method = getattr(module, "optimize_layout_", None)
        if module is not model and callable(method):
            method()


# ---------------------------------------------------------------------------------------- steps
def _fold_layer_norm(model: Any, fold_biases: bool, center_weights: bool) -> None:
    cfg = model.cfg
    mlp_norm = _mlp_norm_name(cfg)
    groups: list[tuple[nn.Module, list[_Reader]]] = []
    for block in model.blocks:
        readers: dict[str, list[_Reader]] = {"ln1": _attention_readers(block.attn)}
        readers.setdefault(mlp_norm, []).extend(_mlp_readers(block.mlp))
        for name, group in readers.items():
            norm = getattr(block, name, None)
            if norm is not None:
                groups.append((norm, group))
    if getattr(model, "ln_final", None) is not None:
        groups.append((model.ln_final, [_Reader(model.unembed, "W_U", "b_U", 0)]))
    for norm, _ in groups:
        # Check every norm before changing anything, so a refusal leaves the model untouched.
        w, b, _centres = _norm_affine(norm)
        if b is not None and not fold_biases and bool((b != 0).any()):
            raise UnsupportedConfigError(
                "fold_layer_norm(fold_biases=False): the LayerNorm has a nonzero bias, which "
                "cannot stay on a norm whose weight has been folded away"
            )
    for norm, group in groups:
        w, b, centres = _norm_affine(norm)
        for reader in group:
            _fold_into(reader, w, b if fold_biases else None, centres and center_weights)
        _strip(norm)
    cfg.normalization_type = _PRE_FORM.get(cfg.normalization_type or "", cfg.normalization_type)
    _pre_form_traits(cfg)


def _pre_form_traits(cfg: HookedTransformerConfig) -> None:
    """Make the config describe the folded norms, so ``HookedTransformer(cfg)`` rebuilds them."""
    updates = {
        "layernorm": {"weight": False, "bias": False},
        "rmsnorm": {"weight": False, "offset": False},
    }
    final = _trait(cfg, "final_norm")
    if final is not None and final.kind in updates:
        cfg.traits["final_norm"] = final.model_copy(update=updates[final.kind])
    norm = _trait(cfg, "norm")
    # Sandwich post-norms are built from the same trait and keep their weights.
    if norm is not None and norm.kind in updates and _kind(cfg, "block") != "sandwich":
        cfg.traits["norm"] = norm.model_copy(update=updates[norm.kind])


def _center_writing_weights(model: Any) -> None:
    _center(model.embed, "W_E")
    pos_embed = getattr(model, "pos_embed", None)
    # Only positions added to the residual stream are writes (rotary/ALiBi have no W_pos).
    if (
        isinstance(pos_embed, nn.Module)
        and isinstance(getattr(pos_embed, "W_pos", None), torch.Tensor)
        and getattr(pos_embed, "adds_to_residual", True)
    ):
        _center(pos_embed, "W_pos")
    for block in model.blocks:
        _center(block.attn, "W_O")  # [head, d_head, d_model]
        _center(block.attn, "b_O")
        for module, name in _mlp_writers(block.mlp):
            _center(module, name)


def _center_unembed(model: Any) -> None:
    _center(model.unembed, "W_U")  # [d_model, d_vocab]: the mean over the vocabulary
    _center(model.unembed, "b_U")


def _fold_value_biases(model: Any) -> None:
    cfg = model.cfg
    for block in model.blocks:
        attn = block.attn
        if not isinstance(attn, Attention):
            raise UnsupportedConfigError(
                f"no processing rule for attention module {type(attn).__name__}"
            )
        name = "_b_V" if attn._grouped else "b_V"
        b_v = getattr(attn, name)
        # Query head h reads key/value head h // group.
        per_head = b_v.repeat_interleave(cfg.n_heads // b_v.shape[0], dim=0)
        w_o = _own(attn.W_O)
        b_o = _own(attn.b_O) + torch.einsum("hd,hdm->m", _up(per_head, attn.W_O), w_o)
        _assign(attn, "b_O", b_o, attn.b_O.dtype)
        _assign(attn, name, torch.zeros_like(b_v), b_v.dtype)


def _refactor_factored_attn_matrices(model: Any) -> None:
    for block in model.blocks:
        attn = block.attn
        if not isinstance(attn, Attention) or attn._grouped:
            raise UnsupportedConfigError(
                "refactor_factored_attn_matrices needs ungrouped attention"
            )
        w_q, w_k, w_v, w_o = (_param(attn, n) for n in ("W_Q", "W_K", "W_V", "W_O"))
        b_q, b_k, b_v, b_o = (_param(attn, n) for n in ("b_Q", "b_K", "b_V", "b_O"))
        # The SVDs run in float64: in fp32 their error alone reaches ~1e-5 in the log-probs.
        # Append the biases as an extra input row, so x W_Q + b_Q = [x, 1] W_Q_eff.
        q_eff = torch.cat([_precise(w_q), _precise(b_q)[:, None, :]], dim=1)
        k_eff = torch.cat([_precise(w_k), _precise(b_k)[:, None, :]], dim=1)
        q_even, k_even_t = FactoredMatrix(q_eff, k_eff.transpose(-1, -2)).make_even().pair
        k_even = k_even_t.transpose(-1, -2)
        _assign(attn, "W_Q", q_even[:, :-1, :], w_q.dtype)
        _assign(attn, "b_Q", q_even[:, -1, :], b_q.dtype)
        _assign(attn, "W_K", k_even[:, :-1, :], w_k.dtype)
        _assign(attn, "b_K", k_even[:, -1, :], b_k.dtype)
        # OV: fold b_V into b_O first, then W_V W_O = U S V^T -> W_V = U S, W_O = V^T.
        w_o_work = _precise(w_o)
        b_o_new = _precise(b_o) + torch.einsum("hd,hdm->m", _precise(b_v), w_o_work)
        _assign(attn, "b_O", b_o_new, b_o.dtype)
        _assign(attn, "b_V", torch.zeros_like(b_v), b_v.dtype)
        u, s, v = FactoredMatrix(_precise(w_v), w_o_work).svd()
        _assign(attn, "W_V", u * s[..., None, :], w_v.dtype)
        _assign(attn, "W_O", v.transpose(-1, -2), w_o.dtype)


# -------------------------------------------------------------------------------- public steps
def _run(model: Any, flag: str, step: Any, *args: Any, relayout: bool = True) -> bool:
    applies, reason = processing_plan(model.cfg)[flag]
    if not applies:
        return _skip(model.cfg, flag, reason)
    with torch.no_grad():
        step(model, *args)
    if relayout:
        _optimize_layout(model)
    return _record(model.cfg, flag, True, reason)


def fold_layer_norm(model: Any, fold_biases: bool = True, center_weights: bool = True) -> bool:
    """Fold the block and final norms into the linear maps that read them, in place.

    ``ln1`` folds into ``W_Q/W_K/W_V`` (and their biases), ``ln2`` into the MLP's ``W_in`` and
    ``W_gate`` (every expert, the router and the shared expert of an MoE), ``ln_final`` into
    ``W_U``/``b_U``; a parallel block with one norm folds ``ln1`` into both. For LayerNorm the
    reading weights are then centred over ``d_model``. The norms keep their normalisation and
    lose their parameters (``cfg.normalization_type`` LN → LNPre, RMS → RMSPre). Sandwich
    post-norms, qk-norms and embedding norms are left as they are. Skipped (with a warning,
    ``cfg.fold_ln = False``) where
    :func:`processing_plan` says it is not exact.

    Args:
        model: A built ``HookedTransformer``.
        fold_biases: Fold LayerNorm biases into the readers' biases (TransformerLens's flag; a
            nonzero bias cannot be left behind, so False is refused for such a norm).
        center_weights: Centre the reading weights (LayerNorm only).

    Returns:
        Whether the fold was applied.

    Raises:
        UnsupportedConfigError: ``fold_biases=False`` with a nonzero LayerNorm bias (nothing is
            changed).
    """
    return _run(model, "fold_ln", _fold_layer_norm, fold_biases, center_weights)


def center_writing_weights(model: Any) -> bool:
    """Subtract the ``d_model`` mean from every weight writing to the residual stream, in place.

    ``W_E``, ``W_pos`` (learned positions added to the residual), ``W_O``, ``b_O``, ``W_out``,
    ``b_out`` (every expert's and the shared expert's in an MoE). Exact only when every reader of
    the residual stream is a LayerNorm (which removes the mean anyway); skipped otherwise.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the centring was applied.
    """
    return _run(model, "center_writing_weights", _center_writing_weights)


def center_unembed(model: Any) -> bool:
    """Subtract the vocabulary mean from ``W_U`` and ``b_U``, in place.

    Log-probabilities are unchanged; logits move by a per-position constant. Skipped with a final
    logit soft-cap, which is not shift-invariant.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the centring was applied.
    """
    return _run(model, "center_unembed", _center_unembed)


def fold_value_biases(model: Any) -> bool:
    """Fold the value biases into the output bias: ``b_O += Σ_h b_V[h] @ W_O[h]``, ``b_V = 0``.

    Exact because each pattern row sums to 1, so a head's value bias adds a constant. Grouped
    key/value heads are expanded to their query heads for the sum; the stored ``_b_V`` is zeroed.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        Whether the fold was applied.
    """
    return _run(model, "fold_value_biases", _fold_value_biases)


def refactor_factored_attn_matrices(model: Any) -> bool:
    """Rebalance each head's factored matrices, in place (TransformerLens's experimental refactor).

    ``[W_Q; b_Q] [W_K; b_K]^T`` is refactored as ``(U √S)(√S V^T)``, so ``W_Q`` and ``W_K`` carry
    equal halves of each singular value; ``b_V`` is folded into ``b_O`` and ``W_V W_O = U S V^T``
    becomes ``W_V = U S``, ``W_O = V^T`` (an isometry). Attention scores and outputs are unchanged.

    Args:
        model: A built ``HookedTransformer``.

    Returns:
        True (it was applied).

    Raises:
        UnsupportedConfigError: With rotary positions (the QK matrix depends on position), grouped
            keys/values, qk-norm, clip_qkv or attention sinks; the model is left unchanged.
    """
    applies, reason = processing_plan(model.cfg)["refactor_factored_attn_matrices"]
    if not applies:
        raise UnsupportedConfigError(f"refactor_factored_attn_matrices: {reason}")
    return _run(model, "refactor_factored_attn_matrices", _refactor_factored_attn_matrices)


def process_weights_(
    model: Any,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    refactor_factored_attn_matrices: bool = False,
) -> Any:
    """Apply TransformerLens's weight processing in place, in TransformerLens's order.

    fold_ln → center_writing_weights → center_unembed → fold_value_biases →
    refactor_factored_attn_matrices. A requested step that is not exact for this architecture is
    skipped with a warning (see :func:`processing_plan`); ``model.cfg`` records, for each requested
    flag, whether it was applied (``cfg.fold_ln`` ...) and why (``cfg.extra["weight_processing"]``).
    Flags not requested are left as they were.

    Args:
        model: A built ``HookedTransformer``.
        fold_ln: Fold norms into the next linear maps.
        center_writing_weights: Centre the weights writing to the residual stream.
        center_unembed: Centre the unembedding over the vocabulary.
        fold_value_biases: Fold value biases into ``b_O``.
        refactor_factored_attn_matrices: Refactor ``W_Q/W_K`` and ``W_V/W_O`` (off by default).

    Returns:
        The model.

    Raises:
        UnsupportedConfigError: If ``refactor_factored_attn_matrices`` is requested where it does
            not apply (rotary positions, ...), before anything is changed.
    """
    plan = processing_plan(model.cfg)
    if refactor_factored_attn_matrices and not plan["refactor_factored_attn_matrices"][0]:
        raise UnsupportedConfigError(
            f"refactor_factored_attn_matrices: {plan['refactor_factored_attn_matrices'][1]}"
        )
    steps = (
        (fold_ln, "fold_ln", _fold_layer_norm, (True, True)),
        (center_writing_weights, "center_writing_weights", _center_writing_weights, ()),
        (center_unembed, "center_unembed", _center_unembed, ()),
        (fold_value_biases, "fold_value_biases", _fold_value_biases, ()),
        (
            refactor_factored_attn_matrices,
            "refactor_factored_attn_matrices",
            _refactor_factored_attn_matrices,
            (),
        ),
    )
    for requested, flag, step, args in steps:
        if requested:
            _run(model, flag, step, *args, relayout=False)
    _optimize_layout(model)
    return model

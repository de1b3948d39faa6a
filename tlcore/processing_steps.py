"""The maths of TransformerLens's weight processing, on any model whose components declare it.

Each step reads the declarations of :mod:`tlcore.components` (a block's wiring says which norm
reads the residual stream into which branch; a component's ``residual_readers`` and
``residual_writers`` name the parameters that read and write the stream; a norm's ``affine``
gives its effective weight and bias) and rewrites parameters in place. Whether a step is exact for
a model is the plan's business (:mod:`tlcore.processing_plan`); :mod:`tlcore.processing` runs a
step only where the plan says it applies.

The maths runs a slice at a time (float64 for half-precision parameters, their own dtype for
float32 and float64) and is written back in each parameter's own dtype and device
(:mod:`tlcore.processing_tensors`). Parameters keep their identity. Outside
:func:`~tlcore.processing_tensors.in_place` their ``.data`` is replaced, so the tensors they held
before are not modified and weights tied by sharing storage are untied, as in TransformerLens;
inside it (``from_pretrained`` from files), exclusive parameters are rewritten in their own memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlcore.components.attention import Attention
from tlcore.components.norms import Norm, NormTrait
from tlcore.components.residual_io import Reader, ResidualIO, Writer
from tlcore.errors import UnsupportedConfigError
from tlcore.factored_matrix import FactoredMatrix
from tlcore.processing_tensors import (
    Where,
    assign,
    compute_dtype,
    mean,
    narrow_reduced,
    rewrite_,
    slices,
    work_dtype,
)
from tlcore.processing_tied import before_centring_, center_derived_, fold_derived_

_PRE_FORM = {"LN": "LNPre", "RMS": "RMSPre"}
"""TransformerLens's ``normalization_type`` after ``fold_ln``."""


# --------------------------------------------------------------------------------- tensor helpers
def _up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device=like.device, dtype=work_dtype(like.dtype))


def _own(t: torch.Tensor) -> torch.Tensor:
    return _up(t, t)


def _param(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor), f"{type(module).__name__}.{name} is not a tensor"
    return value


def _precise(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32 if t.device.type == "mps" else torch.float64)


_assign = assign


def _center(module: nn.Module, name: str, dim: int = -1) -> None:
    if center_derived_(module, name, dim):  # a tied W_U held derived from W_E
        return
    rewrite_(module, name, dim, lambda work, _: work.sub_(mean(work, dim)))


# ----------------------------------------------------------------------------------------- fold_ln
def _fold_into(
    reader: Reader, norm_w: torch.Tensor | None, norm_b: torch.Tensor | None, center: bool
) -> None:
    """``W (w * x̂ + b) + c == (W * w) x̂ + (c + W b)``, then centre ``W`` over ``d_model``."""
    if fold_derived_(reader.module, reader.weight, reader.bias, norm_w, norm_b, center):
        return  # a tied W_U held derived from W_E
    weight = getattr(reader.module, reader.weight)
    axis = reader.axis % weight.dim()
    shape = [1] * weight.dim()
    shape[axis] = -1
    compute = compute_dtype(weight.dtype)
    scale = (
        norm_w.detach().to(weight.device, compute).reshape(shape) if norm_w is not None else None
    )
    shift = None
    extra: torch.Tensor | None = None
    if norm_b is not None and bool((norm_b != 0).any()):
        shift = norm_b.detach().to(weight.device, compute).reshape(shape)
        reduced = [n for d, n in enumerate(weight.shape) if d != axis]
        extra = torch.zeros(reduced, dtype=work_dtype(weight.dtype), device=weight.device)

    if extra is not None and shift is not None:
        # The bias uses the weight before it is scaled: W (w x̂ + b) = (W w) x̂ + W b. A read-only
        # pass in bounded slices (the product is a temporary the size of a slice).
        for where, view in slices(weight.detach(), axis):
            narrow_reduced(extra, where, axis).copy_((view.to(compute) * shift).sum(axis))

    def fold(work: torch.Tensor, where: Where) -> torch.Tensor:
        if scale is not None:
            work.mul_(scale)
        if center:
            # LayerNormPre's output sums to zero, so the d_model mean of each column is never read.
            work.sub_(mean(work, axis))
        return work

    requires_grad = weight.requires_grad
    rewrite_(reader.module, reader.weight, axis, fold)
    if extra is not None:
        bias = getattr(reader.module, reader.bias, None)
        if bias is None:
            _assign(reader.module, reader.bias, extra, weight.dtype, requires_grad)
        else:
            _assign(reader.module, reader.bias, _up(bias, bias) + extra, bias.dtype)


def _readers(module: nn.Module, where: str) -> list[Reader]:
    readers = module.residual_readers() if isinstance(module, ResidualIO) else []
    if not readers:
        raise UnsupportedConfigError(
            f"fold_ln: {where} ({type(module).__name__}) declares no residual_readers"
        )
    return readers


def _norm_groups(model: Any) -> list[tuple[Norm, list[Reader]]]:
    """Each norm that reads the residual stream, with the linear maps reading its output."""
    groups: list[tuple[Norm, list[Reader]]] = []
    for index, block in enumerate(model.blocks):
        by_norm: dict[str, list[Reader]] = {}
        for branch in block.wiring.branches:
            if branch.norm is not None and getattr(block, branch.norm, None) is not None:
                where = f"blocks.{index}.{branch.name}"
                by_norm.setdefault(branch.norm, []).extend(
                    _readers(getattr(block, branch.name), where)
                )
        groups += [(getattr(block, name), readers) for name, readers in by_norm.items()]
    if getattr(model, "ln_final", None) is not None:
        groups.append((model.ln_final, _readers(model.unembed, "unembed")))
    for norm, _ in groups:
        if not isinstance(norm, Norm):
            raise UnsupportedConfigError(f"fold_ln: {type(norm).__name__} is not a tlcore Norm")
    return groups


def fold_layer_norm_(model: Any, fold_biases: bool, center_weights: bool) -> None:
    """Fold every residual-stream norm into its readers and strip it (see ``fold_layer_norm``)."""
    groups = _norm_groups(model)
    for norm, _ in groups:
        # Check every norm before changing anything, so a refusal leaves the model untouched.
        _, b = norm.affine()
        if b is not None and not fold_biases and bool((b != 0).any()):
            raise UnsupportedConfigError(
                "fold_layer_norm(fold_biases=False): the LayerNorm has a nonzero bias, which "
                "cannot stay on a norm whose weight has been folded away"
            )
    for norm, readers in groups:
        w, b = norm.affine()
        w = _own(w) if w is not None else None
        for reader in readers:
            _fold_into(reader, w, b if fold_biases else None, norm.centres and center_weights)
        norm.strip_affine_()
    cfg = model.cfg
    cfg.normalization_type = _PRE_FORM.get(cfg.normalization_type or "", cfg.normalization_type)
    _pre_form_traits(model)


def _pre_form_traits(model: Any) -> None:
    """Make the config describe the folded norms, so ``HookedTransformer(cfg)`` rebuilds them."""
    cfg = model.cfg
    final = cfg.trait("final_norm")
    if isinstance(final, NormTrait):
        cfg.traits["final_norm"] = final.pre_form()
    norm = cfg.traits.get("norm")
    wiring = model.blocks[0].wiring if len(model.blocks) else None
    # Post-norms and stream norms are built from the same trait and keep their weights.
    if isinstance(norm, NormTrait) and (
        wiring is None or set(wiring.norm_names) == set(wiring.input_norms)
    ):
        cfg.traits["norm"] = norm.pre_form()


# ---------------------------------------------------------------------------------------- centring
def _writers(model: Any) -> list[Writer]:
    modules = [model.embed, model.pos_embed]
    modules += [getattr(block, b.name) for block in model.blocks for b in block.wiring.branches]
    return [w for m in modules if isinstance(m, ResidualIO) for w in m.residual_writers()]


def center_writing_weights_(model: Any) -> None:
    """Subtract the ``d_model`` mean from every declared writer of the residual stream."""
    for writer in _writers(model):
        before_centring_(model, writer.module, writer.name)  # a W_U derived from it follows
        _center(writer.module, writer.name)


def center_unembed_(model: Any) -> None:
    """Subtract the vocabulary mean from ``W_U`` ``[d_model, d_vocab]`` and ``b_U``."""
    _center(model.unembed, "W_U")
    _center(model.unembed, "b_U")


# ----------------------------------------------------------------------------------- attention
def _attentions(model: Any, step: str) -> list[Attention]:
    out = []
    for block in model.blocks:
        attn = getattr(block, "attn", None)
        if not isinstance(attn, Attention):
            raise UnsupportedConfigError(
                f"{step}: no rule for the sequence mixer {type(attn).__name__} of a block"
            )
        out.append(block.attn)
    return out


def fold_value_biases_(model: Any) -> None:
    """``b_O += Σ_h b_V[h] @ W_O[h]``, then ``b_V = 0`` (query head ``h`` reads kv ``h // g``)."""
    n_heads = model.cfg.n_heads
    for attn in _attentions(model, "fold_value_biases"):
        name = "_b_V" if attn._grouped else "b_V"
        b_v = getattr(attn, name)
        per_head = b_v.repeat_interleave(n_heads // b_v.shape[0], dim=0)
        w_o = _own(attn.W_O)
        b_o = _own(attn.b_O) + torch.einsum("hd,hdm->m", _up(per_head, attn.W_O), w_o)
        _assign(attn, "b_O", b_o, attn.b_O.dtype)
        _assign(attn, name, torch.zeros_like(b_v), b_v.dtype)


def refactor_factored_attn_matrices_(model: Any) -> None:
    """Rebalance ``[W_Q; b_Q] [W_K; b_K]^T`` and ``W_V W_O`` by SVD (see the public step)."""
    for attn in _attentions(model, "refactor_factored_attn_matrices"):
        if attn._grouped:
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

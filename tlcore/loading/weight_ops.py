"""Built-in weight transforms, referenced by name in specs' ``ops:`` lists.

Each op maps a list of tensors to a list of tensors: ``fn(tensors, cfg, **params)``. Parameters may
be expressions (``{cfg: n_heads}``); a string axis size names a config field. An op with one
parameter may take it positionally: ``{in_heads: n_heads}``.

The named head ops turn HF's ``nn.Linear`` layouts into TransformerLens's per-head shapes, the
pattern every attention rule needs: :func:`in_heads` (``q_proj``/``k_proj``/``v_proj`` weights),
:func:`out_heads` (``o_proj``) and :func:`split_heads` (their biases). Conv1D checkpoints (GPT-2)
``transpose`` first. Ops only reshape and permute, so a weight map also runs on meta tensors.
"""

from __future__ import annotations

from typing import Any

import einops
import torch

Tensors = list[torch.Tensor]


def _size(value: Any, cfg: Any) -> Any:
    return getattr(cfg, value) if isinstance(value, str) else value


def transpose(tensors: Tensors, cfg: Any) -> Tensors:
    """Swap the last two dimensions (HF ``nn.Linear``'s ``[out, in]`` ↔ TL's ``[in, out]``).

    Returns:
        Transposed tensors.
    """
    return [t.transpose(-1, -2) for t in tensors]


def rearrange(tensors: Tensors, cfg: Any, pattern: str, **axes: Any) -> Tensors:
    """``einops.rearrange`` each tensor; axis sizes may name config fields.

    Args:
        pattern: The einops pattern.
        **axes: Axis sizes (ints or config field names).

    Returns:
        Rearranged tensors.
    """
    sizes = {k: _size(v, cfg) for k, v in axes.items()}
    return [einops.rearrange(t, pattern, **sizes) for t in tensors]


def in_heads(tensors: Tensors, cfg: Any, heads: Any) -> Tensors:
    """``[(h d), d_model] -> [h, d_model, d]``: a projection into heads (``W_Q``, ``W_K``, ``W_V``).

    Args:
        tensors: ``nn.Linear`` weights ``[heads * d_head, d_model]``.
        heads: The head count (an int or a config field: ``n_heads``, ``n_key_value_heads``).

    Returns:
        ``[heads, d_model, d_head]`` tensors.

    Example:
        >>> in_heads([torch.zeros(6, 5)], None, 2)[0].shape
        torch.Size([2, 5, 3])
    """
    return rearrange(tensors, cfg, "(h d) m -> h m d", h=heads)


def out_heads(tensors: Tensors, cfg: Any, heads: Any) -> Tensors:
    """``[d_model, (h d)] -> [h, d, d_model]``: the projection out of heads (``W_O``).

    Args:
        tensors: ``nn.Linear`` weights ``[d_model, heads * d_head]``.
        heads: The head count (an int or a config field).

    Returns:
        ``[heads, d_head, d_model]`` tensors.

    Example:
        >>> out_heads([torch.zeros(5, 6)], None, 2)[0].shape
        torch.Size([2, 3, 5])
    """
    return rearrange(tensors, cfg, "m (h d) -> h d m", h=heads)


def split_heads(tensors: Tensors, cfg: Any, heads: Any) -> Tensors:
    """``[(h d)] -> [h, d]``: a per-head bias (``b_Q``, ``b_K``, ``b_V``).

    Args:
        tensors: Biases ``[heads * d_head]``.
        heads: The head count (an int or a config field).

    Returns:
        ``[heads, d_head]`` tensors.
    """
    return rearrange(tensors, cfg, "(h d) -> h d", h=heads)


def grouped_qkv(tensors: Tensors, cfg: Any) -> Tensors:
    """A fused QKV grouped per key/value head, ``[q × n_heads/n_kv | k | v]`` rows of ``d_head``.

    Falcon's ``query_key_value`` and GPT-BigCode's ``c_attn`` store one such group per key/value
    head: new-architecture Falcon (``num_kv_heads`` groups), multi-query (one group holding every
    query head) and per-head (one group per head) are the same layout.

    Args:
        tensors: ``nn.Linear`` weights ``[(n_kv (g + 2) d_head), d_model]`` or biases.
        cfg: Model config (``n_heads``, ``n_key_value_heads``, ``d_head``).

    Returns:
        Three tensors per input: ``W_Q [n_heads, d_model, d_head]``, ``W_K`` and ``W_V``
        ``[n_kv, d_model, d_head]`` (biases: ``[heads, d_head]``).

    Example:
        >>> cfg = type("cfg", (), {"n_heads": 4, "n_key_value_heads": 2, "d_head": 3})
        >>> [tuple(t.shape) for t in grouped_qkv([torch.zeros(24, 5)], cfg)]
        [(4, 5, 3), (2, 5, 3), (2, 5, 3)]
    """
    n_kv, d_head = cfg.n_key_value_heads, cfg.d_head
    out = []
    for t in tensors:
        groups = einops.rearrange(t, "(k g d) ... -> g k ... d", k=n_kv, d=d_head)
        parts = torch.split(groups, [cfg.n_heads // n_kv, 1, 1], dim=0)
        out += [einops.rearrange(p, "g k ... -> (k g) ...") for p in parts]
    return out


def reshape(tensors: Tensors, cfg: Any, shape: list[Any]) -> Tensors:
    """Reshape each tensor (entries may name config fields; one may be -1).

    Args:
        shape: Target shape.

    Returns:
        Reshaped tensors.
    """
    return [t.reshape([_size(s, cfg) for s in shape]) for t in tensors]


def split(tensors: Tensors, cfg: Any, sizes: list[Any], dim: int = 0) -> Tensors:
    """Split each tensor into pieces of the given sizes (fused QKV in contiguous blocks).

    Args:
        sizes: Piece sizes (ints or config field names).
        dim: Dimension to split.

    Returns:
        All pieces, input by input.
    """
    resolved = [_size(s, cfg) for s in sizes]
    return [piece for t in tensors for piece in torch.split(t, resolved, dim=dim)]


def chunk(tensors: Tensors, cfg: Any, n: int, dim: int = 0) -> Tensors:
    """Split each tensor into ``n`` equal chunks.

    Args:
        n: Number of chunks.
        dim: Dimension.

    Returns:
        All chunks, input by input.
    """
    return [piece for t in tensors for piece in torch.chunk(t, n, dim=dim)]


def unbind(tensors: Tensors, cfg: Any, dim: int = 0) -> Tensors:
    """Unbind each tensor along ``dim`` (fused experts → one tensor per expert).

    Args:
        dim: Dimension.

    Returns:
        All slices, input by input.
    """
    return [piece for t in tensors for piece in torch.unbind(t, dim=dim)]


def deinterleave(tensors: Tensors, cfg: Any, dim: int = -1) -> Tensors:
    """Split even and odd indices of ``dim`` (GPT-OSS fused gate/up: gate = 0::2, up = 1::2).

    Args:
        dim: Dimension.

    Returns:
        ``[even, odd]`` per input.
    """
    out = []
    for t in tensors:
        moved = t.movedim(dim, 0)
        out += [moved[0::2].movedim(0, dim), moved[1::2].movedim(0, dim)]
    return out


def narrow(tensors: Tensors, cfg: Any, start: int, length: Any = None, dim: int = 0) -> Tensors:
    """Keep ``length`` entries of ``dim`` from ``start`` (OPT's position table offset of 2).

    Args:
        start: First index kept.
        length: Entries kept (int or config field name); default: to the end.
        dim: Dimension.

    Returns:
        Narrowed tensors.
    """
    out = []
    for t in tensors:
        n = _size(length, cfg) if length is not None else t.shape[dim] - start
        out.append(t.narrow(dim, start, n))
    return out


def concat(tensors: Tensors, cfg: Any, dim: int = 0) -> Tensors:
    """Concatenate all tensors into one.

    Args:
        dim: Dimension.

    Returns:
        One tensor.
    """
    return [torch.cat(tensors, dim=dim)]


def stack(tensors: Tensors, cfg: Any, dim: int = 0) -> Tensors:
    """Stack all tensors into one (per-head norm weights → ``[n_heads, d_head]``).

    Args:
        dim: New dimension.

    Returns:
        One tensor.
    """
    return [torch.stack(tensors, dim=dim)]


def select(tensors: Tensors, cfg: Any, indices: list[int]) -> Tensors:
    """Keep and reorder tensors of the list (CodeGen's q, v, k block order).

    Args:
        indices: Positions to keep, in order.

    Returns:
        The selected tensors.
    """
    return [tensors[i] for i in indices]


def matmul(tensors: Tensors, cfg: Any, transpose: list[bool] | None = None) -> Tensors:
    """Multiply all tensors, in order, into one matrix (fold a bias-free projection into a weight).

    OPT-350m embeds into ``word_embed_proj_dim`` and projects up with ``project_in``; folding
    ``embed_tokens @ project_in.T`` gives the residual stream's ``[d_vocab, d_model]`` embedding.

    Args:
        tensors: 2-D inputs.
        transpose: Per input, whether to transpose it first (default: none).

    Returns:
        One tensor, the product (computed in float64 and cast back, so the fold adds no rounding
        beyond one cast).

    Raises:
        ValueError: If ``transpose`` does not give one flag per tensor.

    Example:
        >>> a, b = torch.ones(3, 2), torch.ones(4, 2)
        >>> matmul([a, b], None, transpose=[False, True])[0].shape
        torch.Size([3, 4])
    """
    flags = transpose or [False] * len(tensors)
    if not tensors or len(flags) != len(tensors):
        raise ValueError(f"matmul: {len(flags)} transpose flags for {len(tensors)} tensors")
    factors = [t.double().T if flip else t.double() for t, flip in zip(tensors, flags)]
    product = factors[0]
    for factor in factors[1:]:
        product = product @ factor
    return [product.to(tensors[0].dtype)]


def scale(tensors: Tensors, cfg: Any, value: float) -> Tensors:
    """Multiply by a constant.

    Args:
        value: Factor.

    Returns:
        Scaled tensors.
    """
    return [t * value for t in tensors]


def add(tensors: Tensors, cfg: Any, value: float) -> Tensors:
    """Add a constant.

    Args:
        value: Addend.

    Returns:
        Shifted tensors.
    """
    return [t + value for t in tensors]


BUILTIN_WEIGHT_OPS: dict[str, Any] = {
    "transpose": transpose,
    "rearrange": rearrange,
    "in_heads": in_heads,
    "out_heads": out_heads,
    "split_heads": split_heads,
    "grouped_qkv": grouped_qkv,
    "reshape": reshape,
    "split": split,
    "chunk": chunk,
    "unbind": unbind,
    "deinterleave": deinterleave,
    "narrow": narrow,
    "concat": concat,
    "stack": stack,
    "select": select,
    "matmul": matmul,
    "scale": scale,
    "add": add,
}

ELEMENT_MOVING_OPS: frozenset[Any] = frozenset(
    fn for name, fn in BUILTIN_WEIGHT_OPS.items() if name not in ("matmul", "scale", "add")
)
"""Ops that only move (and may drop) elements: a weight map of them runs in reverse on index
tensors (:mod:`tlcore.export`). A plugin's op joins them with ``fn.moves_elements_only = True``."""

"""Activation patching, as TransformerLens 2.x's ``transformer_lens.patching``.

Run the model on a *corrupted* input, replace (patch) one activation with its value from a *clean*
run, and measure how far a metric of the output moves back towards the clean answer. Iterating over
layers, positions and heads localises the activations that carry the difference.

:func:`generic_activation_patch` does the work: for every index tuple (its first entry is always the
layer) it runs the corrupted tokens with one hook that calls ``patch_setter(corrupted_activation,
index, clean_activation)`` and records ``patching_metric(logits)``. The ``get_act_patch_*``
functions fix the activation, the setter and the index axes:

================================================  ==========  ======================================
function                                          activation  result shape
================================================  ==========  ======================================
``get_act_patch_resid_pre``                       resid_pre   [n_layers, pos]
``get_act_patch_resid_mid``                       resid_mid   [n_layers, pos]
``get_act_patch_attn_out``                        attn_out    [n_layers, pos]
``get_act_patch_mlp_out``                         mlp_out     [n_layers, pos]
``get_act_patch_attn_head_out_by_pos``            z           [n_layers, pos, n_heads]
``get_act_patch_attn_head_q_by_pos``              q           [n_layers, pos, n_heads]
``get_act_patch_attn_head_k_by_pos``              k           [n_layers, pos, n_key_value_heads]
``get_act_patch_attn_head_v_by_pos``              v           [n_layers, pos, n_key_value_heads]
``get_act_patch_attn_head_pattern_by_pos``        pattern     [n_layers, n_heads, dest_pos]
``get_act_patch_attn_head_pattern_dest_src_pos``  pattern     [n_layers, n_heads, dest_pos, src_pos]
``get_act_patch_attn_head_out_all_pos``           z           [n_layers, n_heads]
``get_act_patch_attn_head_q_all_pos``             q           [n_layers, n_heads]
``get_act_patch_attn_head_k_all_pos``             k           [n_layers, n_key_value_heads]
``get_act_patch_attn_head_v_all_pos``             v           [n_layers, n_key_value_heads]
``get_act_patch_attn_head_pattern_all_pos``       pattern     [n_layers, n_heads]
``get_act_patch_attn_head_all_pos_every``         all five    [5, n_layers, n_heads]
``get_act_patch_attn_head_by_pos_every``          all five    [5, n_layers, pos, n_heads]
``get_act_patch_block_every``                     three       [3, n_layers, pos]
================================================  ==========  ======================================

Under grouped-query attention keys and values have ``n_key_value_heads`` heads, so their patches
index key/value heads (unless ``cfg.ungroup_grouped_query_attention`` expands them first).

pandas is optional: ``index_df`` (a ``pandas.DataFrame`` of index rows) and ``return_index_df``
need it; iterating over ``index_axis_names`` does not.

Example:
    >>> import torch
    >>> from tlcore import HookedTransformer, patching
    >>> model = HookedTransformer(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=20,
    ...                                n_ctx=8, act_fn="relu"))
    >>> clean, corrupted = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 5, 3, 4]])
    >>> _, clean_cache = model.run_with_cache(clean)
    >>> metric = lambda logits: logits[0, -1, 7]
    >>> results = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    >>> results.shape  # [n_layers, pos]
    torch.Size([2, 4])
    >>> clean_value = metric(model(clean)).item()
    >>> abs(results[0, 1].item() - clean_value) < 1e-5  # layer 0 at the corrupted position
    True
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int

from tlcore.patching_core import (
    Metric,
    PatchSetter,
    generic_activation_patch,
    layer_head_dest_src_pos_pattern_patch_setter,
    layer_head_pattern_patch_setter,
    layer_head_pos_pattern_patch_setter,
    layer_head_vector_patch_setter,
    layer_pos_head_vector_patch_setter,
    layer_pos_patch_setter,
    make_df_from_ranges,
)

if TYPE_CHECKING:
    from tlcore.cache import ActivationCache
    from tlcore.model import HookedTransformer

__all__ = [
    "generic_activation_patch",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_out",
    "get_act_patch_block_every",
    "get_act_patch_mlp_out",
    "get_act_patch_resid_mid",
    "get_act_patch_resid_pre",
    "layer_head_dest_src_pos_pattern_patch_setter",
    "layer_head_pattern_patch_setter",
    "layer_head_pos_pattern_patch_setter",
    "layer_head_vector_patch_setter",
    "layer_pos_head_vector_patch_setter",
    "layer_pos_patch_setter",
    "make_df_from_ranges",
]

# -- the named patching functions --------------------------------------------------------------
_ARGS_DOC = """
    See :func:`generic_activation_patch` for the details of activation patching.

    Args:
        corrupted_tokens: The corrupted input ``[batch, pos]``.
        clean_cache: The clean run's activation cache.
        patching_metric: Logits → a scalar tensor.

    Returns:
        The metric for each patch, shaped {shape}.
"""


def _named(
    activation: str, setter: PatchSetter, axes: tuple[str, ...], what: str, shape: str
) -> Any:
    fn = partial(
        generic_activation_patch,
        patch_setter=setter,
        activation_name=activation,
        index_axis_names=axes,  # type: ignore[arg-type]
    )
    fn.__doc__ = f"Activation patching of {what}." + _ARGS_DOC.format(shape=shape)
    return fn


_BY_POS = ("layer", "pos", "head")
_ALL_POS = ("layer", "head")
get_act_patch_resid_pre = _named(
    "resid_pre",
    layer_pos_patch_setter,
    ("layer", "pos"),
    "the residual stream at the start of each block, by position",
    "``[n_layers, pos]``",
)
get_act_patch_resid_mid = _named(
    "resid_mid",
    layer_pos_patch_setter,
    ("layer", "pos"),
    "the residual stream between attention and MLP, by position",
    "``[n_layers, pos]``",
)
get_act_patch_attn_out = _named(
    "attn_out",
    layer_pos_patch_setter,
    ("layer", "pos"),
    "each attention layer's output, by position",
    "``[n_layers, pos]``",
)
get_act_patch_mlp_out = _named(
    "mlp_out",
    layer_pos_patch_setter,
    ("layer", "pos"),
    "each MLP layer's output, by position",
    "``[n_layers, pos]``",
)
get_act_patch_attn_head_out_by_pos = _named(
    "z",
    layer_pos_head_vector_patch_setter,
    _BY_POS,
    "each head's output (``hook_z``), by position",
    "``[n_layers, pos, n_heads]``",
)
get_act_patch_attn_head_q_by_pos = _named(
    "q",
    layer_pos_head_vector_patch_setter,
    _BY_POS,
    "each head's queries, by position",
    "``[n_layers, pos, n_heads]``",
)
get_act_patch_attn_head_k_by_pos = _named(
    "k",
    layer_pos_head_vector_patch_setter,
    _BY_POS,
    "each key head's keys, by position",
    "``[n_layers, pos, n_key_value_heads]``",
)
get_act_patch_attn_head_v_by_pos = _named(
    "v",
    layer_pos_head_vector_patch_setter,
    _BY_POS,
    "each value head's values, by position",
    "``[n_layers, pos, n_key_value_heads]``",
)
get_act_patch_attn_head_pattern_by_pos = _named(
    "pattern",
    layer_head_pos_pattern_patch_setter,
    ("layer", "head_index", "dest_pos"),
    "each head's attention pattern, by destination position",
    "``[n_layers, n_heads, dest_pos]``",
)
get_act_patch_attn_head_pattern_dest_src_pos = _named(
    "pattern",
    layer_head_dest_src_pos_pattern_patch_setter,
    ("layer", "head_index", "dest_pos", "src_pos"),
    "each entry of each head's attention pattern",
    "``[n_layers, n_heads, dest_pos, src_pos]``",
)
get_act_patch_attn_head_out_all_pos = _named(
    "z",
    layer_head_vector_patch_setter,
    _ALL_POS,
    "each head's output (``hook_z``) at all positions at once",
    "``[n_layers, n_heads]``",
)
get_act_patch_attn_head_q_all_pos = _named(
    "q",
    layer_head_vector_patch_setter,
    _ALL_POS,
    "each head's queries at all positions at once",
    "``[n_layers, n_heads]``",
)
get_act_patch_attn_head_k_all_pos = _named(
    "k",
    layer_head_vector_patch_setter,
    _ALL_POS,
    "each key head's keys at all positions at once",
    "``[n_layers, n_key_value_heads]``",
)
get_act_patch_attn_head_v_all_pos = _named(
    "v",
    layer_head_vector_patch_setter,
    _ALL_POS,
    "each value head's values at all positions at once",
    "``[n_layers, n_key_value_heads]``",
)
get_act_patch_attn_head_pattern_all_pos = _named(
    "pattern",
    layer_head_pattern_patch_setter,
    ("layer", "head_index"),
    "each head's whole attention pattern",
    "``[n_layers, n_heads]``",
)


def _pad_heads(results: torch.Tensor, n_heads: int) -> torch.Tensor:
    # Grouped k/v results have n_key_value_heads columns; zero-pad to stack with the others.
    return torch.nn.functional.pad(results, (0, n_heads - results.shape[-1]))


def get_act_patch_attn_head_all_pos_every(
    model: HookedTransformer,
    corrupted_tokens: Int[torch.Tensor, "batch pos"],
    clean_cache: ActivationCache,
    metric: Metric,
) -> Float[torch.Tensor, "patch_type layer head"]:
    """Patch every head at all positions, for output, query, key, value and pattern.

    Args:
        corrupted_tokens: The corrupted input ``[batch, pos]``.
        clean_cache: The clean run's cache.
        metric: Logits → a scalar tensor.

    Returns:
        ``[5, n_layers, n_heads]`` (z, q, k, v, pattern). Under grouped-query attention the key
        and value rows hold ``n_key_value_heads`` results, zero-padded to ``n_heads``.
    """
    args = (model, corrupted_tokens, clean_cache, metric)
    n_heads = model.cfg.n_heads
    return torch.stack(
        [
            get_act_patch_attn_head_out_all_pos(*args),
            get_act_patch_attn_head_q_all_pos(*args),
            _pad_heads(get_act_patch_attn_head_k_all_pos(*args), n_heads),
            _pad_heads(get_act_patch_attn_head_v_all_pos(*args), n_heads),
            get_act_patch_attn_head_pattern_all_pos(*args),
        ]
    )


def get_act_patch_attn_head_by_pos_every(
    model: HookedTransformer,
    corrupted_tokens: Int[torch.Tensor, "batch pos"],
    clean_cache: ActivationCache,
    metric: Metric,
) -> Float[torch.Tensor, "patch_type layer pos head"]:
    """Patch every head at each position, for output, query, key, value and pattern.

    Args:
        corrupted_tokens: The corrupted input ``[batch, pos]``.
        clean_cache: The clean run's cache.
        metric: Logits → a scalar tensor.

    Returns:
        ``[5, n_layers, pos, n_heads]`` (z, q, k, v, pattern by destination position). Under
        grouped-query attention the key and value rows are zero-padded to ``n_heads``.
    """
    args = (model, corrupted_tokens, clean_cache, metric)
    n_heads = model.cfg.n_heads
    return torch.stack(
        [
            get_act_patch_attn_head_out_by_pos(*args),
            get_act_patch_attn_head_q_by_pos(*args),
            _pad_heads(get_act_patch_attn_head_k_by_pos(*args), n_heads),
            _pad_heads(get_act_patch_attn_head_v_by_pos(*args), n_heads),
            get_act_patch_attn_head_pattern_by_pos(*args).transpose(-1, -2),  # [layer, pos, head]
        ]
    )


def get_act_patch_block_every(
    model: HookedTransformer,
    corrupted_tokens: Int[torch.Tensor, "batch pos"],
    clean_cache: ActivationCache,
    metric: Metric,
) -> Float[torch.Tensor, "patch_type layer pos"]:
    """Patch the residual stream, attention output and MLP output of every block, by position.

    Args:
        corrupted_tokens: The corrupted input ``[batch, pos]``.
        clean_cache: The clean run's cache.
        metric: Logits → a scalar tensor.

    Returns:
        ``[3, n_layers, pos]`` (resid_pre, attn_out, mlp_out).
    """
    args = (model, corrupted_tokens, clean_cache, metric)
    return torch.stack(
        [
            get_act_patch_resid_pre(*args),
            get_act_patch_attn_out(*args),
            get_act_patch_mlp_out(*args),
        ]
    )

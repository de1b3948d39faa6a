"""The engine of activation patching: ``generic_activation_patch`` and the patch setters.

:mod:`tlcore.patching` builds TransformerLens's named ``get_act_patch_*`` functions on these.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.utils.act_names import get_act_name

if TYPE_CHECKING:
    import pandas as pd

    from tlcore.cache import ActivationCache
    from tlcore.model import HookedTransformer

AxisNames = Literal["layer", "pos", "head_index", "head", "src_pos", "dest_pos"]
_AXES = ("layer", "pos", "head_index", "head", "src_pos", "dest_pos")
Metric = Callable[[Float[torch.Tensor, "batch pos d_vocab"]], Float[torch.Tensor, ""]]
PatchSetter = Callable[[torch.Tensor, Sequence[int], torch.Tensor], torch.Tensor]
_PANDAS_HINT = "pandas is not a tlcore dependency; install it with: pip install pandas"


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(f"index_df / return_index_df need pandas. {_PANDAS_HINT}") from exc
    return pandas


def make_df_from_ranges(
    column_max_ranges: Sequence[int], column_names: Sequence[str]
) -> pd.DataFrame:
    """A DataFrame of every index combination, ``range(n)`` per column, the last column fastest.

    Args:
        column_max_ranges: The size of each column's range.

    Returns:
        The DataFrame (one row per combination).

    Raises:
        ImportError: If pandas is not installed.
    """
    rows = list(itertools.product(*(range(n) for n in column_max_ranges)))
    return _pandas().DataFrame(rows, columns=list(column_names))


def generic_activation_patch(
    model: HookedTransformer,
    corrupted_tokens: Int[torch.Tensor, "batch pos"],
    clean_cache: ActivationCache,
    patching_metric: Metric,
    patch_setter: PatchSetter,
    activation_name: str,
    index_axis_names: Sequence[AxisNames] | None = None,
    index_df: pd.DataFrame | None = None,
    return_index_df: bool = False,
    *,
    patches_per_forward: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, pd.DataFrame]:
    """Patch one activation per index from the clean run into the corrupted run; record a metric.

    For every index tuple ``(layer, ...)``, run ``corrupted_tokens`` with a hook on
    ``get_act_name(activation_name, layer)`` that returns ``patch_setter(corrupted_activation,
    index, clean_activation)`` (it gets a copy of the corrupted activation, so it may edit it in
    place) and store ``patching_metric(logits).item()``.

    Args:
        corrupted_tokens: The corrupted input ``[batch, pos]``.
        clean_cache: The clean run's cache (at least the patched activation at every layer used).
        patching_metric: Logits → a scalar tensor (loss, logit difference, ...).
        patch_setter: ``(corrupted_activation, index, clean_activation)`` → the patched
            activation. The setters in this module cover the usual shapes.
        activation_name: Short activation name (``"resid_pre"``, ``"z"``, ``"pattern"`` ...).
        index_axis_names: Axes to iterate over, first ``"layer"``; ranges come from the model and
            tokens (``"pos"``/``"src_pos"``/``"dest_pos"``: sequence length; ``"head"`` /
            ``"head_index"``: ``n_heads``, or ``n_key_value_heads`` for grouped ``k``/``v``).
        index_df: Explicit index rows instead (a pandas DataFrame, columns in index order); the
            result is then flat, one value per row.
        return_index_df: Also return the index rows as a DataFrame (needs pandas).
        patches_per_forward: How many patches share one forward pass (tlcore only). Patches of
            the same layer run as one batch of copies of ``corrupted_tokens``, each copy patched
            separately; the setter and the metric still see one copy's ``[batch, ...]`` slice,
            so results equal one-at-a-time patching up to float rounding. Default: up to 16,
            fewer for long inputs or large vocabularies; 1 runs them one at a time, as
            TransformerLens does (use it when other hooks on the model assume the batch size).

    Returns:
        The metric per patch: shaped by the axis ranges, or flat for ``index_df``; with
        ``return_index_df``, a tuple ``(results, index_df)``.

    Raises:
        ValueError: If neither or both of ``index_axis_names`` and ``index_df`` are given, or an
            axis name is unknown.
        ImportError: For ``index_df``/``return_index_df`` without pandas.
    """
    if (index_axis_names is None) == (index_df is None):
        raise ValueError("pass exactly one of index_axis_names and index_df")
    if index_df is None:
        assert index_axis_names is not None
        unknown = [name for name in index_axis_names if name not in _AXES]
        if unknown:
            raise ValueError(f"unknown index axes {unknown}; valid axes: {list(_AXES)}")
        ranges = [
            _axis_range(model, corrupted_tokens, activation_name, a) for a in index_axis_names
        ]
        indices = list(itertools.product(*(range(n) for n in ranges)))
        results = torch.zeros(ranges, device=model.cfg.device)
        flat = False
        if return_index_df:
            index_df = make_df_from_ranges(ranges, index_axis_names)
    else:
        _pandas()
        indices = [tuple(int(v) for v in row) for row in index_df.to_numpy().tolist()]
        results = torch.zeros(len(indices), device=model.cfg.device)
        flat = True

    from tqdm.auto import tqdm

    tokens = corrupted_tokens if corrupted_tokens.dim() == 2 else corrupted_tokens[None]
    batch = tokens.shape[0]
    per_forward = patches_per_forward or _default_patches_per_forward(model, tokens)
    by_layer: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for count, index in enumerate(indices):
        by_layer.setdefault(index[0], []).append((count, index))
    progress = tqdm(total=len(indices), desc=f"patching {activation_name}", unit="patch")
    for layer, items in by_layer.items():
        name = get_act_name(activation_name, layer)
        clean_activation = clean_cache[name]
        for start in range(0, len(items), per_forward):
            chunk = items[start : start + per_forward]

            def patching_hook(
                corrupted_activation: torch.Tensor,
                hook: Any,
                chunk: list[tuple[int, tuple[int, ...]]] = chunk,
                clean_activation: torch.Tensor = clean_activation,
            ) -> torch.Tensor:
                # Copies: the hooked tensor may be shared with the rest of the forward pass.
                patched = corrupted_activation.clone()
                for k, (_, index) in enumerate(chunk):
                    rows = slice(k * batch, (k + 1) * batch)
                    patched[rows] = patch_setter(
                        patched[rows].clone(), list(index), clean_activation
                    )
                return patched

            with torch.no_grad():
                run_tokens = tokens.repeat(len(chunk), 1) if len(chunk) > 1 else tokens
                logits = model.run_with_hooks(run_tokens, fwd_hooks=[(name, patching_hook)])
                for k, (count, index) in enumerate(chunk):
                    metric = patching_metric(logits[k * batch : (k + 1) * batch])
                    number = metric.item() if hasattr(metric, "item") else metric
                    results[count if flat else index] = float(number)
            progress.update(len(chunk))
    progress.close()
    if return_index_df:
        return results, index_df
    return results


def _default_patches_per_forward(model: Any, tokens: torch.Tensor) -> int:
    # Batching amortises per-forward overhead (most of the time for short prompts); bound the
    # tokens per forward and the logits' memory so long inputs and big vocabularies stay cheap.
    per_copy = tokens.numel()
    logit_bytes = per_copy * model.cfg.d_vocab_out * 4
    return max(1, min(16, 2048 // max(per_copy, 1), (256 << 20) // max(logit_bytes, 1)))


def _axis_range(model: Any, tokens: torch.Tensor, activation_name: str, axis: str) -> int:
    cfg = model.cfg
    if axis == "layer":
        return int(cfg.n_layers)
    if axis in ("pos", "src_pos", "dest_pos"):
        return int(tokens.shape[-1])
    grouped = activation_name in ("k", "v") and not cfg.ungroup_grouped_query_attention
    return int(cfg.n_key_value_heads if grouped else cfg.n_heads)


# -- patch setters (``index`` starts with the layer, which the hook name already fixes) -----------
def layer_pos_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch pos ..."],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch pos ..."],
) -> Float[torch.Tensor, "batch pos ..."]:
    """Patch one position of a ``[batch, pos, ...]`` activation; ``index = (layer, pos)``.

    Args:
        corrupted_activation: The corrupted run's activation (edited in place).
        index: ``(layer, pos)``.
        clean_activation: The clean run's activation.

    Returns:
        The patched activation.

    Example:
        >>> a, b = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
        >>> layer_pos_patch_setter(a, (0, 1), b)[0, :, 0]
        tensor([0., 1., 0.])
    """
    _, pos = _unpack(index, 2)
    corrupted_activation[:, pos, ...] = clean_activation[:, pos, ...]
    return corrupted_activation


def layer_pos_head_vector_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch pos head ..."],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch pos head ..."],
) -> Float[torch.Tensor, "batch pos head ..."]:
    """Patch one head at one position (q, k, v, z, result); ``index = (layer, pos, head)``.

    Args:
        corrupted_activation: The corrupted run's activation (edited in place).
        index: ``(layer, pos, head)``.
        clean_activation: The clean run's activation.

    Returns:
        The patched activation.
    """
    _, pos, head = _unpack(index, 3)
    corrupted_activation[:, pos, head] = clean_activation[:, pos, head]
    return corrupted_activation


def layer_head_vector_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch pos head ..."],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch pos head ..."],
) -> Float[torch.Tensor, "batch pos head ..."]:
    """Patch one head at every position (q, k, v, z, result); ``index = (layer, head)``.

    Args:
        corrupted_activation: The corrupted run's activation (edited in place).
        index: ``(layer, head)``.
        clean_activation: The clean run's activation.

    Returns:
        The patched activation.
    """
    _, head = _unpack(index, 2)
    corrupted_activation[:, :, head] = clean_activation[:, :, head]
    return corrupted_activation


def layer_head_pattern_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch head dest src"],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch head dest src"],
) -> Float[torch.Tensor, "batch head dest src"]:
    """Patch one head's whole attention pattern (or scores); ``index = (layer, head)``.

    Args:
        corrupted_activation: The corrupted run's pattern (edited in place).
        index: ``(layer, head)``.
        clean_activation: The clean run's pattern.

    Returns:
        The patched pattern.
    """
    _, head = _unpack(index, 2)
    corrupted_activation[:, head, :, :] = clean_activation[:, head, :, :]
    return corrupted_activation


def layer_head_pos_pattern_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch head dest src"],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch head dest src"],
) -> Float[torch.Tensor, "batch head dest src"]:
    """Patch one head's pattern row for one destination; ``index = (layer, head, dest_pos)``.

    Args:
        corrupted_activation: The corrupted run's pattern (edited in place).
        index: ``(layer, head, dest_pos)``.
        clean_activation: The clean run's pattern.

    Returns:
        The patched pattern.
    """
    _, head, dest = _unpack(index, 3)
    corrupted_activation[:, head, dest, :] = clean_activation[:, head, dest, :]
    return corrupted_activation


def layer_head_dest_src_pos_pattern_patch_setter(
    corrupted_activation: Float[torch.Tensor, "batch head dest src"],
    index: Sequence[int],
    clean_activation: Float[torch.Tensor, "batch head dest src"],
) -> Float[torch.Tensor, "batch head dest src"]:
    """Patch one entry of one head's pattern; ``index = (layer, head, dest_pos, src_pos)``.

    Args:
        corrupted_activation: The corrupted run's pattern (edited in place).
        index: ``(layer, head, dest_pos, src_pos)``.
        clean_activation: The clean run's pattern.

    Returns:
        The patched pattern.
    """
    _, head, dest, src = _unpack(index, 4)
    corrupted_activation[:, head, dest, src] = clean_activation[:, head, dest, src]
    return corrupted_activation


def _unpack(index: Sequence[int], n: int) -> Sequence[int]:
    if len(index) != n:
        raise ValueError(f"this patch setter takes a {n}-part index, got {tuple(index)}")
    return index

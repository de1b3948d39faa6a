"""`ActivationCache`: the activations of one forward pass, with TransformerLens's access helpers.

`tlcore.hooks.HookedRootModule.run_with_cache` returns one. Keys are full hook names; indexing also
takes `tlcore.utils.act_names.get_act_name` shorthands and ``(name, layer[, layer_type])`` tuples,
with negative layers counted from the end.

The class is assembled from layers, one concept each: storage and access
(:mod:`tlcore.caching.storage`), the model's declared wiring as the analysis reads it
(:mod:`tlcore.caching.wiring`), residual-stream analysis (:mod:`tlcore.caching.residual`) and
component stacks (:mod:`tlcore.caching.components`).
"""

from __future__ import annotations

from tlcore.caching.components import ComponentAnalysis
from tlcore.caching.storage import CacheKey

__all__ = ["ActivationCache", "CacheKey"]


class ActivationCache(ComponentAnalysis):
    """The activations of a forward pass, indexed by hook name.

    Args:
        cache_dict: Activations keyed by full hook name (gradients as ``"<name>_grad"``).
        model: The model they came from; used for ``model.cfg`` (negative layers, analysis).
            The cache keeps it alive; set ``cache.model = None`` to drop it.
        has_batch_dim: Whether activations still have their leading batch dimension.
        has_embed: Whether ``hook_embed`` was cached; None infers it from the keys.
        has_pos_embed: Whether ``hook_pos_embed`` was cached; None infers it from the keys.

    Examples:
        >>> import torch
        >>> cache = ActivationCache({"blocks.0.attn.hook_pattern": torch.ones(1, 2, 3, 3)}, None)
        >>> cache["pattern", 0].shape
        torch.Size([1, 2, 3, 3])
        >>> cache["pattern0"] is cache["blocks.0.attn.hook_pattern"]
        True
        >>> ("pattern", 0) in cache, "pattern1" in cache
        (True, False)
        >>> cache.remove_batch_dim()["blocks.0.attn.hook_pattern"].shape
        torch.Size([2, 3, 3])
    """

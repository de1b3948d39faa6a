"""TransformerLens's ``past_key_value_caching`` import path for tlcore's KV cache.

Example:
    >>> from tlcore.past_key_value_caching import HookedTransformerKeyValueCache
    >>> from tlcore import HookedTransformerConfig
    >>> cfg = HookedTransformerConfig(n_layers=2, d_model=8, d_head=4, n_ctx=8, d_vocab=5,
    ...                               act_fn="relu", device="cpu")
    >>> cache = HookedTransformerKeyValueCache.init_cache(cfg, "cpu", batch_size=3)
    >>> len(cache), tuple(cache[0].past_keys.shape)  # [batch, pos_so_far, kv_head, d_head]
    (2, (3, 0, 2, 4))
"""

from tlcore.kv_cache import HookedTransformerKeyValueCache, HookedTransformerKeyValueCacheEntry

__all__ = ["HookedTransformerKeyValueCache", "HookedTransformerKeyValueCacheEntry"]

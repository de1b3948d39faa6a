"""The layers `tlcore.cache.ActivationCache` is assembled from (storage, wiring, analysis)."""

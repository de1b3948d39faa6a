"""The registry of architectures, trait kinds, weight ops and aliases (filled by plugins)."""

import tlcore.plugins.manager as _plugins
from tlcore.registry.registry import Registry, Source, TraitKind, WeightOp


def get_registry() -> Registry:
    """Return the registry, loading plugins (built-ins and entry points) on first use.

    Returns:
        The populated registry.

    Example:
        >>> "gpt2" in get_registry().spec_names()
        True
    """
    # The manager fills the registry; it imports tlcore.registry.registry, so it is bound as a
    # module here and its get_manager looked up at call time, whichever of the two loads first.
    return _plugins.get_manager().registry


__all__ = ["Registry", "Source", "TraitKind", "WeightOp", "get_registry"]

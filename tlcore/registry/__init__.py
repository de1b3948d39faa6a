"""The registry of architectures, trait kinds, weight ops and aliases (filled by plugins)."""

from tlcore.registry.registry import Registry, Source, TraitKind, WeightOp


def get_registry() -> Registry:
    """Return the registry, loading plugins (built-ins and entry points) on first use.

    Returns:
        The populated registry.

    Example:
        >>> "gpt2" in get_registry().spec_names()
        True
    """
    from tlcore.plugins.manager import get_manager

    return get_manager().registry


__all__ = ["Registry", "Source", "TraitKind", "WeightOp", "get_registry"]

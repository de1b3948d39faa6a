"""The registry of architectures, trait kinds, weight ops and aliases (filled by plugins)."""

from typing import Any

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


def register_spec(spec: Any, *, override: bool = False, replace_builtin: bool = False) -> list[str]:
    """Register an architecture spec at run time: a YAML file, a folder of them, or a mapping.

    The spec is validated (schema, trait kinds, ``extends``, config fields, expressions) before
    anything is registered; an invalid spec raises and changes nothing. Registered specs show in
    ``tlcore plugins --all`` under ``tlcore.register_spec``.

    Args:
        spec: A ``.yaml`` file, a folder of them, a spec mapping or an ``ArchitectureSpec``.
        override: Replace an architecture of the same name that a plugin registered.
        replace_builtin: Allow replacing a built-in architecture of the same name, or being
            chosen instead of one (a higher ``hf.priority`` for its HF model types). This is the
            explicit, visible choice: ``cfg.spec_source`` of models it builds says so.

    Returns:
        The architecture names registered.

    Raises:
        SpecError: If a spec is invalid (the message names the file and field).
        PluginError: If a name is taken, or a built-in would be replaced without
            ``replace_builtin=True``.

    Example:
        >>> import tlcore
        >>> tlcore.register_spec({"name": "gpt2", "extends": "gpt2"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tlcore.errors.PluginError: architecture 'gpt2' from plugin 'tlcore.register_spec' ...
    """
    return _plugins.get_manager().register_spec(
        spec, override=override, replace_builtin=replace_builtin
    )


__all__ = ["Registry", "Source", "TraitKind", "WeightOp", "get_registry", "register_spec"]

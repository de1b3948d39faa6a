"""The environment switches that choose which plugins load, and whether failures raise.

- :data:`STRICT_ENV` (``TLCORE_STRICT_PLUGINS=1``): raise instead of warning;
- :data:`DISABLE_ENV` (``TLCORE_DISABLE_PLUGIN_AUTOLOAD=1``): load no entry points;
- :data:`LOAD_ENV` (``TLCORE_LOAD_PLUGINS=a,b``): load only these entry points;
- :data:`BLOCK_ENV` (``TLCORE_BLOCK_PLUGINS=a,b``): never load these.

:mod:`tlcore.plugins.manager` describes how they combine.
"""

from __future__ import annotations

import os
import re

STRICT_ENV = "TLCORE_STRICT_PLUGINS"
DISABLE_ENV = "TLCORE_DISABLE_PLUGIN_AUTOLOAD"
LOAD_ENV = "TLCORE_LOAD_PLUGINS"
BLOCK_ENV = "TLCORE_BLOCK_PLUGINS"


def env_names(name: str) -> set[str] | None:
    """Read a comma-separated list of plugin names from an environment variable.

    Args:
        name: The variable.

    Returns:
        The normalised names (:func:`normalize_name`), or None if the variable is not set.
    """
    value = os.environ.get(name)
    if value is None:
        return None
    return {normalize_name(part) for part in value.split(",") if part.strip()}


def env_flag(name: str) -> bool:
    """Tell whether an environment variable is set to a true value (``1``, ``true``, ...).

    Args:
        name: The variable.

    Returns:
        True for ``1``, ``true``, ``yes`` or ``on`` (any case).
    """
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def normalize_name(name: str) -> str:
    """PEP 503 name normalisation, so ``tlcore_foo`` selects distribution ``tlcore-foo``.

    Args:
        name: An entry-point or distribution name.

    Returns:
        The normalised name.
    """
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def strict() -> bool:
    """Tell whether plugin failures raise (``TLCORE_STRICT_PLUGINS``) instead of warning.

    Returns:
        True in strict mode.
    """
    return env_flag(STRICT_ENV)

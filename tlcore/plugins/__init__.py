"""Plugins: pluggy hook specifications, the registrar each hook receives, and the lazy manager.

A plugin is a module (or object) with ``@tlcore.hookimpl`` functions, installed with an entry point
in the ``tlcore`` group. ``docs/plugins.md`` walks through writing one.
"""

from tlcore.plugins.hookspecs import HOOK_NAMES, hookimpl, hookspec
from tlcore.plugins.manager import (
    PluginRecord,
    PluginWarning,
    TlcorePluginManager,
    get_manager,
    reset_manager,
)
from tlcore.plugins.registrar import Registrar

__all__ = [
    "HOOK_NAMES",
    "PluginRecord",
    "PluginWarning",
    "Registrar",
    "TlcorePluginManager",
    "get_manager",
    "hookimpl",
    "hookspec",
    "reset_manager",
]

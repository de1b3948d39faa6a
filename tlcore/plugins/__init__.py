"""Plugins: pluggy hook specifications, registrar and the lazy plugin manager."""

from tlcore.plugins.hookspecs import hookimpl, hookspec
from tlcore.plugins.manager import PluginRecord, PluginWarning, get_manager, reset_manager
from tlcore.plugins.registrar import Registrar

__all__ = [
    "PluginRecord",
    "PluginWarning",
    "Registrar",
    "get_manager",
    "hookimpl",
    "hookspec",
    "reset_manager",
]

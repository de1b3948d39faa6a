"""The plugin hook specifications (pluggy project name and entry-point group: ``tlcore``).

Every hook receives a registrar that stamps each item with the plugin that registered it. The
built-in architectures, traits and weight ops come in through these same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tlcore.plugins.registrar import Registrar

hookspec = pluggy.HookspecMarker("tlcore")
hookimpl = pluggy.HookimplMarker("tlcore")


@hookspec
def register_traits(register: Registrar) -> None:
    """Register trait kinds: ``register.trait(slot, TraitModel, component_factory)``.

    Args:
        register: The registrar for this plugin.
    """


@hookspec
def register_weight_ops(register: Registrar) -> None:
    """Register weight transforms: ``register.weight_op(name, fn)``.

    Args:
        register: The registrar for this plugin.
    """


@hookspec
def register_specs(register: Registrar) -> None:
    """Register architecture specs: ``register.spec(path_or_folder_or_mapping_or_object)``.

    Args:
        register: The registrar for this plugin.
    """


@hookspec
def register_aliases(register: Registrar) -> None:
    """Register model aliases: ``register.alias("gpt2-small", "gpt2")``.

    Args:
        register: The registrar for this plugin.
    """


@hookspec(firstresult=True)
def resolve_hf_config(hf_config: dict[str, Any]) -> str | None:
    """Pick the architecture for an HF config before tlcore's own matching (first result wins).

    Args:
        hf_config: The HF config as a dict.

    Returns:
        An architecture name, or None to pass.
    """


@hookspec
def register_commands(subparsers: Any) -> None:
    """Add sub-commands to the ``tlcore`` CLI (an ``argparse`` sub-parsers object).

    Each command sets ``func=callable(args) -> int`` with ``parser.set_defaults``.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.
    """

"""The built-in plugin. It uses the same hooks an external plugin uses (see ``tlcore.plugins``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from tlcore.builtin.traits import TRAITS
from tlcore.loading import mxfp4
from tlcore.loading.weight_ops import BUILTIN_WEIGHT_OPS
from tlcore.plugins.hookspecs import hookimpl
from tlcore.plugins.registrar import Registrar

__all__ = [
    "TRAITS",
    "register_aliases",
    "register_commands",
    "register_specs",
    "register_traits",
    "register_weight_ops",
    "specs_dir",
]


def specs_dir() -> Path:
    """Locate the built-in specs (in a wheel: ``tlcore/_specs``; in a checkout: ``specs``).

    Returns:
        The folder holding ``architectures/`` and ``models.yaml``.
    """
    packaged = Path(__file__).resolve().parent.parent / "_specs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "specs"


@hookimpl
def register_traits(register: Registrar) -> None:
    """Register the built-in trait kinds.

    Args:
        register: Registrar.
    """
    for slot, model, factory in TRAITS:
        register.trait(slot, model, factory)


@hookimpl
def register_weight_ops(register: Registrar) -> None:
    """Register the built-in weight transforms.

    Args:
        register: Registrar.
    """
    for name, fn in BUILTIN_WEIGHT_OPS.items():
        register.weight_op(name, fn)
    register.weight_op("mxfp4", mxfp4.mxfp4)


@hookimpl
def register_specs(register: Registrar) -> None:
    """Register every spec under ``specs/architectures`` and the text towers of multimodal wrappers.

    Args:
        register: Registrar.
    """
    register.spec(specs_dir() / "architectures")
    for tower in yaml.safe_load((specs_dir() / "text_towers.yaml").read_text()):
        register.text_tower(tower)


COMMAND_MODULES: tuple[str, ...] = (
    "tlcore.commands.list_specs",
    "tlcore.commands.demo",
    "tlcore.commands.plugins",
    "tlcore.commands.parity",
    "tlcore.commands.harvest",
)
"""Modules whose ``add_command(subparsers)`` adds a built-in CLI command."""


@hookimpl
def register_commands(subparsers: Any) -> None:
    """Add the built-in CLI commands.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(subparsers)


@hookimpl
def register_aliases(register: Registrar) -> None:
    """Register the model aliases in ``specs/models.yaml``.

    Args:
        register: Registrar.
    """
    path = specs_dir() / "models.yaml"
    if path.exists():
        for alias, target in (yaml.safe_load(path.read_text()) or {}).get("aliases", {}).items():
            register.alias(alias, target)

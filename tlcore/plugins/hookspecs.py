"""The plugin hook specifications (pluggy project name and entry-point group: ``tlcore``).

There are six hooks, kept few on purpose. The four registration hooks receive a
:class:`~tlcore.plugins.registrar.Registrar`, which stamps every item with the plugin, distribution
and version that registered it; they return nothing (the llm/tox register-callback pattern).
``register_commands`` receives the CLI's sub-parsers, and ``resolve_hf_config`` answers a question.

The built-in architectures, traits, weight ops, aliases and commands come in through these same
hooks (``tlcore.builtin.plugin``). The manager runs a plugin's registration hooks in this order,
whatever order the plugin defines them in: ``register_traits``, ``register_weight_ops``,
``register_specs``, ``register_aliases``. Specs are validated once every plugin has registered, so
a spec may use a trait kind or weight op from any plugin.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tlcore.plugins.registrar import Registrar

PROJECT_NAME = "tlcore"
"""The pluggy project name and the entry-point group plugins declare."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_traits(register: Registrar) -> None:
    """Register trait kinds: ``register.trait(slot, TraitModel, component_factory)``.

    ``TraitModel`` subclasses :class:`tlcore.spec.Trait` with a ``kind: Literal["name"] = "name"``
    field; specs then use ``{kind: name, ...}`` in that slot. The factory's signature is the
    slot's (``mlp``: ``factory(trait, cfg, layer) -> nn.Module``; ``norm``:
    ``factory(trait, d, dtype)``; see ``tlcore.builtin.plugin.TRAITS`` for every slot).

    .. versionadded:: 0.1

    Args:
        register: The registrar of the plugin being loaded.
    """


@hookspec
def register_weight_ops(register: Registrar) -> None:
    """Register weight transforms: ``register.weight_op(name, fn)``.

    ``fn(tensors: list[Tensor], cfg, **params) -> list[Tensor]`` runs on the checkpoint tensors of
    one weight rule, in the checkpoint's dtype, before the cast to the model's dtype. Specs name it
    in a rule's ``ops:`` list (``ops: [name]`` or ``ops: [{name: {param: value}}]``).

    .. versionadded:: 0.1

    Args:
        register: The registrar of the plugin being loaded.
    """


@hookspec
def register_specs(register: Registrar) -> None:
    """Register architecture specs: ``register.spec(...)`` or ``register.package_specs(__name__)``.

    ``register.spec`` takes a YAML file, a folder of YAML files (a path or an
    ``importlib.resources`` Traversable), a mapping or an :class:`~tlcore.spec.ArchitectureSpec`.
    ``register.package_specs(__name__)`` registers the ``specs/`` folder inside the plugin's own
    package (the convention example plugins follow).

    .. versionadded:: 0.1

    Args:
        register: The registrar of the plugin being loaded.
    """


@hookspec
def register_aliases(register: Registrar) -> None:
    """Register model aliases: ``register.alias("gpt2-small", "gpt2")``.

    The target is whatever ``from_pretrained`` accepts: a hub id or a local checkpoint folder.

    .. versionadded:: 0.1

    Args:
        register: The registrar of the plugin being loaded.
    """


@hookspec(firstresult=True)
def resolve_hf_config(hf_config: dict[str, Any]) -> str | None:
    """Pick the architecture for an HF config before tlcore's own matching (first answer wins).

    Most plugins never need this hook: a spec's ``hf.model_types``, ``hf.architectures``,
    ``hf.match`` and ``hf.priority`` already select it. Use it when the choice needs logic.

    .. versionadded:: 0.1

    Args:
        hf_config: The HF config as a dict (a copy: changing it changes nothing).

    Returns:
        A registered architecture name, or None to let other plugins and tlcore decide.
    """


@hookspec(firstresult=True)
def locate_checkpoint(name: str) -> str | None:
    """Find a model reference on this machine before tlcore asks the HuggingFace hub.

    ``from_pretrained`` asks this hook for the name the user typed, then for each alias it
    resolves through; the first path answered is loaded like any local folder or ``.gguf`` file.
    A plugin that ships or locates offline weights (a PyPI package with a model inside, a
    cluster's shared model store) answers for the names it knows.

    .. versionadded:: 0.2

    Args:
        name: The model reference (an alias, a hub id, ...).

    Returns:
        A local checkpoint folder or ``.gguf`` path, or None to let others answer.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``tlcore`` CLI.

    ``subparsers`` is the ``argparse`` object returned by ``add_subparsers``: add a parser with
    ``subparsers.add_parser(name, help=...)`` and set its handler with
    ``parser.set_defaults(func=handler)``, where ``handler(args) -> int`` returns the exit status.

    .. versionadded:: 0.1

    Args:
        subparsers: The CLI's sub-parsers.
    """


HOOK_NAMES: tuple[str, ...] = (
    "register_traits",
    "register_weight_ops",
    "register_specs",
    "register_aliases",
    "resolve_hf_config",
    "locate_checkpoint",
    "register_commands",
)
"""Every hook, in the order the documentation lists them."""

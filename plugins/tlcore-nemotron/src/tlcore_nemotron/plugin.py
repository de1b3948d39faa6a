"""The hook implementations tlcore finds through the ``tlcore`` entry point."""

from __future__ import annotations

from tlcore import hookimpl
from tlcore.plugins import Registrar
from tlcore_nemotron.ops import layernorm1p
from tlcore_nemotron.squared_relu import SquaredReLUMLPTrait, make_squared_relu_mlp


@hookimpl
def register_traits(register: Registrar) -> None:
    """Register ``mlp/squared_relu``.

    Args:
        register: The registrar tlcore passes in.
    """
    register.trait("mlp", SquaredReLUMLPTrait, make_squared_relu_mlp)


@hookimpl
def register_weight_ops(register: Registrar) -> None:
    """Register the ``layernorm1p`` weight op.

    Args:
        register: The registrar tlcore passes in.
    """
    register.weight_op("layernorm1p", layernorm1p)


@hookimpl
def register_specs(register: Registrar) -> None:
    """Register every spec in this package's ``specs/`` folder.

    Args:
        register: The registrar tlcore passes in.
    """
    register.package_specs(__name__)

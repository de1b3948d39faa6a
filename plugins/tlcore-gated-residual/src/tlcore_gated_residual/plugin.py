"""The hook implementations tlcore finds through the ``tlcore`` entry point.

Importing this module stays light: the HF reference (and transformers) load only when the parity
tool builds the reference model.
"""

from __future__ import annotations

from tlcore import hookimpl
from tlcore.plugins import Registrar
from tlcore_gated_residual.layout import GatedResidualTrait, make_gated_residual_block
from tlcore_gated_residual.scalenorm import ScaleNormTrait, make_scalenorm


@hookimpl
def register_traits(register: Registrar) -> None:
    """Register ``block/gated_residual`` and ``norm/scalenorm``.

    Args:
        register: The registrar tlcore passes in.
    """
    register.trait("block", GatedResidualTrait, make_gated_residual_block)
    register.trait("norm", ScaleNormTrait, make_scalenorm)


@hookimpl
def register_specs(register: Registrar) -> None:
    """Register the ``gated_residual`` spec (this package's ``specs/`` folder).

    Args:
        register: The registrar tlcore passes in.
    """
    register.package_specs(__name__)

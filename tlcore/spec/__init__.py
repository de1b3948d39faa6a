"""Architecture specs: schema, YAML loading, expressions and the trait base class."""

from tlcore.spec.schema import ArchitectureSpec, ConfigGuard, HFMatch, WeightRule, WeightSource
from tlcore.spec.traits import SLOTS, Trait

__all__ = [
    "SLOTS",
    "ArchitectureSpec",
    "ConfigGuard",
    "HFMatch",
    "Trait",
    "WeightRule",
    "WeightSource",
]

"""Activation harvesting for SAE training: ``tlcore harvest`` and :func:`harvest`.

A model runs over a text dataset and the activations of the hooks asked for are stored, one row
per context window, in the cached-activations format SAELens trains from (a ``datasets`` Arrow
dataset with a column per hook plus ``token_ids``), with a ``manifest.json``. In-process by
default; on a Ray cluster with ``ray=True`` (Ray Data, one model per worker). Resumable and
deterministic for a seed. See ``docs/harvest.md``.
"""

from tlcore.harvest.runner import HarvestResult, harvest
from tlcore.harvest.store import HarvestStateError

__all__ = ["HarvestResult", "HarvestStateError", "harvest"]

"""TransformerLens 2.18's model name tables (``loading_from_pretrained``), as facts.

The tables live in ``transformer_lens_models.json`` beside this module, written by
``tools/transformer_lens_fixtures.py`` from TransformerLens; do not edit it. tlcore loads any
checkpoint whose architecture has a spec: these lists name what TransformerLens supported, and its
aliases resolve to hub ids.

Example:
    >>> "gpt2" in OFFICIAL_MODEL_NAMES, MODEL_ALIASES["gpt2"][0]
    (True, 'gpt2-small')
"""

from __future__ import annotations

import json
from pathlib import Path

_TABLES = json.loads((Path(__file__).with_suffix(".json")).read_text(encoding="utf-8"))

OFFICIAL_MODEL_NAMES: list[str] = _TABLES["OFFICIAL_MODEL_NAMES"]
"""The hub ids (and a few local names) TransformerLens 2.18 loads."""

MODEL_ALIASES: dict[str, list[str]] = _TABLES["MODEL_ALIASES"]
"""Official name → its short aliases (the first is the default alias)."""

NON_HF_HOSTED_MODEL_NAMES: list[str] = _TABLES["NON_HF_HOSTED_MODEL_NAMES"]
"""Official names whose weights are not on the hub."""

NEED_REMOTE_CODE_MODELS: tuple[str, ...] = tuple(_TABLES["NEED_REMOTE_CODE_MODELS"])
"""Name prefixes TransformerLens loads with ``trust_remote_code=True``."""

STANFORD_CRFM_CHECKPOINTS: list[int] = _TABLES["STANFORD_CRFM_CHECKPOINTS"]
"""Training steps with a checkpoint, for ``stanford-crfm/*`` models."""

PYTHIA_CHECKPOINTS: list[int] = _TABLES["PYTHIA_CHECKPOINTS"]
"""Training steps with a checkpoint, for Pythia models."""

PYTHIA_V0_CHECKPOINTS: list[int] = _TABLES["PYTHIA_V0_CHECKPOINTS"]
"""Training steps with a checkpoint, for Pythia ``-v0`` models."""

"""Legacy ``config.json`` fields, standardised to what transformers 5.25 builds from the same file.

Each rule rewrites a field that an older transformers release wrote and a newer one reads
differently (or refuses), so that every transformers release tlcore allows builds the config
object the writing release meant.
"""

from __future__ import annotations

from typing import Any


def standardize_legacy_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Move legacy ``config.json`` fields to where every transformers release we allow reads them.

    - Phi-3-128k and Phi-3.5 checkpoints keep ``original_max_position_embeddings`` at the top
      level next to a ``longrope`` ``rope_scaling``; transformers 5.25 copies it in, releases
      before it refuse the config (``KeyError``). Copying it in here gives every allowed release
      the same config object (what transformers 5.25 builds from the same file).
    - Llama 4 configs written by transformers 4.51 may carry ``attn_temperature_tuning: 4``: 4.51's
      ``Llama4TextConfig`` defaulted it to the int 4 and its attention read it only as a flag
      (``if self.attn_temperature_tuning and not self.use_rope``). transformers 5.25 declares it
      ``bool`` and its strict dataclass refuses an int, so a number becomes its truth value, the
      meaning the writing release gave it. Applied at the top level and in a wrapper's
      ``text_config``.

    Args:
        data: A ``config.json`` dict (not modified).

    Returns:
        The dict to build the config object from.

    Example:
        >>> legacy = {"original_max_position_embeddings": 4096,
        ...           "rope_scaling": {"type": "longrope", "short_factor": [1.0]}}
        >>> standardize_legacy_fields(legacy)["rope_scaling"]["original_max_position_embeddings"]
        4096
        >>> wrapper = {"model_type": "llama4", "text_config": {"attn_temperature_tuning": 4}}
        >>> standardize_legacy_fields(wrapper)["text_config"]
        {'attn_temperature_tuning': True}
    """
    scaling = data.get("rope_scaling")
    original = data.get("original_max_position_embeddings")
    if (
        isinstance(scaling, dict)
        and scaling.get("rope_type", scaling.get("type")) in ("longrope", "su")
        and original is not None
        and "original_max_position_embeddings" not in scaling
    ):
        data = {**data, "rope_scaling": {**scaling, "original_max_position_embeddings": original}}
    data = _flag_from_number(data, "attn_temperature_tuning")
    text = data.get("text_config")
    if isinstance(text, dict):
        new_text = _flag_from_number(text, "attn_temperature_tuning")
        if new_text is not text:
            data = {**data, "text_config": new_text}
    return data


def _flag_from_number(data: dict[str, Any], field: str) -> dict[str, Any]:
    """``data`` with ``field`` as a bool when it is a number (not a bool), else ``data`` itself."""
    value = data.get(field)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {**data, field: bool(value)}
    return data

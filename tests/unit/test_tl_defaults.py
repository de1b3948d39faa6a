"""Per-family defaults that TransformerLens users rely on, checked against TransformerLens 2.x.

TransformerLens's ``loading_from_pretrained.py`` sets ``default_prepend_bos: False`` for GPT-NeoX
(Pythia), BLOOM, Qwen 1/2/3 and Phi-1/2, and leaves every other family at the global default
``True`` (../shared/reference/transformerlens.md §1, "Tokens").
"""

from __future__ import annotations

import pytest

from tlcore.config_resolution import resolve_config
from tlcore.registry import get_registry
from tlcore.testing.tiny import tiny_hf_config

NO_BOS_BY_DEFAULT = {
    "gpt_neox",
    "gpt_neox_sequential",
    "bloom",
    "qwen2",
    "qwen2_moe",
    "qwen2_vl_text",
    "qwen3",
    "qwen3_moe",
    "phi",
    # Families TransformerLens 2.x lacks, by its rules above: Qwen (qwen3_next, qwen3_5,
    # qwen3_5_moe); Pythia's tokenizer (the state-spaces Mamba checkpoints).
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_moe",
    "mamba",
}


BUILTIN = sorted(
    name
    for name in get_registry().spec_names()
    if get_registry().specs[name].source.distribution == "tlcore"
)


@pytest.mark.parametrize("name", BUILTIN)
def test_default_prepend_bos_as_transformer_lens(name: str):
    spec = get_registry().get_spec(name)
    cfg = resolve_config(spec, tiny_hf_config(spec))
    assert cfg.default_prepend_bos is (name not in NO_BOS_BY_DEFAULT)

"""Hand-written configs build TransformerLens's own models: same parameters, same init, same logits.

The fixture (``tests/data/transformer_lens_2/models.*``) holds, for each config, every parameter of
TransformerLens 2.18's freshly initialised ``HookedTransformer(HookedTransformerConfig(**kwargs))``
and its logits on a fixed batch (``tools/transformer_lens_fixtures.py`` wrote it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tlcore import HookedTransformer, HookedTransformerConfig

DATA = Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2"
META = json.loads((DATA / "models.json").read_text())["models"]
TENSORS = load_file(str(DATA / "models.safetensors"))


@pytest.mark.parametrize("name", sorted(META))
def test_same_parameters_init_and_logits_as_transformer_lens(name: str) -> None:
    kwargs = META[name]["kwargs"]
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    ours = dict(model.named_parameters())
    theirs = {p: TENSORS[f"{name}/{p}"] for p in META[name]["parameters"]}
    if kwargs.get("positional_embedding_type") == "alibi":
        del theirs["pos_embed.W_pos"]  # TransformerLens 2.x creates it for ALiBi and never uses it
    assert set(ours) == set(theirs)
    for param_name, expected in theirs.items():
        # Same seed, same draws in the same order: TransformerLens's exact weights.
        assert torch.equal(ours[param_name].detach(), expected), param_name
    with torch.no_grad():
        logits = model(TENSORS["tokens"])
    torch.testing.assert_close(logits, TENSORS[f"{name}/logits"], atol=1e-5, rtol=1e-5)

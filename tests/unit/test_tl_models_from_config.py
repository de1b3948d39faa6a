"""Hand-written configs build TransformerLens's own models: same parameters, same init, same logits.

The fixture (``tests/data/transformer_lens_2/models.*``) holds, for each config, every parameter of
TransformerLens 2.18's freshly initialised ``HookedTransformer(HookedTransformerConfig(**kwargs))``
and its logits on a fixed batch (``tools/transformer_lens_fixtures.py`` wrote it).
"""

from __future__ import annotations

import json
import re
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


# Hook points TransformerLens creates that never fire (absent from its own run_with_cache):
# attention-only blocks keep hook_mlp_in/hook_mlp_out, shortformer attention hook_attn_input.
TL_DEAD_HOOKS = re.compile(r"blocks\.\d+\.(hook_mlp_in|hook_mlp_out|attn\.hook_attn_input)")
# Hook points tlcore adds: hook_tokens (TransformerLens 3's), hook_pos_embed on every model.
TLCORE_EXTRA_HOOKS = {"hook_tokens", "hook_pos_embed"}
# tlcore's qk-norm hooks keep the head axis ([batch, pos, head, d_head]); TransformerLens 2.x
# flattens batch, position and head before its per-head norm.
QK_NORM_HOOK = re.compile(r"blocks\.\d+\.attn\.[qk]_norm\.hook_\w+")


@pytest.mark.parametrize("name", sorted(META))
def test_same_activation_names_and_shapes_as_transformer_lens(name: str) -> None:
    expected = META[name]["cache"]
    model = HookedTransformer(HookedTransformerConfig(**META[name]["kwargs"]))
    with torch.no_grad():
        _, cache = model.run_with_cache(TENSORS["tokens"])
    assert set(cache.keys()) == set(expected)
    for hook, shape in expected.items():
        if QK_NORM_HOOK.fullmatch(hook):
            assert cache[hook].numel() // cache[hook].shape[-1] == shape[0], hook
        else:
            assert list(cache[hook].shape) == shape, hook
    theirs, ours = set(META[name]["hook_points"]), set(model.hook_dict)
    assert all(TL_DEAD_HOOKS.fullmatch(h) and h not in expected for h in theirs - ours)
    assert ours - theirs <= TLCORE_EXTRA_HOOKS


def test_builder_variants_are_in_the_fixture() -> None:
    """The variants issue 12 lists are among the recorded TransformerLens models."""
    kwargs = [m["kwargs"] for m in META.values()]
    assert any(k.get("attn_only") for k in kwargs)
    for act in ("solu_ln", "xielu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu", "relu"):
        assert any(k.get("act_fn") == act for k in kwargs), act
    for norm in (None, "LN", "LNPre", "RMS", "RMSPre"):
        assert any(k.get("normalization_type", "LN") == norm for k in kwargs), norm
    for pos in ("standard", "rotary", "shortformer", "alibi"):
        assert any(k.get("positional_embedding_type", "standard") == pos for k in kwargs), pos
    assert any(k.get("attention_dir") == "bidirectional" for k in kwargs)


def test_attn_only_and_solu_ln_modules_as_transformer_lens() -> None:
    attn_only = HookedTransformer(HookedTransformerConfig(**META["attn_only_built"]["kwargs"]))
    block = attn_only.blocks[0]
    assert not hasattr(block, "mlp") and not hasattr(block, "ln2")
    assert not hasattr(block, "hook_resid_mid")
    solu = HookedTransformer(HookedTransformerConfig(**META["solu_ln_built"]["kwargs"]))
    mlp = solu.blocks[1].mlp
    assert type(mlp.ln).__name__ == "LayerNorm" and mlp.ln.w.shape == (16,)  # over d_mlp
    x = torch.randn(2, 3, 16)
    # hook_post = LayerNorm(SoLU(pre)) with SoLU = x * softmax(x): computed here from definitions.
    mid = x * torch.softmax(x, -1)
    normed = (mid - mid.mean(-1, keepdim=True)) / (mid.var(-1, unbiased=False, keepdim=True)
                                                    + 1e-5).sqrt()  # fmt: skip
    with torch.no_grad():
        mlp.ln.w.fill_(2.0)
        got = mlp.hook_post(mlp.ln(mlp.hook_mid(mlp.act_fn(x))))
    torch.testing.assert_close(got, 2 * normed, atol=1e-5, rtol=1e-5)

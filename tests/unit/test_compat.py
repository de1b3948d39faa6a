"""tlcore.compat.as_transformer_lens(): TransformerLens 2.x import paths resolve to tlcore."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import tlcore
import tlcore.compat as compat

API = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2" / "api.json").read_text()
)
# TransformerLens 2.18 top-level names tlcore does not provide (encoder and encoder-decoder
# classes, the LIT integration, internal factories and per-model converters).
NOT_PROVIDED = {
    "BertNextSentencePrediction",
    "HookedAudioEncoder",
    "HookedEncoder",
    "HookedEncoderDecoder",
    "lit",
    "factories",
    "pretrained",
}
# Every ``from transformer_lens... import ...`` in SAELens 6.54.12's source (sae_lens/*.py).
SAE_LENS_IMPORTS = [
    ("transformer_lens", "HookedTransformer"),
    ("transformer_lens.hook_points", "HookPoint"),
    ("transformer_lens.HookedTransformer", "HookedRootModule"),
    ("transformer_lens.HookedTransformer", "HookedTransformer"),
    ("transformer_lens.HookedTransformer", "Loss"),
    ("transformer_lens.HookedTransformer", "Output"),
    ("transformer_lens.ActivationCache", "ActivationCache"),
    ("transformer_lens.components.mlps.can_be_used_as_mlp", "CanBeUsedAsMLP"),
    ("transformer_lens.utils", "USE_DEFAULT_VALUE"),
    ("transformer_lens.utils", "get_tokens_with_bos_removed"),
    ("transformer_lens.utils", "lm_cross_entropy_loss"),
]


@pytest.fixture
def switched_on() -> Iterator[object]:
    yield compat.as_transformer_lens()
    compat.restore()


def test_top_level_names(switched_on: object) -> None:
    import transformer_lens

    names = set(API["transformer_lens"]["names"])
    for name in sorted(names - NOT_PROVIDED):
        assert getattr(transformer_lens, name) is not None, name
    assert transformer_lens.HookedTransformer is tlcore.HookedTransformer
    assert transformer_lens.EasyTransformer is tlcore.HookedTransformer
    assert transformer_lens.HookedTransformerKeyValueCacheEntry is (
        tlcore.HookedTransformerKeyValueCacheEntry
    )
    assert transformer_lens.loading is transformer_lens.loading_from_pretrained
    for name in NOT_PROVIDED:
        with pytest.raises(AttributeError, match="not part of it"):
            getattr(transformer_lens, name)


@pytest.mark.parametrize(("module", "name"), SAE_LENS_IMPORTS)
def test_what_sae_lens_imports(switched_on: object, module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


def test_module_paths_give_tlcore_objects(switched_on: object) -> None:
    from transformer_lens import evals, patching, train, utils
    from transformer_lens.hook_points import HookedRootModule, HookPoint
    from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache

    assert HookPoint is tlcore.HookPoint and HookedRootModule is tlcore.HookedRootModule
    assert utils.get_act_name is tlcore.utils.get_act_name
    assert evals.ioi_eval is tlcore.evals.ioi_eval and train.train is tlcore.train.train
    assert patching.get_act_patch_resid_pre is tlcore.patching.get_act_patch_resid_pre
    assert HookedTransformerKeyValueCache is tlcore.HookedTransformerKeyValueCache
    for path in compat.MODULES:
        assert importlib.import_module(path).__name__ == path


def test_transformer_lens_code_runs_unchanged(switched_on: object) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.components.mlps.can_be_used_as_mlp import CanBeUsedAsMLP
    from transformer_lens.hook_points import HookPoint

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_head=4, n_ctx=8, d_vocab=11,
                                  act_fn="gelu", seed=0, device="cpu")  # fmt: skip
    model = HookedTransformer(cfg)
    assert isinstance(model.hook_dict["blocks.0.hook_resid_post"], HookPoint)
    assert isinstance(model.blocks[0].mlp, CanBeUsedAsMLP)
    seen = []
    model.run_with_hooks(
        torch.tensor([[1, 2, 3]]),
        fwd_hooks=[("blocks.1.attn.hook_pattern", lambda x, hook: seen.append(hook.name))],
    )
    assert seen == ["blocks.1.attn.hook_pattern"]


def test_unmapped_paths_fail_clearly(switched_on: object) -> None:
    with pytest.raises(ModuleNotFoundError, match="model_bridge"):
        importlib.import_module("transformer_lens.model_bridge")


@pytest.fixture
def real_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in for an installed TransformerLens on sys.path."""
    pkg = tmp_path / "transformer_lens"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("REAL = True\n")
    (pkg / "model_bridge.py").write_text("REAL = True\n")
    (pkg / "utils.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield pkg
    compat.restore()
    for name in [n for n in sys.modules if n.split(".")[0] == "transformer_lens"]:
        del sys.modules[name]


def test_tlcore_takes_precedence_over_an_installed_transformer_lens(real_package: Path) -> None:
    compat.as_transformer_lens()
    import transformer_lens
    import transformer_lens.utils

    assert not hasattr(transformer_lens, "REAL") and not hasattr(transformer_lens.utils, "REAL")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("transformer_lens.model_bridge")  # never the real one's


def test_switching_after_the_real_package_was_imported(real_package: Path) -> None:
    import transformer_lens

    assert transformer_lens.REAL
    with pytest.raises(RuntimeError, match="already imported"):
        compat.as_transformer_lens()
    compat.as_transformer_lens(replace_loaded=True)
    import transformer_lens as again

    assert again.HookedTransformer is tlcore.HookedTransformer


def test_restore_turns_it_off() -> None:
    compat.as_transformer_lens()
    assert compat.is_active() and compat.as_transformer_lens() is sys.modules["transformer_lens"]
    compat.restore()
    assert not compat.is_active()
    assert not [n for n in sys.modules if n.split(".")[0] == "transformer_lens"]

"""ActivationCache storage/access methods and Slice, on hand-made caches and a tiny hooked model."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from tlcore.cache import ActivationCache
from tlcore.errors import HookNameError
from tlcore.hooks import HookedRootModule, HookPoint
from tlcore.utils.slicing import Slice

N_LAYERS, BATCH, POS, D_MODEL, N_HEADS = 3, 2, 4, 5, 2


def make_cache_dict(batch: int = BATCH) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    acts = {"hook_embed": torch.randn(batch, POS, D_MODEL)}
    for layer in range(N_LAYERS):
        acts[f"blocks.{layer}.hook_resid_pre"] = torch.randn(batch, POS, D_MODEL)
        acts[f"blocks.{layer}.ln1.hook_scale"] = torch.rand(batch, POS, 1)
        acts[f"blocks.{layer}.attn.hook_pattern"] = torch.rand(batch, N_HEADS, POS, POS)
        acts[f"blocks.{layer}.mlp.hook_post"] = torch.randn(batch, POS, 7)
    acts["ln_final.hook_scale"] = torch.rand(batch, POS, 1)
    return acts


@pytest.fixture
def model() -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(n_layers=N_LAYERS))


@pytest.fixture
def cache(model) -> ActivationCache:
    return ActivationCache(make_cache_dict(), model)


# ----- indexing -----


@pytest.mark.parametrize(
    "key, name",
    [
        ("blocks.1.attn.hook_pattern", "blocks.1.attn.hook_pattern"),
        ("pattern1", "blocks.1.attn.hook_pattern"),
        ("attn2", "blocks.2.attn.hook_pattern"),
        (("pattern", 0), "blocks.0.attn.hook_pattern"),
        (("resid_pre", -1), "blocks.2.hook_resid_pre"),
        (("resid_pre", -3), "blocks.0.hook_resid_pre"),
        (("scale", 1, "ln1"), "blocks.1.ln1.hook_scale"),
        (("scale", -2, "ln1"), "blocks.1.ln1.hook_scale"),
        ("scale2ln1", "blocks.2.ln1.hook_scale"),
        ("scale", "ln_final.hook_scale"),
        (("post", 2), "blocks.2.mlp.hook_post"),
        ("embed", "hook_embed"),
    ],
)
def test_getitem_resolves_names(cache, key, name):
    assert cache[key] is cache.cache_dict[name]
    assert key in cache


def test_missing_key_raises_key_error_with_close_matches(cache):
    with pytest.raises(KeyError) as info:
        cache["blocks.1.attn.hook_patern"]
    assert isinstance(info.value, HookNameError)
    message = str(info.value)
    assert "blocks.1.attn.hook_pattern" in message and "Did you mean" in message
    assert message.startswith("'blocks.1.attn.hook_patern' is not in this ActivationCache")


def test_missing_shorthand_names_what_it_looked_for(cache):
    with pytest.raises(KeyError, match=r"blocks\.1\.attn\.hook_q.*from \('q', 1\)"):
        cache["q", 1]
    assert ("q", 1) not in cache
    assert "hook_nonsense" not in cache
    assert 3 not in cache


def test_layer_past_the_end_is_missing(cache):
    with pytest.raises(KeyError):
        cache["resid_pre", N_LAYERS]


def test_negative_layer_needs_model_cfg():
    cache = ActivationCache(make_cache_dict(), None)
    assert cache["resid_pre", 2] is cache.cache_dict["blocks.2.hook_resid_pre"]
    with pytest.raises(ValueError, match="n_layers"):
        cache["resid_pre", -1]


def test_non_string_key_is_type_error(cache):
    with pytest.raises(TypeError):
        cache[0]


# ----- mapping interface -----


def test_mapping_interface(cache):
    names = list(make_cache_dict())
    assert list(cache.keys()) == names
    assert list(cache) == names
    assert len(cache) == len(names)
    assert list(cache.values()) == list(cache.cache_dict.values())
    assert [k for k, _ in cache.items()] == names
    assert all(v is cache.cache_dict[k] for k, v in cache.items())
    assert repr(cache) == f"ActivationCache with keys {names}"


def test_has_embed_flags_inferred_or_given(model):
    acts = make_cache_dict()
    cache = ActivationCache(acts, model)
    assert cache.has_embed and not cache.has_pos_embed
    acts["hook_pos_embed"] = torch.zeros(BATCH, POS, D_MODEL)
    assert ActivationCache(acts, model).has_pos_embed
    forced = ActivationCache(acts, model, has_embed=False, has_pos_embed=False)
    assert not forced.has_embed and not forced.has_pos_embed


# ----- batch dimension -----


def test_remove_batch_dim(model):
    acts = make_cache_dict(batch=1)
    expected = {k: v[0] for k, v in acts.items()}
    cache = ActivationCache(acts, model)
    assert cache.remove_batch_dim() is cache
    assert not cache.has_batch_dim
    for name, value in cache.items():
        torch.testing.assert_close(value, expected[name])
    assert cache["pattern", 0].shape == (N_HEADS, POS, POS)


def test_remove_batch_dim_twice_warns_and_changes_nothing(model, caplog):
    cache = ActivationCache(make_cache_dict(batch=1), model).remove_batch_dim()
    shapes = {k: v.shape for k, v in cache.items()}
    with caplog.at_level(logging.WARNING, logger="tlcore.cache"):
        cache.remove_batch_dim()
    assert "already" in caplog.text
    assert {k: v.shape for k, v in cache.items()} == shapes


def test_remove_batch_dim_refuses_batch_above_one(cache):
    with pytest.raises(ValueError, match="batch size 2"):
        cache.remove_batch_dim()
    assert cache.has_batch_dim
    assert cache["hook_embed"].shape == (BATCH, POS, D_MODEL)


def test_remove_batch_dim_leaves_flattened_entries(model):
    acts = make_cache_dict(batch=1)
    acts["blocks.0.mlp.hook_expert_indices"] = torch.zeros(POS, 2, dtype=torch.long)
    cache = ActivationCache(acts, model).remove_batch_dim()
    assert cache["blocks.0.mlp.hook_expert_indices"].shape == (POS, 2)


@pytest.mark.parametrize(
    "batch_slice, index, keeps_batch",
    [(1, 1, False), ([1], [1], True), ((0, 1), slice(0, 1), True), (None, slice(None), True)],
)
def test_apply_slice_to_batch_dim(cache, batch_slice, index, keeps_batch):
    sliced = cache.apply_slice_to_batch_dim(batch_slice)
    assert sliced is not cache and sliced.model is cache.model
    assert sliced.has_batch_dim == keeps_batch
    for name, value in cache.items():
        torch.testing.assert_close(sliced[name], value[index])
    assert cache["hook_embed"].shape[0] == BATCH  # the original is untouched


def test_apply_slice_to_batch_dim_accepts_slice_object(cache):
    sliced = cache.apply_slice_to_batch_dim(Slice([1, 0]))
    torch.testing.assert_close(sliced["hook_embed"], cache["hook_embed"].flip(0))


def test_apply_slice_without_batch_dim(model):
    cache = ActivationCache(make_cache_dict(batch=1), model).remove_batch_dim()
    with pytest.raises(ValueError, match="without a batch dim"):
        cache.apply_slice_to_batch_dim(0)
    same = cache.apply_slice_to_batch_dim(None)
    assert not same.has_batch_dim
    torch.testing.assert_close(same["hook_embed"], cache["hook_embed"])


def test_apply_slice_keeps_entries_with_other_leading_dims(cache):
    cache.cache_dict["blocks.0.mlp.hook_expert_weights"] = torch.rand(BATCH * POS, 4)
    sliced = cache.apply_slice_to_batch_dim(0)
    assert sliced["blocks.0.mlp.hook_expert_weights"].shape == (BATCH * POS, 4)
    assert sliced["hook_embed"].shape == (POS, D_MODEL)


# ----- device and autodiff -----


def test_to_moves_tensors(cache):
    assert cache.to("meta") is cache
    assert {v.device.type for v in cache.values()} == {"meta"}


def test_to_can_move_the_model():
    net = nn.Linear(2, 2)
    cache = ActivationCache({"hook_x": torch.zeros(1, 2)}, net)
    cache.to("meta")
    assert net.weight.device.type == "cpu"
    cache.to("meta", move_model=True)
    assert net.weight.device.type == "meta"


def test_toggle_autodiff_sets_global_grad_mode(cache):
    assert torch.is_grad_enabled()
    try:
        cache.toggle_autodiff(False)
        assert not torch.is_grad_enabled()
        cache.toggle_autodiff(True)
        assert torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)


# ----- from a real run -----


class TinyModel(HookedRootModule):
    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(n_layers=2)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([nn.Module() for _ in range(2)])
        for block in self.blocks:
            block.lin = nn.Linear(D_MODEL, D_MODEL)
            block.hook_resid_pre = HookPoint()
            block.ln1 = nn.Module()
            block.ln1.hook_scale = HookPoint()
        self.setup()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_embed(x)
        for block in self.blocks:
            x = block.hook_resid_pre(x)
            block.ln1.hook_scale(x.norm(dim=-1, keepdim=True))
            x = x + block.lin(x)
        return x


def test_cache_from_run_with_cache():
    torch.manual_seed(0)
    tiny = TinyModel()
    x = torch.randn(1, POS, D_MODEL)
    _, cache = tiny.run_with_cache(x)
    assert cache["resid_pre", -1] is cache["blocks.1.hook_resid_pre"]
    assert cache["scale", 0, "ln1"].shape == (1, POS, 1)
    assert cache.has_embed and not cache.has_pos_embed
    _, flat = tiny.run_with_cache(x, remove_batch_dim=True)
    assert not flat.has_batch_dim
    torch.testing.assert_close(flat["resid_pre", 1], cache.remove_batch_dim()["resid_pre", 1])


# ----- Slice -----


@pytest.mark.parametrize(
    "input_slice, mode, index",
    [
        (None, "identity", slice(None)),
        (2, "int", 2),
        (-1, "int", -1),
        ((3,), "slice", slice(3)),
        ((1, 4), "slice", slice(1, 4)),
        ((0, 6, 2), "slice", slice(0, 6, 2)),
        (slice(2, None), "slice", slice(2, None)),
        ([4, 0, 4], "array", [4, 0, 4]),
        (torch.tensor([1, 3]), "array", [1, 3]),
        (np.array([5]), "array", [5]),
    ],
)
def test_slice_modes_and_apply(input_slice, mode, index):
    s = Slice(input_slice)
    assert s.mode == mode
    x = torch.arange(24).reshape(2, 6, 2)
    torch.testing.assert_close(s.apply(x, dim=1), x[:, index])
    torch.testing.assert_close(s.apply(x, dim=-2), x[:, index])
    torch.testing.assert_close(s.apply(x.transpose(0, 1)), x.transpose(0, 1)[index])


def test_slice_bool_mask():
    x = torch.arange(4)
    torch.testing.assert_close(Slice(torch.tensor([True, False, True, False])).apply(x), x[[0, 2]])


def test_slice_empty_list_selects_nothing():
    assert Slice([]).apply(torch.arange(4)).shape == (0,)


@pytest.mark.parametrize(
    "input_slice, expected",
    [
        (3, [3]),
        ((1, 4), [1, 2, 3]),
        ([5, 1], [5, 1]),
        (None, list(range(6))),
        ((-2,), [0, 1, 2, 3]),
    ],
)
def test_slice_indices(input_slice, expected):
    indices = Slice(input_slice).indices(6)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


def test_slice_indices_needs_max_ctx_unless_int():
    assert Slice(2).indices().tolist() == [2]
    with pytest.raises(ValueError, match="max_ctx"):
        Slice((1, 3)).indices()


@pytest.mark.parametrize("bad", ["1:3", 1.5, True, {1, 2}])
def test_slice_rejects_other_types(bad):
    with pytest.raises(ValueError, match="Invalid input_slice"):
        Slice(bad)


def test_slice_unwrap():
    s = Slice((1, 3))
    assert Slice.unwrap(s) is s
    wrapped = Slice.unwrap(4)
    assert wrapped.mode == "array"
    assert wrapped.apply(torch.arange(6)).tolist() == [4]  # the dimension is kept
    assert Slice.unwrap(None).mode == "identity"
    assert Slice.unwrap([0, 2]).mode == "array"


def test_slice_repr():
    assert repr(Slice(3)) == "Slice: 3 Mode: int "

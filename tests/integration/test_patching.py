"""tlcore.patching on tiny seeded checkpoints (GPT-2: MHA; Llama: GQA with 4 query / 2 kv heads)."""

from __future__ import annotations

import sys

import pytest
import torch

from tlcore import patching
from tlcore.model import HookedTransformer
from tlcore.utils import get_act_name

POS, DIFF = 6, 3  # clean and corrupted differ only at position DIFF


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request, tiny_checkpoint):
    folder, _ = tiny_checkpoint(request.param)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    clean = torch.randint(0, 512, (1, POS), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[0, DIFF] = (clean[0, DIFF] + 1) % 512
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        answer = int(clean_logits[0, -1].argmax())
        wrong = int(clean_logits[0, -1].argmin())

    def metric(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]

    with torch.no_grad():
        clean_value, corrupted_value = metric(clean_logits).item(), metric(model(corrupted)).item()
    assert abs(clean_value - corrupted_value) > 0.1, "the corruption must change the metric"
    return model, clean, corrupted, clean_cache, metric, clean_value, corrupted_value


def shapes(model):
    cfg = model.cfg
    L, H, K = cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads
    return {
        "get_act_patch_resid_pre": (L, POS),
        "get_act_patch_resid_mid": (L, POS),
        "get_act_patch_attn_out": (L, POS),
        "get_act_patch_mlp_out": (L, POS),
        "get_act_patch_attn_head_out_by_pos": (L, POS, H),
        "get_act_patch_attn_head_q_by_pos": (L, POS, H),
        "get_act_patch_attn_head_k_by_pos": (L, POS, K),
        "get_act_patch_attn_head_v_by_pos": (L, POS, K),
        "get_act_patch_attn_head_pattern_by_pos": (L, H, POS),
        "get_act_patch_attn_head_out_all_pos": (L, H),
        "get_act_patch_attn_head_q_all_pos": (L, H),
        "get_act_patch_attn_head_k_all_pos": (L, K),
        "get_act_patch_attn_head_v_all_pos": (L, K),
        "get_act_patch_attn_head_pattern_all_pos": (L, H),
        "get_act_patch_attn_head_all_pos_every": (5, L, H),
        "get_act_patch_attn_head_by_pos_every": (5, L, POS, H),
        "get_act_patch_block_every": (3, L, POS),
    }


def test_patching_clean_into_clean_gives_the_clean_metric_everywhere(setup):
    model, clean, _, clean_cache, metric, clean_value, _ = setup
    K = model.cfg.n_key_value_heads
    for name, shape in shapes(model).items():
        result = getattr(patching, name)(model, clean, clean_cache, metric)
        assert tuple(result.shape) == shape, name
        if name.startswith("get_act_patch_attn_head") and name.endswith("_every"):
            # Stacks of (z, q, k, v, pattern); grouped k/v rows are zero-padded to n_heads.
            real = result.clone()
            real[2:4, ..., K:] = clean_value
            assert bool((result[2:4, ..., K:] == 0).all())
            result = real
        expected = torch.full(shape, clean_value)
        torch.testing.assert_close(result, expected, atol=1e-4, rtol=0, msg=name)


def test_resid_pre_layer0_recovers_clean_only_at_the_differing_position(setup):
    model, clean, corrupted, clean_cache, metric, clean_value, corrupted_value = setup
    result = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    for pos in range(POS):
        expected = clean_value if pos == DIFF else corrupted_value
        assert result[0, pos].item() == pytest.approx(expected, abs=1e-4), pos
    # Attention is causal: before DIFF the two runs are identical at every layer.
    assert result[-1, :DIFF].sub(corrupted_value).abs().max() < 1e-4


def manual_patch(model, corrupted, clean_cache, metric, act, layer, where):
    name = get_act_name(act, layer)

    def hook(x, hook):
        x = x.clone()
        x[where] = clean_cache[name][where]
        return x

    with torch.no_grad():
        return metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])).item()


def test_each_setter_patches_the_named_slice(setup):
    model, _, corrupted, clean_cache, metric, _, _ = setup
    L, K = model.cfg.n_layers - 1, model.cfg.n_key_value_heads - 1
    all_ = slice(None)
    cases = [
        ("get_act_patch_attn_out", "attn_out", (L, DIFF), (all_, DIFF)),
        ("get_act_patch_mlp_out", "mlp_out", (0, DIFF), (all_, DIFF)),
        ("get_act_patch_resid_mid", "resid_mid", (L, POS - 1), (all_, POS - 1)),
        ("get_act_patch_attn_head_out_by_pos", "z", (L, POS - 1, 1), (all_, POS - 1, 1)),
        ("get_act_patch_attn_head_q_by_pos", "q", (L, POS - 1, 2), (all_, POS - 1, 2)),
        ("get_act_patch_attn_head_k_by_pos", "k", (L, DIFF, K), (all_, DIFF, K)),
        ("get_act_patch_attn_head_v_by_pos", "v", (L, DIFF, K), (all_, DIFF, K)),
        ("get_act_patch_attn_head_k_all_pos", "k", (L, K), (all_, all_, K)),
        ("get_act_patch_attn_head_v_all_pos", "v", (0, 0), (all_, all_, 0)),
        ("get_act_patch_attn_head_out_all_pos", "z", (L, 3), (all_, all_, 3)),
        ("get_act_patch_attn_head_pattern_all_pos", "pattern", (L, 1), (all_, 1)),
        ("get_act_patch_attn_head_pattern_by_pos", "pattern", (0, 1, POS - 1), (all_, 1, POS - 1)),
    ]
    moved = 0
    for fn, act, index, where in cases:
        result = getattr(patching, fn)(model, corrupted, clean_cache, metric)
        expected = manual_patch(model, corrupted, clean_cache, metric, act, index[0], where)
        assert result[index].item() == pytest.approx(expected, abs=1e-4), fn
        moved += abs(expected - result.mean().item()) > 1e-6
    assert moved >= 6  # the indices chosen make a difference, so a wrong slice would show


@pytest.mark.parametrize("setup", ["llama"], indirect=True)  # the grouped-query model
def test_grouped_kv_patches_index_kv_heads(setup):
    model, clean, corrupted, clean_cache, metric, _, _ = setup
    assert model.cfg.n_key_value_heads < model.cfg.n_heads
    result = patching.get_act_patch_attn_head_v_all_pos(model, corrupted, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, 2)
    # kv head 1 is shared by query heads 2 and 3: patching it equals patching their ungrouped v.
    model.set_ungroup_grouped_query_attention(True)
    try:
        with torch.no_grad():
            _, ungrouped_cache = model.run_with_cache(clean)
        name = get_act_name("v", 1)

        def hook(x, hook):
            x = x.clone()
            x[:, :, 2:4] = ungrouped_cache[name][:, :, 2:4]
            return x

        with torch.no_grad():
            expected = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])).item()
        ungrouped = patching.get_act_patch_attn_head_v_all_pos(
            model, corrupted, ungrouped_cache, metric
        )
        assert ungrouped.shape == (model.cfg.n_layers, model.cfg.n_heads)
    finally:
        model.set_ungroup_grouped_query_attention(False)
    assert result[1, 1].item() == pytest.approx(expected, abs=1e-4)
    assert result[1, 1].item() != pytest.approx(result[1, 0].item(), abs=1e-4)


def test_batched_patches_equal_one_at_a_time(setup):
    model, _, corrupted, clean_cache, _, _, _ = setup
    # A batch of two different prompts: every patch must keep its rows and see [2, ...] logits.
    other = torch.randint(0, 512, (1, POS), generator=torch.Generator().manual_seed(9))
    tokens = torch.cat([corrupted, other])
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.cat([corrupted.flip(-1), other.flip(-1)]))
    seen = []

    def metric(logits):
        seen.append(logits.shape[0])
        return logits[0, -1, 1] - logits[1, -1, 2] + logits[:, 2].std()

    fn = patching.get_act_patch_attn_head_q_by_pos
    one = fn(model, tokens, cache, metric, patches_per_forward=1)
    assert set(seen) == {2}
    for n in (None, 5):
        torch.testing.assert_close(
            fn(model, tokens, cache, metric, patches_per_forward=n), one, atol=1e-5, rtol=1e-5
        )
    assert set(seen) == {2}
    assert one.std() > 1e-3  # the patches differ from each other


def test_index_validation(setup):
    model, clean, _, clean_cache, metric, _, _ = setup
    kwargs = {"patch_setter": patching.layer_pos_patch_setter, "activation_name": "resid_pre"}
    with pytest.raises(ValueError, match="exactly one"):
        patching.generic_activation_patch(model, clean, clean_cache, metric, **kwargs)
    with pytest.raises(ValueError, match="unknown index axes"):
        patching.generic_activation_patch(
            model, clean, clean_cache, metric, index_axis_names=("layer", "token"), **kwargs
        )
    with pytest.raises(ValueError, match="2-part index"):
        patching.layer_pos_patch_setter(torch.zeros(1, 2), (0, 1, 2), torch.zeros(1, 2))


def test_index_df_without_pandas_is_a_clear_error(setup, monkeypatch):
    model, clean, _, clean_cache, metric, _, _ = setup
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` meets without it
    with pytest.raises(ImportError, match="pip install pandas"):
        patching.get_act_patch_resid_pre(model, clean, clean_cache, metric, return_index_df=True)
    with pytest.raises(ImportError, match="pip install pandas"):
        patching.make_df_from_ranges([2, 3], ["layer", "pos"])


def test_index_df_with_pandas(setup):
    model, _, corrupted, clean_cache, metric, _, _ = setup
    full, df = patching.get_act_patch_resid_pre(
        model, corrupted, clean_cache, metric, return_index_df=True
    )
    assert list(df.columns) == ["layer", "pos"] and len(df) == full.numel()
    rows = df.iloc[[1, DIFF]]
    flat = patching.generic_activation_patch(
        model,
        corrupted,
        clean_cache,
        metric,
        patching.layer_pos_patch_setter,
        "resid_pre",
        index_df=rows,
    )
    torch.testing.assert_close(flat, full.flatten()[[1, DIFF]])

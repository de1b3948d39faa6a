"""HookPoint / HookedRootModule behaviour, ported from TransformerLens's hook tests.

The model is a tiny hand-made transformer-shaped HookedRootModule, so these tests do not depend on
tlcore's HookedTransformer.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from tlcore.cache import ActivationCache
from tlcore.errors import HookNameError, TlcoreError
from tlcore.hooks import HookedRootModule, HookPoint
from tlcore.utils.slicing import Slice

D_VOCAB, D_MODEL, N_HEADS, D_HEAD, D_MLP, N_LAYERS = 11, 8, 2, 4, 16, 2


class ToyAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W_Q = nn.Linear(D_MODEL, N_HEADS * D_HEAD)
        self.W_V = nn.Linear(D_MODEL, N_HEADS * D_HEAD)
        self.W_O = nn.Linear(N_HEADS * D_HEAD, D_MODEL)
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, _ = x.shape
        q = self.hook_q(self.W_Q(x).view(b, p, N_HEADS, D_HEAD))
        v = self.W_V(x).view(b, p, N_HEADS, D_HEAD)
        scores = self.hook_attn_scores(torch.einsum("bqhd,bkhd->bhqk", q, q) / D_HEAD**0.5)
        pattern = self.hook_pattern(scores.softmax(-1))
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return self.W_O(z.reshape(b, p, N_HEADS * D_HEAD))


class ToyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W_in = nn.Linear(D_MODEL, D_MLP)
        self.W_out = nn.Linear(D_MLP, D_MODEL)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_out(self.hook_post(torch.relu(self.hook_pre(self.W_in(x)))))


class ToyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = ToyAttention()
        self.mlp = ToyMLP()
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(resid)))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(resid)))


class ToyNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        return self.hook_normalized(x / scale)


class ToyModel(HookedRootModule):
    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(n_layers=N_LAYERS)
        self.embed = nn.Embedding(D_VOCAB, D_MODEL)
        self.hook_tokens = HookPoint()  # [batch, pos]
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([ToyBlock() for _ in range(N_LAYERS)])
        self.ln_final = ToyNorm()
        self.unembed = nn.Linear(D_MODEL, D_VOCAB)
        self.forward_calls = 0
        self.setup()

    def forward(self, tokens: torch.Tensor, return_type: str = "logits") -> torch.Tensor:
        self.forward_calls += 1
        tokens = self.hook_tokens(tokens)
        resid = self.hook_embed(self.embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        logits = self.unembed(self.ln_final(resid))
        if return_type == "loss":
            return nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, D_VOCAB), tokens[:, 1:].reshape(-1)
            )
        return logits


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, tensor: torch.Tensor, hook: HookPoint) -> None:
        self.count += 1


@pytest.fixture
def model() -> ToyModel:
    torch.manual_seed(0)
    return ToyModel()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.tensor([[1, 4, 2, 7, 3], [5, 0, 9, 9, 2]])


def n_fwd_hooks(model: ToyModel, name: str = "hook_embed") -> int:
    return len(model.hook_dict[name].fwd_hooks)


def all_hooks_removed(model: ToyModel) -> bool:
    return all(
        not hp.fwd_hooks and not hp.bwd_hooks and not hp._forward_hooks and not hp._backward_hooks
        for hp in model.hook_points()
    )


def zero_hook(tensor: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    return torch.zeros_like(tensor)


# ----- setup and HookPoint -----


def test_setup_indexes_hook_points_by_full_name(model):
    assert "blocks.1.attn.hook_pattern" in model.hook_dict
    assert model.hook_dict["blocks.0.hook_resid_pre"].name == "blocks.0.hook_resid_pre"
    assert isinstance(model.mod_dict["blocks.0.attn"], ToyAttention)
    assert "blocks.0.attn" not in model.hook_dict
    assert "" not in model.mod_dict
    assert list(model.hook_points()) == list(model.hook_dict.values())
    assert len(model.hook_dict) == 2 + N_LAYERS * 11 + 2


def test_hook_point_is_identity_without_hooks():
    hp = HookPoint()
    x = torch.randn(3)
    assert hp(x) is x
    assert not hp.has_hooks


def test_layer_parses_block_index(model):
    assert model.hook_dict["blocks.1.attn.hook_q"].layer() == 1
    with pytest.raises(ValueError):
        model.hook_dict["hook_embed"].layer()
    with pytest.raises(ValueError):
        HookPoint().layer()


def test_has_hooks_tracks_forward_hooks_only():
    hp = HookPoint()
    hp.add_hook(zero_hook, dir="bwd")
    assert not hp.has_hooks
    hp.add_hook(zero_hook)
    assert hp.has_hooks
    hp.remove_hooks("fwd")
    assert not hp.has_hooks
    assert len(hp.bwd_hooks) == 1


def test_has_hooks_sees_caching_hooks(model, tokens):
    seen = []

    def record(tensor, hook):
        seen.append(model.hook_dict["blocks.0.attn.hook_pattern"].has_hooks)

    model.add_hook("hook_embed", record)
    model(tokens)
    model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert seen == [False, True]


def test_invalid_direction_raises():
    hp = HookPoint()
    with pytest.raises(ValueError, match="Invalid direction"):
        hp.add_hook(zero_hook, dir="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Invalid direction"):
        hp.remove_hooks(dir="sideways")  # type: ignore[arg-type]
    assert not hp.fwd_hooks and not hp.bwd_hooks


def test_hook_sees_its_hook_point_and_context(model, tokens):
    calls = []

    def hook(tensor, *, hook):
        hook.ctx["calls"] = hook.ctx.get("calls", 0) + 1
        calls.append((hook.name, hook.layer(), tuple(tensor.shape)))

    model.add_hook("blocks.1.attn.hook_q", hook)
    model(tokens)
    model(tokens)
    hp = model.hook_dict["blocks.1.attn.hook_q"]
    assert calls[0] == ("blocks.1.attn.hook_q", 1, (2, 5, N_HEADS, D_HEAD))
    assert hp.ctx == {"calls": 2}
    model.clear_contexts()
    assert hp.ctx == {}


# ----- forward hooks change the computation -----


def test_replacing_hook_changes_output(model, tokens):
    clean = model(tokens)
    patched = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", zero_hook)])
    # With the final residual zeroed, the RMS norm outputs 0 and the logits are the unembed bias.
    torch.testing.assert_close(patched, model.unembed.bias.expand_as(patched))
    assert not torch.allclose(clean, patched)
    torch.testing.assert_close(model(tokens), clean)


def test_hook_returning_none_leaves_output_unchanged(model, tokens):
    clean = model(tokens)
    out = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: True, lambda t, hook: None)])
    torch.testing.assert_close(out, clean)


def test_hooks_run_in_order_and_prepend_goes_first(model, tokens):
    order = []

    def tag(label):
        return lambda tensor, hook: order.append(label)

    model.add_hook("hook_embed", tag("a"))
    model.add_hook("hook_embed", tag("b"))
    model.add_hook("hook_embed", tag("first"), prepend=True)
    model(tokens)
    assert order == ["first", "a", "b"]
    assert [h.hook.id for h in model.hook_dict["hook_embed"].fwd_hooks] == list(
        model.hook_dict["hook_embed"]._forward_hooks
    )


@pytest.mark.parametrize("zero_attach_pos", [0, 1])
@pytest.mark.parametrize("prepend", [True, False])
def test_prepending_decides_which_replacement_wins(model, tokens, zero_attach_pos, prepend):
    """TransformerLens's test: the last hook to run decides the final residual."""

    def set_to_randn(tensor, hook):
        return torch.randn_like(tensor) * 0.1

    for hook_idx in range(2):
        hook = zero_hook if hook_idx == zero_attach_pos else set_to_randn
        model.add_hook("blocks.1.hook_resid_post", hook, prepend=prepend)
    logits = model(tokens)
    zero_runs_last = (zero_attach_pos == 1) != prepend
    is_bias = torch.allclose(logits, model.unembed.bias.expand_as(logits))
    assert is_bias == zero_runs_last


# ----- temporary hooks, permanent hooks, levels -----


def test_run_with_hooks_removes_its_hooks(model, tokens):
    c = Counter()
    model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", c.inc)])
    assert c.count == 1
    assert all_hooks_removed(model)


def test_run_with_hooks_keeps_hooks_when_asked(model, tokens):
    c = Counter()
    model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", c.inc)], reset_hooks_end=False)
    model(tokens)
    assert c.count == 2
    model.reset_hooks()
    assert all_hooks_removed(model)


def test_perma_hook_survives_reset(model, tokens):
    c = Counter()
    model.add_perma_hook("hook_embed", c.inc)
    model.run_with_hooks(tokens, fwd_hooks=[])
    model.reset_hooks()
    model(tokens)
    assert n_fwd_hooks(model) == 1
    assert c.count == 2
    model.reset_hooks(including_permanent=True)
    model(tokens)
    assert c.count == 2
    assert all_hooks_removed(model)


def test_remove_all_hook_fns_respects_permanence(model, tokens):
    c = Counter()
    model.add_perma_hook("hook_embed", c.inc)
    model.add_hook("hook_embed", c.inc)
    model.remove_all_hook_fns()
    assert n_fwd_hooks(model) == 1
    model.remove_all_hook_fns(including_permanent=True)
    model(tokens)
    assert c.count == 0


def test_reset_hooks_by_direction(model, tokens):
    model.add_hook("hook_embed", zero_hook, dir="fwd")
    model.add_hook("hook_embed", zero_hook, dir="bwd")
    model.reset_hooks(direction="bwd")
    assert n_fwd_hooks(model) == 1
    assert not model.hook_dict["hook_embed"].bwd_hooks
    assert not model.hook_dict["hook_embed"]._backward_hooks


def test_reset_hooks_by_level(model, tokens):
    hp = model.hook_dict["hook_embed"]
    hp.add_hook(zero_hook, level=1)
    hp.add_hook(zero_hook, level=2)
    hp.add_hook(zero_hook, level=2, is_permanent=True)
    model.reset_hooks(level=2)
    assert [(h.context_level, h.is_permanent) for h in hp.fwd_hooks] == [(1, False), (2, True)]
    assert len(hp._forward_hooks) == 2


def test_hooks_context_manager(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]) as hooked:
        assert hooked is model
        assert n_fwd_hooks(model) == 1
        assert model.hook_dict["hook_embed"].fwd_hooks[0].context_level == 1
        model(tokens)
    assert all_hooks_removed(model)
    assert model.context_level == 0
    assert c.count == 1


def test_nested_hooks_contexts(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        model(tokens)
        assert c.count == 1
        with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
            assert n_fwd_hooks(model) == 2
            assert model.context_level == 2
            model(tokens)
            assert c.count == 3
        assert n_fwd_hooks(model) == 1
        model(tokens)
    assert n_fwd_hooks(model) == 0
    assert c.count == 4


def test_context_with_permanent_hook(model, tokens):
    c = Counter()
    model.add_perma_hook("hook_embed", c.inc)
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        assert n_fwd_hooks(model) == 2
        model(tokens)
    assert n_fwd_hooks(model) == 1
    assert c.count == 2


def test_context_keeps_hooks_added_outside_it(model, tokens):
    c = Counter()
    model.add_hook("hook_embed", c.inc)
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        pass
    model(tokens)
    assert c.count == 1


def test_context_without_reset_keeps_hooks(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)], reset_hooks_end=False):
        pass
    model(tokens)
    assert c.count == 1
    assert model.context_level == 0


def test_context_clear_contexts_flag(model, tokens):
    def remember(tensor, hook):
        hook.ctx["seen"] = True

    hp = model.hook_dict["hook_embed"]
    with model.hooks(fwd_hooks=[("hook_embed", remember)]):
        model(tokens)
    assert hp.ctx == {"seen": True}
    with model.hooks(fwd_hooks=[("hook_embed", remember)], clear_contexts=True):
        model(tokens)
    assert hp.ctx == {}


def test_reset_hooks_inside_context(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        model.reset_hooks()
        assert n_fwd_hooks(model) == 0
        model(tokens)
    assert c.count == 0
    assert model.context_level == 0


def fail_hook(tensor, hook):
    raise ValueError("fail")


def test_hooks_removed_when_forward_raises(model, tokens):
    c = Counter()
    with pytest.raises(ValueError, match="fail"):
        model.run_with_hooks(
            tokens, fwd_hooks=[("hook_embed", c.inc), ("blocks.0.hook_resid_mid", fail_hook)]
        )
    assert all_hooks_removed(model)
    assert model.context_level == 0
    model(tokens)
    assert c.count == 1


def test_nested_context_with_failure(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        with pytest.raises(ValueError):
            with model.hooks(fwd_hooks=[("hook_embed", fail_hook)]):
                assert n_fwd_hooks(model) == 2
                model(tokens)
        assert n_fwd_hooks(model) == 1
        assert c.count == 1
    assert n_fwd_hooks(model) == 0


def test_run_with_cache_removes_hooks_when_forward_raises(model, tokens):
    model.add_perma_hook("blocks.1.hook_resid_pre", fail_hook)
    with pytest.raises(ValueError):
        model.run_with_cache(tokens)
    model.reset_hooks(including_permanent=True)
    assert all_hooks_removed(model)


# ----- predicates -----


def test_predicate_selects_every_matching_hook_point(model, tokens):
    names = []
    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            (lambda name: name.endswith("resid_pre"), lambda t, hook: names.append(hook.name))
        ],
    )
    assert names == [f"blocks.{i}.hook_resid_pre" for i in range(N_LAYERS)]


def test_add_hook_with_predicate(model, tokens):
    model.add_hook(lambda name: "attn.hook_z" in name, zero_hook)
    assert [n for n, hp in model.hook_dict.items() if hp.fwd_hooks] == [
        f"blocks.{i}.attn.hook_z" for i in range(N_LAYERS)
    ]


def test_predicate_for_backward_hooks(model, tokens):
    names = []
    with model.hooks(
        bwd_hooks=[(lambda n: n.endswith("hook_mlp_out"), lambda g, hook: names.append(hook.name))]
    ):
        model(tokens).sum().backward()
    assert sorted(names) == [f"blocks.{i}.hook_mlp_out" for i in range(N_LAYERS)]


# ----- backward hooks -----


def grads_by_autograd(model, tokens, names):
    """Gradients of the summed logits w.r.t. hook outputs, via retain_grad."""
    acts = {}

    def keep(tensor, hook):
        out = tensor.clone()
        out.retain_grad()
        acts[hook.name] = out
        return out

    model.zero_grad()
    out = model.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
    out.sum().backward()
    return {n: acts[n].grad for n in names}


def test_backward_hook_receives_gradient_of_hook_output(model, tokens):
    names = ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_mid"]
    expected = grads_by_autograd(model, tokens, names)
    got = {}

    def save(grad, hook):
        got[hook.name] = grad.clone()

    with model.hooks(bwd_hooks=[(n, save) for n in names]):
        out = model(tokens)
        assert got == {}
        out.sum().backward()
    assert set(got) == set(names)
    for name in names:
        torch.testing.assert_close(got[name], expected[name])
    assert all_hooks_removed(model)


@pytest.mark.parametrize("wrap", [lambda g: g * 0, lambda g: (g * 0,)])
def test_backward_hook_can_replace_gradient(model, tokens, wrap):
    """A bare tensor and a one-tensor tuple both replace the gradient (TL issue #1160)."""
    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_post", lambda g, hook: wrap(g))]):
        model(tokens).sum().backward()
    assert torch.count_nonzero(model.embed.weight.grad) == 0
    # Parameters after the hook point still get gradients.
    assert torch.count_nonzero(model.blocks[1].mlp.W_out.weight.grad) > 0


def test_backward_hook_returning_none_keeps_gradient(model, tokens):
    c = Counter()
    expected = grads_by_autograd(model, tokens, ["hook_embed"])["hook_embed"]
    model.zero_grad()
    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_post", c.inc)]):
        model(tokens).sum().backward()
    assert c.count == 1
    # d(sum logits)/d(embed.weight) = scatter-add of the gradient at hook_embed.
    manual = torch.zeros_like(model.embed.weight).index_add_(
        0, tokens.flatten(), expected.reshape(-1, D_MODEL)
    )
    torch.testing.assert_close(model.embed.weight.grad, manual)


def test_backward_hook_after_forward_replacement_with_unrelated_tensor(model, tokens):
    """A forward hook may swap in a tensor that does not depend on the input (patching)."""
    patch = torch.randn(2, 5, D_MODEL, requires_grad=True)
    got = []
    with model.hooks(
        fwd_hooks=[("blocks.1.hook_resid_pre", lambda t, hook: patch)],
        bwd_hooks=[("blocks.1.hook_resid_pre", lambda g, hook: got.append(g))],
    ):
        model(tokens).sum().backward()
    assert len(got) == 1
    torch.testing.assert_close(got[0], patch.grad)
    assert torch.count_nonzero(patch.grad) > 0


class Standalone(HookedRootModule):
    """y feeds the output both through the hook point and around it."""

    def __init__(self):
        super().__init__()
        self.hook_y = HookPoint()
        self.setup()

    def forward(self, x):
        y = x * 2
        z = self.hook_y(y)
        z.mul_(3)  # an in-place op downstream of the hook point
        return (z + y).sum()


def test_backward_hook_sees_only_the_gradient_through_the_point():
    x = torch.ones(4, requires_grad=True)
    got = []
    with Standalone().hooks(bwd_hooks=[("hook_y", lambda g, hook: got.append(g))]) as m:
        m(x).backward()
    # d(sum(3z + y))/dz = 3, while y's total gradient is 4; the in-place mul_ is allowed.
    torch.testing.assert_close(got[0], torch.full((4,), 3.0))
    torch.testing.assert_close(x.grad, torch.full((4,), 8.0))


def test_backward_hook_sees_gradient_of_final_output_after_forward_hooks():
    hp = HookPoint()
    got = []
    hp.add_hook(lambda g, hook: got.append(g), dir="bwd")
    hp.add_hook(lambda t, hook: t * 2)  # added later, still runs before the gradient is taken
    x = torch.ones(3, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0])
    (hp(x) * w).sum().backward()
    torch.testing.assert_close(got[0], w)
    torch.testing.assert_close(x.grad, 2 * w)


def test_several_backward_hooks_see_the_incoming_gradient_and_last_replacement_wins():
    hp = HookPoint()
    got = []
    hp.add_hook(lambda g, hook: g * 10, dir="bwd")
    hp.add_hook(lambda g, hook: got.append(("second", g)), dir="bwd")
    hp.add_hook(lambda g, hook: got.append(("first", g)), dir="bwd", prepend=True)
    hp.add_hook(lambda g, hook: g * 100, dir="bwd")
    x = torch.ones(2, requires_grad=True)
    hp(x).sum().backward()
    assert [label for label, _ in got] == ["first", "second"]
    assert all(torch.equal(g, torch.ones(2)) for _, g in got)
    torch.testing.assert_close(x.grad, torch.full((2,), 100.0))


def test_backward_hooks_are_those_present_at_forward_time():
    hp = HookPoint()
    c_removed, c_late = Counter(), Counter()
    hp.add_hook(c_removed.inc, dir="bwd")
    x = torch.ones(2, requires_grad=True)
    out = hp(x)
    hp.remove_hooks("bwd")
    hp.add_hook(c_late.inc, dir="bwd")
    out.sum().backward()
    assert (c_removed.count, c_late.count) == (1, 0)
    hp.remove_hooks("bwd")
    assert not hp._forward_hooks  # the internal attaching hook goes with the last bwd hook


def test_backward_hooks_skip_outputs_without_grad():
    hp = HookPoint()
    c = Counter()
    hp.add_hook(c.inc, dir="bwd")
    x = torch.ones(2)
    assert hp(x) is x
    with torch.no_grad():
        y = torch.ones(2, requires_grad=True)
        assert hp(y) is y
    assert c.count == 0


def test_run_with_hooks_backward_hooks_fire_after_return(model, tokens):
    c = Counter()
    out = model.run_with_hooks(tokens, bwd_hooks=[("hook_embed", c.inc)])
    assert all_hooks_removed(model)
    out.sum().backward()
    assert c.count == 1
    model(tokens).sum().backward()
    assert c.count == 1


def test_run_with_hooks_backward_hooks_kept_until_reset(model, tokens):
    c = Counter()
    model.run_with_hooks(tokens, bwd_hooks=[("hook_embed", c.inc)], reset_hooks_end=False)
    model(tokens).sum().backward()
    assert c.count == 1
    model.reset_hooks()
    assert all_hooks_removed(model)


# ----- bad names and checks -----


def test_unknown_hook_name_raises_before_running(model, tokens):
    c = Counter()
    with pytest.raises(HookNameError) as info:
        model.run_with_hooks(
            tokens, fwd_hooks=[("hook_embed", c.inc), ("blocks.0.hook_resid_pree", zero_hook)]
        )
    message = str(info.value)
    assert "blocks.0.hook_resid_pre" in message and "Did you mean" in message
    assert not message.startswith("'") and not message.startswith('"')
    assert isinstance(info.value, KeyError) and isinstance(info.value, TlcoreError)
    assert model.forward_calls == 0
    assert all_hooks_removed(model)
    assert model.context_level == 0


def test_unknown_backward_hook_name_raises(model):
    with pytest.raises(HookNameError):
        with model.hooks(bwd_hooks=[("blocks.9.hook_resid_pre", zero_hook)]):
            pass
    assert all_hooks_removed(model)


def test_add_hook_unknown_name(model):
    with pytest.raises(HookNameError, match="blocks.1.attn.hook_pattern"):
        model.add_hook("blocks.1.attn.hook_patern", zero_hook)
    with pytest.raises(HookNameError, match="is a module, not a hook point"):
        model.add_hook("blocks.1.attn", zero_hook)
    assert all_hooks_removed(model)


def test_hook_selector_must_be_name_or_predicate(model):
    with pytest.raises(TypeError):
        model.add_hook(3, zero_hook)  # type: ignore[arg-type]


def test_check_hooks_to_add_is_consulted_by_add_hook(tokens):
    class Strict(ToyModel):
        def check_hooks_to_add(self, hook_point, hook_point_name, hook, dir="fwd", **kwargs):
            assert hook_point_name != "blocks.0.attn.hook_z", "hook_z is disabled"
            assert hook_point is self.hook_dict[hook_point_name]

    torch.manual_seed(0)
    strict = Strict()
    with pytest.raises(AssertionError, match="hook_z is disabled"):
        strict.add_hook("blocks.0.attn.hook_z", zero_hook)
    assert all_hooks_removed(strict)
    strict.add_hook("blocks.1.attn.hook_z", zero_hook)
    assert len(strict.hook_dict["blocks.1.attn.hook_z"].fwd_hooks) == 1


# ----- run_with_cache -----


def test_run_with_cache_caches_every_hook_point(model, tokens):
    seen = {}
    model.run_with_hooks(
        tokens, fwd_hooks=[(lambda n: True, lambda t, hook: seen.__setitem__(hook.name, t))]
    )
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert cache.model is model and cache.has_batch_dim
    # Keys come in execution order (TransformerLens's too), which here differs from module order.
    assert list(cache.keys()) == list(seen)
    assert set(cache.keys()) == set(model.hook_dict)
    for name, value in cache.items():
        torch.testing.assert_close(value, seen[name])
        assert not value.requires_grad
    torch.testing.assert_close(logits, model(tokens))
    assert all_hooks_removed(model)


def test_run_with_cache_sees_patched_activations(model, tokens):
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", zero_hook)]):
        _, cache = model.run_with_cache(tokens)
    assert torch.count_nonzero(cache["blocks.0.hook_resid_post"]) == 0
    assert torch.count_nonzero(cache["blocks.1.hook_resid_pre"]) == 0
    assert all_hooks_removed(model)


def test_run_with_cache_inside_context_keeps_outer_hooks(model, tokens):
    c = Counter()
    with model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        model.run_with_cache(tokens)
        assert n_fwd_hooks(model) == 1
    assert n_fwd_hooks(model) == 0
    assert c.count == 1


@pytest.mark.parametrize(
    "names_filter, expected",
    [
        ("blocks.1.hook_resid_post", ["blocks.1.hook_resid_post"]),
        (["hook_embed", "blocks.0.attn.hook_q"], ["hook_embed", "blocks.0.attn.hook_q"]),
        (("blocks.0.attn.hook_q", "hook_embed"), ["hook_embed", "blocks.0.attn.hook_q"]),
        (
            lambda name: name.endswith("hook_pattern"),
            [f"blocks.{i}.attn.hook_pattern" for i in range(N_LAYERS)],
        ),
    ],
)
def test_names_filter_forms(model, tokens, names_filter, expected):
    _, cache = model.run_with_cache(tokens, names_filter=names_filter)
    assert list(cache.keys()) == expected


@pytest.mark.parametrize("names_filter", ["blocks.0.hook_mlp_outt", ["hook_embed", "hook_embd"]])
def test_names_filter_unknown_name_raises_before_running(model, tokens, names_filter):
    with pytest.raises(HookNameError, match="Did you mean"):
        model.run_with_cache(tokens, names_filter=names_filter)
    assert model.forward_calls == 0
    assert all_hooks_removed(model)


def test_names_filter_bad_type(model, tokens):
    with pytest.raises(ValueError, match="names_filter"):
        model.run_with_cache(tokens, names_filter=3)  # type: ignore[arg-type]


def test_run_with_cache_device(model, tokens):
    _, cache = model.run_with_cache(tokens, device="meta")
    assert {v.device.type for v in cache.values()} == {"meta"}
    _, cache = model.run_with_cache(tokens)
    assert {v.device.type for v in cache.values()} == {"cpu"}


def test_run_with_cache_remove_batch_dim(model, tokens):
    _, full = model.run_with_cache(tokens[:1])
    _, cache = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    assert not cache.has_batch_dim
    for name, value in cache.items():
        torch.testing.assert_close(value, full[name][0])
    assert cache["blocks.0.attn.hook_pattern"].shape == (N_HEADS, 5, 5)


def test_run_with_cache_return_dict(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter="hook_embed", return_cache_object=False)
    assert type(cache) is dict and list(cache) == ["hook_embed"]


def test_run_with_cache_keep_hooks(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter="hook_embed", reset_hooks_end=False)
    first = cache["hook_embed"]
    model(tokens[:1])
    assert cache["hook_embed"].shape[0] == 1 and first.shape[0] == 2
    model.reset_hooks()
    assert all_hooks_removed(model)


def test_incl_bwd_caches_gradients_equal_to_autograd(model, tokens):
    names = ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_post"]
    acts = {}

    def keep(tensor, hook):
        out = tensor.clone()
        out.retain_grad()
        acts[hook.name] = out
        return out

    loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(n, keep) for n in names])
    loss.backward()
    model.zero_grad()

    loss2, cache = model.run_with_cache(
        tokens, return_type="loss", names_filter=names, incl_bwd=True
    )
    torch.testing.assert_close(loss2, loss)
    assert set(cache.keys()) == set(names) | {n + "_grad" for n in names}
    for name in names:
        torch.testing.assert_close(cache[name + "_grad"], acts[name].grad)
    # run_with_cache called backward() itself.
    assert model.embed.weight.grad is not None
    assert all_hooks_removed(model)


def test_incl_bwd_needs_scalar_output(model, tokens):
    with pytest.raises(ValueError, match="scalar"):
        model.run_with_cache(tokens, incl_bwd=True)
    assert all_hooks_removed(model)


def test_incl_bwd_with_remove_batch_dim(model, tokens):
    _, cache = model.run_with_cache(
        tokens[:1],
        return_type="loss",
        names_filter="blocks.0.hook_resid_pre",
        incl_bwd=True,
        remove_batch_dim=True,
    )
    assert cache["blocks.0.hook_resid_pre_grad"].shape == (5, D_MODEL)


def test_get_caching_hooks_used_manually(model, tokens):
    cache, fwd, bwd = model.get_caching_hooks(names_filter="hook_embed", incl_bwd=True)
    assert [n for n, _ in fwd] == ["hook_embed"] and [n for n, _ in bwd] == ["hook_embed"]
    assert cache == {}
    with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        model(tokens).sum().backward()
    assert set(cache) == {"hook_embed", "hook_embed_grad"}
    assert all_hooks_removed(model)


def test_get_caching_hooks_without_bwd(model):
    cache = {"already": torch.zeros(1)}
    same, fwd, bwd = model.get_caching_hooks(names_filter=None, cache=cache)
    assert same is cache
    assert len(fwd) == len(model.hook_dict) and bwd == []
    assert model.is_caching


def test_add_caching_hooks_persist_until_reset(model, tokens):
    cache = model.add_caching_hooks(names_filter=lambda n: n.endswith("hook_scale"))
    assert model.is_caching
    model(tokens)
    assert list(cache) == ["ln_final.hook_scale"]
    assert cache["ln_final.hook_scale"].shape == (2, 5, 1)
    model.reset_hooks()
    assert not model.is_caching
    assert all_hooks_removed(model)


# ----- pos_slice -----


@pytest.mark.parametrize(
    "pos_slice, index",
    [
        (-1, [-1]),  # an int keeps the position dimension
        (2, [2]),
        ((1, 4), slice(1, 4)),
        ([0, 3], [0, 3]),
        (Slice((0, 5, 2)), slice(0, 5, 2)),
        (slice(2, None), slice(2, None)),
        (torch.tensor([4, 1]), [4, 1]),
    ],
)
def test_pos_slice_takes_positions_on_the_right_axis(model, tokens, pos_slice, index):
    _, full = model.run_with_cache(tokens)
    _, cache = model.run_with_cache(tokens, pos_slice=pos_slice)
    assert list(cache.keys()) == list(full.keys())
    for name, value in full.items():
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            expected = value[:, :, index]  # the query position
        else:
            expected = value[:, index]  # [batch, pos, ...]: tokens, q, z, resid, scale, mlp
        torch.testing.assert_close(cache[name], expected, msg=name)


def test_pos_slice_with_remove_batch_dim(model, tokens):
    _, full = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    _, cache = model.run_with_cache(tokens[:1], remove_batch_dim=True, pos_slice=-1)
    torch.testing.assert_close(cache["hook_tokens"], full["hook_tokens"][[-1]])
    torch.testing.assert_close(cache["blocks.0.attn.hook_q"], full["blocks.0.attn.hook_q"][[-1]])
    pattern = full["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], pattern[:, [-1]])


def test_pos_slice_also_applies_to_gradients(model, tokens):
    _, full = model.run_with_cache(
        tokens, return_type="loss", names_filter="blocks.0.attn.hook_z", incl_bwd=True
    )
    _, cache = model.run_with_cache(
        tokens, return_type="loss", names_filter="blocks.0.attn.hook_z", incl_bwd=True, pos_slice=1
    )
    torch.testing.assert_close(
        cache["blocks.0.attn.hook_z_grad"], full["blocks.0.attn.hook_z_grad"][:, [1]]
    )


def test_pos_slice_skips_flattened_moe_hooks():
    class Routed(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Module()])
            self.blocks[0].mlp = nn.Module()
            self.blocks[0].mlp.hook_expert_weights = HookPoint()
            self.hook_resid = HookPoint()
            self.setup()

        def forward(self, x):
            self.blocks[0].mlp.hook_expert_weights(x.reshape(-1, x.shape[-1]))
            return self.hook_resid(x)

    _, cache = Routed().run_with_cache(torch.randn(2, 3, 4), pos_slice=0)
    assert cache["blocks.0.mlp.hook_expert_weights"].shape == (6, 4)
    assert cache["hook_resid"].shape == (2, 1, 4)

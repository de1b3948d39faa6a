"""Hostile hooks: wrong returns name the hook point, flag-gated points refuse hooks on every path,
and one model is not hooked from two threads at once."""

from __future__ import annotations

import threading

import pytest
import torch

from tlcore import HookedTransformer
from tlcore.errors import HookConcurrencyError, HookNameError, HookReturnError

TOKENS = torch.tensor([[1, 2, 3, 4]])
Z = "blocks.0.attn.hook_z"  # [batch, pos, head, d_head]


@pytest.fixture
def gpt2(tiny_checkpoint):
    folder, _ = tiny_checkpoint("gpt2")
    return HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (
            lambda z, hook: z[:, :, 0],
            "returned shape (1, 4, 16); the activation it replaces has "
            "shape (1, 4, 4, 16), dtype torch.float32",
        ),  # fmt: skip
        (lambda z, hook: z.double(), "returned dtype torch.float64"),
        (lambda z, hook: z.tolist(), "returned a list; return None to keep the activation"),
        (lambda z, hook: (z,), "returned a tuple"),
        (lambda z, hook: z.to("meta"), "returned a tensor on meta"),
    ],
)
def test_a_wrong_hook_return_names_the_hook_point(gpt2, hook, expected) -> None:
    with pytest.raises(HookReturnError) as info:
        gpt2.run_with_hooks(TOKENS, fwd_hooks=[(Z, hook)])
    message = str(info.value)
    assert f"at '{Z}'" in message and expected in message
    assert not any(hp.has_hooks for hp in gpt2.hook_points())  # cleaned up
    clean = gpt2(TOKENS)
    with pytest.raises(HookReturnError):  # add_hook path too
        gpt2.add_hook(Z, hook)
        try:
            gpt2(TOKENS)
        finally:
            gpt2.reset_hooks()
    assert torch.equal(gpt2(TOKENS), clean)


def test_a_matching_replacement_still_works(gpt2) -> None:
    ablated = gpt2.run_with_hooks(TOKENS, fwd_hooks=[(Z, lambda z, hook: torch.zeros_like(z))])
    assert not torch.equal(ablated, gpt2(TOKENS))


def test_a_wrong_backward_replacement_names_the_hook_point(gpt2) -> None:
    def bad_grad(grad, hook):
        return grad[..., :1]

    loss = None
    with pytest.raises(HookReturnError, match=f"at '{Z}' returned shape .* the gradient"):
        with gpt2.hooks(bwd_hooks=[(Z, bad_grad)]):
            loss = gpt2(TOKENS, return_type="loss")
            loss.backward()


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("blocks.0.attn.hook_result", "use_attn_result"),
        ("blocks.0.hook_q_input", "use_split_qkv_input"),
        ("blocks.0.hook_mlp_in", "use_hook_mlp_in"),
        ("blocks.0.hook_attn_in", "use_attn_in"),
    ],
)
def test_flag_gated_points_refuse_hooks_on_every_path(gpt2, name, flag) -> None:
    fn = lambda x, hook: None  # noqa: E731
    paths = {
        "add_hook": lambda: gpt2.add_hook(name, fn),
        "run_with_hooks": lambda: gpt2.run_with_hooks(TOKENS, fwd_hooks=[(name, fn)]),
        "hooks": lambda: gpt2.hooks(fwd_hooks=[(name, fn)]).__enter__(),
        "run_with_cache": lambda: gpt2.run_with_cache(TOKENS, names_filter=[name]),
        "run_with_cache (str)": lambda: gpt2.run_with_cache(TOKENS, names_filter=name),
    }
    for path, call in paths.items():
        with pytest.raises(HookNameError, match=f"only fires with cfg.{flag} = True") as info:
            call()
        assert name in str(info.value), path
        assert not any(hp.has_hooks for hp in gpt2.hook_points()), path
        assert gpt2.context_level == 0, path


def test_predicates_and_the_full_cache_skip_gated_points(gpt2) -> None:
    _, cache = gpt2.run_with_cache(TOKENS)
    assert "blocks.0.attn.hook_result" not in cache and "blocks.0.attn.hook_z" in cache
    seen: list[str] = []
    record = lambda x, hook: seen.append(hook.name)  # noqa: E731
    gpt2.run_with_hooks(TOKENS, fwd_hooks=[(lambda n: True, record)])
    assert "blocks.0.attn.hook_z" in seen and "blocks.0.attn.hook_result" not in seen
    gpt2.set_use_attn_result(True)
    _, cache = gpt2.run_with_cache(TOKENS, names_filter="blocks.0.attn.hook_result")
    assert cache["blocks.0.attn.hook_result"].shape[2] == gpt2.cfg.n_heads


def test_hooks_from_a_second_thread_are_refused(gpt2) -> None:
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with gpt2.hooks(fwd_hooks=[(Z, lambda z, hook: None)]):
            entered.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(30)
        with pytest.raises(HookConcurrencyError, match="another thread"):
            with gpt2.hooks(fwd_hooks=[(Z, lambda z, hook: None)]):
                pass
        with pytest.raises(HookConcurrencyError):
            gpt2.run_with_cache(TOKENS)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    finally:
        release.set()
        thread.join(30)
    assert not errors, errors
    # Once the other thread is done, this one may hook; nesting in one thread stays allowed.
    with gpt2.hooks(fwd_hooks=[(Z, lambda z, hook: None)]):
        with gpt2.hooks(fwd_hooks=[(Z, lambda z, hook: None)]):
            gpt2(TOKENS)
    assert not any(hp.has_hooks for hp in gpt2.hook_points())

"""A tied checkpoint's processed unembedding, held derived from the embedding (no second copy).

Tiny random GPT-2 and Llama checkpoints written by ``save_pretrained`` and loaded through the real
loader. Expected values are computed here from the HF weights with TransformerLens's processing
formula (``W_U = C_d diag(w) W_E^T C_V``), or come from the materialised path
(``keep_tied(False)``: processing as it was before the derived form).
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tlcore import HookedTransformer
from tlcore.errors import ExportError, TiedWeightsError
from tlcore.processing_tied import keep_tied
from tlcore.train import HookedTransformerTrainConfig, train

VOCAB, D = 97, 32
TOKENS = torch.tensor([[5, 17, 3, 88, 41, 0, 9], [60, 2, 2, 71, 30, 96, 14]])


def _perturb_norms(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name or "norm" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, GPT2LMHeadModel]:
    torch.manual_seed(0)
    config = GPT2Config(n_embd=D, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    hf = GPT2LMHeadModel(config).eval()
    _perturb_norms(hf)
    folder = tmp_path_factory.mktemp("gpt2-tied")
    hf.save_pretrained(folder)
    return str(folder), hf


def _load(folder: str, tied: bool = True, **kwargs: object) -> HookedTransformer:
    with keep_tied(tied):
        return HookedTransformer.from_pretrained(folder, device="cpu", **kwargs)


def _logits(model: HookedTransformer) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)


def _vocab_matrices(model: torch.nn.Module) -> set[int]:
    """Storages of the ``[d_vocab, d_model]`` parameters, either way round (without untying)."""
    out = set()
    for module in model.modules():
        for param in dict.values(module._parameters):
            if param is not None and sorted(param.shape) == sorted((VOCAB, D)):
                out.add(param.untyped_storage().data_ptr())
    return out


def test_processed_values_are_transformer_lens_formula(gpt2) -> None:
    folder, hf = gpt2
    model = _load(folder)
    assert model.unembed.is_tied
    E = hf.transformer.wte.weight.detach().double()  # noqa: N806
    w, b = (p.detach().double() for p in (hf.transformer.ln_f.weight, hf.transformer.ln_f.bias))
    c_d = torch.eye(D, dtype=torch.float64) - 1.0 / D
    c_v = torch.eye(VOCAB, dtype=torch.float64) - 1.0 / VOCAB
    state = model.state_dict()
    assert model.unembed.is_tied  # state_dict computes W_U without untying
    keys = list(state)
    assert keys.index("unembed.W_U") == keys.index("unembed.b_U") - 1  # TransformerLens's order
    torch.testing.assert_close(state["unembed.W_U"].double(), c_d @ torch.diag(w) @ E.T @ c_v,
                               atol=2e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(state["unembed.b_U"].double(), c_v @ (E @ b), atol=2e-6, rtol=0)
    torch.testing.assert_close(state["embed.W_E"].double(), E @ c_d, atol=2e-6, rtol=0)
    # Shared storage: the derived form reads the embedding parameter itself.
    derived = model.unembed.derived_weight("W_U")
    assert derived is not None and derived.source is model.embed.W_E and derived.rank <= 3
    assert _vocab_matrices(model) == {model.embed.W_E.untyped_storage().data_ptr()}
    materialised = _load(folder, tied=False)
    assert len(_vocab_matrices(materialised)) == 2


def test_logits_cache_and_generate_match_materialised(gpt2) -> None:
    folder, hf = gpt2
    model, ref = _load(folder), _load(folder, tied=False)
    assert not ref.unembed.is_tied
    ours, theirs = _logits(model), _logits(ref)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        hf_logprobs = hf(TOKENS).logits.log_softmax(-1)
    torch.testing.assert_close(ours.log_softmax(-1), hf_logprobs, atol=1e-4, rtol=0)
    seen = []
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            TOKENS, names_filter=lambda n: n == "ln_final.hook_normalized"
        )
        hooked = model.run_with_hooks(
            TOKENS, fwd_hooks=[("ln_final.hook_normalized", lambda t, hook: seen.append(t) or t)]
        )
    torch.testing.assert_close(logits, ours, atol=0, rtol=0)
    torch.testing.assert_close(hooked, ours, atol=0, rtol=0)
    assert torch.equal(seen[0], cache["ln_final.hook_normalized"])
    greedy = dict(max_new_tokens=5, do_sample=False, stop_at_eos=False, verbose=False)
    a, b = model.generate(TOKENS[:1], **greedy), ref.generate(TOKENS[:1], **greedy)
    assert torch.equal(a, b)
    assert model.unembed.is_tied  # none of these took W_U as a tensor


def test_reading_W_U_unties_for_good_and_writes_are_kept(gpt2) -> None:  # noqa: N802
    folder, _ = gpt2
    model, ref = _load(folder), _load(folder, tied=False)
    w_u = model.W_U
    assert not model.unembed.is_tied and isinstance(w_u, torch.nn.Parameter)
    assert model.unembed.W_U is w_u  # now an ordinary parameter
    torch.testing.assert_close(w_u, ref.W_U, atol=1e-6, rtol=0)
    assert [n for n, _ in model.named_parameters()][-2:] == ["unembed.W_U", "unembed.b_U"]
    with torch.no_grad():
        w_u[:, 3] += 1.0  # in place on the parameter
        ref.W_U[:, 3] += 1.0
    model.unembed.W_U.data[:, 5] -= 2.0  # through .data
    ref.unembed.W_U.data[:, 5] -= 2.0
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)


def test_parameters_and_optimizer_untie(gpt2) -> None:
    folder, _ = gpt2
    model = _load(folder)
    first = next(model.parameters())  # stops at the embedding: still tied
    assert first is model.embed.W_E and model.unembed.is_tied
    names = [n for n, _ in model.named_parameters()]
    assert "unembed.W_U" in names and not model.unembed.is_tied
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert any(p is model.unembed.W_U for g in opt.param_groups for p in g["params"])


def test_training_matches_the_untied_model(gpt2) -> None:
    folder, _ = gpt2
    data = [{"tokens": TOKENS[i % 2]} for i in range(8)]
    # SGD: Adam would blow the float noise of b_K's zero gradient up to full steps.
    cfg = HookedTransformerTrainConfig(num_epochs=1, batch_size=4, lr=0.1, seed=0,
                                       optimizer_name="SGD", print_every=None, device="cpu",
                                       progress_bar=False)  # fmt: skip
    trained = {}
    for tied in (True, False):
        trained[tied] = train(_load(folder, tied=tied), cfg, data)
    assert not trained[True].unembed.is_tied
    for (name, p), (_, q) in zip(
        trained[True].named_parameters(), trained[False].named_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)


def test_grad_forward_unties(gpt2) -> None:
    folder, _ = gpt2
    model = _load(folder)
    model(TOKENS, return_type="loss").backward()
    assert not model.unembed.is_tied and model.W_U.grad is not None


def test_editing_W_E_while_tied_is_refused(gpt2) -> None:  # noqa: N802
    folder, _ = gpt2
    model = _load(folder)
    with torch.no_grad():
        model.embed.W_E[4] = 0.0
    with pytest.raises(TiedWeightsError, match="W_E was changed"):
        _logits(model)
    with pytest.raises(TiedWeightsError):
        model.state_dict()
    model.unembed.W_U = torch.nn.Parameter(torch.ones(D, VOCAB))  # assigning W_U is allowed
    assert not model.unembed.is_tied
    shifted = _logits(model) - model.unembed.b_U  # every token reads the same all-ones column
    torch.testing.assert_close(shifted, shifted[..., :1].expand_as(shifted), atol=1e-6, rtol=0)


def test_state_dict_round_trip(gpt2, tmp_path: Path) -> None:
    folder, _ = gpt2
    model, ref = _load(folder), _load(folder, tied=False)
    state = model.state_dict()
    other = _load(folder)
    assert other.unembed.is_tied
    other.load_state_dict(state)  # loading W_U unties
    assert not other.unembed.is_tied
    torch.testing.assert_close(_logits(other), _logits(ref), atol=1e-5, rtol=0)
    ref.load_state_dict(state)
    torch.testing.assert_close(_logits(ref), _logits(model), atol=1e-5, rtol=0)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    loaded = torch.load(tmp_path / "sd.pt")
    assert torch.equal(loaded["unembed.W_U"], state["unembed.W_U"])


def test_to_copy_and_reprocessing_keep_the_tie(gpt2) -> None:
    folder, _ = gpt2
    model, ref = _load(folder), _load(folder, tied=False)
    model.to(torch.float64)
    ref.to(torch.float64)
    assert model.unembed.is_tied
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)
    twin = copy.deepcopy(model)
    assert twin.unembed.is_tied and twin.unembed.derived_weight("W_U").source is twin.embed.W_E
    torch.testing.assert_close(_logits(twin), _logits(model), atol=0, rtol=0)
    list(twin.parameters())
    assert not twin.unembed.is_tied and model.unembed.is_tied
    buffer = io.BytesIO()
    torch.save(model.unembed, buffer)  # a pickle carries the embedding it derives from
    buffer.seek(0)
    pickled = torch.load(buffer, weights_only=False)
    assert pickled.is_tied
    x = torch.randn(2, 3, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pickled(x), model.unembed(x), atol=0, rtol=0)
    model.process_weights_()
    ref.process_weights_()
    assert model.unembed.is_tied
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.state_dict()["unembed.W_U"], ref.W_U, atol=1e-6, rtol=0)
    model.unembed.to(torch.float32)  # the unembedding alone goes where the embedding is not
    assert not model.unembed.is_tied and model.W_U.dtype == torch.float32


@pytest.mark.parametrize(
    "flags",
    [
        {"center_writing_weights": False, "center_unembed": False},
        {"fold_ln": False, "center_writing_weights": False},
        {"center_unembed": False},
        {"fold_ln": True, "fold_value_biases": False},
    ],
)
def test_partial_processing_matches_materialised(gpt2, flags: dict[str, bool]) -> None:
    folder, _ = gpt2
    model, ref = _load(folder, **flags), _load(folder, tied=False, **flags)
    assert model.unembed.is_tied
    torch.testing.assert_close(model.state_dict()["unembed.W_U"], ref.W_U, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)


def test_untied_checkpoint_and_no_processing_are_unchanged(gpt2, tmp_path: Path) -> None:
    folder, hf = gpt2
    raw = HookedTransformer.from_pretrained_no_processing(folder, device="cpu")
    assert not raw.unembed.is_tied
    raw.process_weights_()  # W_U == W_E.T by value: derived, as in from_pretrained
    assert raw.unembed.is_tied
    torch.testing.assert_close(_logits(raw), _logits(_load(folder, tied=False)), atol=1e-5, rtol=0)
    before = hf.transformer.wte.weight.detach().clone()
    from_hf = HookedTransformer.from_pretrained(folder, hf_model=hf, device="cpu")
    assert from_hf.unembed.is_tied  # lm_head is wte itself: equal without comparing
    assert torch.equal(hf.transformer.wte.weight, before)  # the caller's tensors are untouched
    torch.testing.assert_close(_logits(from_hf), _logits(raw), atol=1e-5, rtol=0)
    torch.manual_seed(3)
    untied = GPT2LMHeadModel(GPT2Config(n_embd=D, n_layer=1, n_head=4, vocab_size=VOCAB,
                                        n_positions=32, tie_word_embeddings=False))  # fmt: skip
    untied.save_pretrained(tmp_path)
    assert not _load(str(tmp_path)).unembed.is_tied


def test_rms_tied_llama(tmp_path: Path) -> None:
    """RMSNorm: ``W_U = diag(w) W_E^T C_V`` (no d_model centring), ``W_E`` untouched."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                         tie_word_embeddings=True)  # fmt: skip
    hf = LlamaForCausalLM(config).eval()
    _perturb_norms(hf)
    hf.save_pretrained(tmp_path)
    model, ref = _load(str(tmp_path)), _load(str(tmp_path), tied=False)
    assert model.unembed.is_tied
    E = hf.model.embed_tokens.weight.detach().double()  # noqa: N806
    w = hf.model.norm.weight.detach().double()
    c_v = torch.eye(VOCAB, dtype=torch.float64) - 1.0 / VOCAB
    expected = torch.diag(w) @ E.T @ c_v
    torch.testing.assert_close(model.state_dict()["unembed.W_U"].double(), expected, atol=2e-6,
                               rtol=0)  # fmt: skip
    assert torch.equal(model.embed.W_E, hf.model.embed_tokens.weight)
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)
    with torch.no_grad():
        hf_logprobs = hf(TOKENS).logits.log_softmax(-1)
    torch.testing.assert_close(_logits(model).log_softmax(-1), hf_logprobs, atol=1e-4, rtol=0)


def test_device_map_and_export_behave_as_materialised(gpt2, tmp_path: Path) -> None:
    folder, _ = gpt2
    expected = _logits(_load(folder, tied=False))
    for placement in ({"device_map": {"unembed": "cpu"}}, {"n_devices": 2}):
        placed = _load(folder, **placement)
        assert not placed.unembed.is_tied  # placing the parts apart unties first
        torch.testing.assert_close(_logits(placed), expected, atol=1e-5, rtol=0)
    for tied in (True, False):  # GPT-2's lm_head has no bias for the folded ln_final.b
        with pytest.raises(ExportError, match="unembed.b_U"):
            _load(folder, tied=tied).save_pretrained_hf(tmp_path / str(tied))


_PEAK = textwrap.dedent(
    """
    import gc, json, sys, torch
    from pathlib import Path
    import transformers  # noqa: F401
    from tlcore.model import HookedTransformer
    from tlcore.processing_tied import keep_tied

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    gc.collect()
    before = status("VmRSS")
    with keep_tied(sys.argv[2] == "tied"):
        model = HookedTransformer.from_pretrained(sys.argv[1], device="cpu")
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long))
    print(json.dumps(status("VmHWM") - before))
    """
)


def test_processed_tied_load_holds_one_matrix(tmp_path: Path) -> None:
    """A 31 MB tied embedding: the processed load peaks a matrix under the materialised form."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=256, n_layer=1, n_head=4, vocab_size=32000, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    matrix_mb = 32000 * 256 * 4 / 2**20
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = {  # a fresh process each (no memory reused), side by side
        mode: subprocess.Popen([sys.executable, "-c", _PEAK, str(tmp_path), mode], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for mode in ("tied", "materialised")
    }  # fmt: skip
    peaks = {}
    for mode, run in runs.items():
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, mode
        peaks[mode] = json.loads(out.strip().splitlines()[-1])
    # Measured 95 vs 118 MB: the materialised W_U (31 MB) less the derived form's float64 slices.
    assert peaks["tied"] < peaks["materialised"] - 0.5 * matrix_mb, (peaks, matrix_mb)

"""tlcore.train: TransformerLens's training loop, config fields and optimiser choices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import optim

from tlcore import HookedTransformer
from tlcore.train import HookedTransformerTrainConfig, make_optimizer, train

API = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2" / "api.json").read_text()
)


def tiny_model() -> HookedTransformer:
    return HookedTransformer(
        dict(n_layers=1, d_model=32, d_head=8, n_ctx=16, d_vocab=7, act_fn="relu", seed=0,
             device="cpu")
    )  # fmt: skip


def cyclic_dataset(n: int = 64) -> list[dict[str, torch.Tensor]]:
    """Sequences counting 0..6 from random offsets: fully predictable after the first token."""
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 7, (n,), generator=gen)
    return [{"tokens": (torch.arange(16) + s) % 7} for s in starts]


def test_fields_and_defaults_are_transformer_lens_s() -> None:
    ours = [
        [f.name, None if f.default is dataclasses.MISSING else repr(f.default)]
        for f in dataclasses.fields(HookedTransformerTrainConfig)
    ]
    assert ours[: len(API["HookedTransformerTrainConfig"])] == API["HookedTransformerTrainConfig"]
    assert [f for f, _ in ours[len(API["HookedTransformerTrainConfig"]) :]] == ["progress_bar"]


def test_training_lowers_the_loss_and_labels_its_progress_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, data = tiny_model(), cyclic_dataset()
    batch = torch.stack([d["tokens"] for d in data])
    before = model(batch, return_type="loss").item()
    cfg = HookedTransformerTrainConfig(
        num_epochs=4, batch_size=16, lr=3e-3, device="cpu", print_every=2, warmup_steps=2,
        max_grad_norm=1.0,
    )  # fmt: skip
    trained = train(model, cfg, data)
    assert trained is model and model.training
    after = model(batch, return_type="loss").item()
    assert after < 0.5 * before, (before, after)
    out = capsys.readouterr()
    assert "Epoch 4 Samples" in out.out  # TransformerLens's print_every lines
    assert "epoch 4/4" in out.err and "loss=" in out.err  # the labelled progress bar


def test_max_steps_ends_each_epoch_and_save_every_writes_checkpoints(tmp_path: Path) -> None:
    model = tiny_model()
    cfg = HookedTransformerTrainConfig(
        num_epochs=1, batch_size=4, device="cpu", print_every=None, max_steps=2, save_every=2,
        save_dir=str(tmp_path), progress_bar=False,
    )  # fmt: skip
    train(model, cfg, [d["tokens"] for d in cyclic_dataset()])  # bare token tensors work too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0.pt", "model_2.pt"]
    state = torch.load(tmp_path / "model_2.pt", weights_only=True)
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize(
    ("fields", "kind", "decay"),
    [
        ({}, optim.Adam, 0.0),
        ({"weight_decay": 0.1}, optim.AdamW, 0.1),
        ({"optimizer_name": "AdamW"}, optim.Adam, 0.0),  # AdamW without decay is Adam, as TL
        ({"optimizer_name": "SGD", "momentum": 0.9, "weight_decay": 0.01}, optim.SGD, 0.01),
    ],
)
def test_optimiser_choices_are_transformer_lens_s(fields: dict, kind: type, decay: float) -> None:
    opt = make_optimizer(tiny_model(), HookedTransformerTrainConfig(1, 1, lr=0.5, **fields))
    assert type(opt) is kind
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["weight_decay"] == decay
    if kind is optim.SGD:
        assert opt.param_groups[0]["momentum"] == 0.9


def test_unknown_optimiser_and_missing_wandb_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="RMSprop"):
        make_optimizer(tiny_model(), HookedTransformerTrainConfig(1, 1, optimizer_name="RMSprop"))
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    with pytest.raises(ImportError, match="wandb"):
        train(tiny_model(), HookedTransformerTrainConfig(1, 4, wandb=True), cyclic_dataset(4))

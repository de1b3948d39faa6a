"""Train a ``HookedTransformer`` on next-token prediction, as ``transformer_lens.train`` does.

Same config fields, defaults and loop as TransformerLens 2.x: Adam (AdamW when ``weight_decay`` is
set) or SGD, optional linear warm-up and gradient clipping, a shuffled ``DataLoader`` over items
with a ``"tokens"`` entry, ``model(tokens, return_type="loss")``. A progress bar labelled with the
epoch and the running loss replaces nothing: ``print_every`` still prints as TransformerLens does.
Weights & Biases logging is optional and off by default (``wandb=True`` needs the ``wandb``
package); nothing else reaches the network.

A processed model from a tied checkpoint holds ``W_U`` derived from ``W_E``
(:mod:`tlcore.components.tied_unembed`). Building the optimizer from ``model.parameters()`` unties
it (``W_U`` becomes a parameter of its own), so ``W_E`` and ``W_U`` train independently, exactly as
TransformerLens's processed (untied) model does.

Example:
    >>> import torch
    >>> from tlcore import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=16, d_head=4, n_ctx=8, d_vocab=5,
    ...                                act_fn="relu", seed=0, device="cpu"))
    >>> data = [{"tokens": torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])}] * 32
    >>> before = model(data[0]["tokens"][None], return_type="loss").item()
    >>> cfg = HookedTransformerTrainConfig(num_epochs=3, batch_size=8, lr=1e-2, print_every=None,
    ...                                    device="cpu", progress_bar=False)
    >>> model = train(model, cfg, data)
    >>> model(data[0]["tokens"][None], return_type="loss").item() < before / 2
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import optim
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from tlcore.model import HookedTransformer

__all__ = ["HookedTransformerTrainConfig", "train"]


@dataclass
class HookedTransformerTrainConfig:
    """Training hyperparameters (TransformerLens 2.x's fields and defaults, plus ``progress_bar``).

    Attributes:
        num_epochs: Passes over the dataset.
        batch_size: Sequences per step.
        lr: Learning rate.
        seed: Seeds torch before training (the data order and any dropout).
        momentum: SGD momentum.
        max_grad_norm: Clip the gradient norm to this (None: no clipping).
        weight_decay: Use AdamW with this decay for ``"Adam"``/``"AdamW"``; SGD's decay.
        optimizer_name: ``"Adam"``, ``"AdamW"`` or ``"SGD"``.
        device: Train here (default: CUDA, then MPS, then CPU).
        warmup_steps: Linear learning-rate warm-up over this many steps.
        save_every: Save ``model_{step}.pt`` to ``save_dir`` every this many steps.
        save_dir: Where checkpoints go.
        wandb: Log to Weights & Biases (needs ``wandb``; off by default).
        wandb_project_name: Its project (default ``"easy-transformer"``, as TransformerLens).
        print_every: Print the loss every this many steps (None: never).
        max_steps: End each epoch after this many steps.
        progress_bar: Show a tqdm bar per epoch with the loss (tlcore's addition).
    """

    num_epochs: int
    batch_size: int
    lr: float = 1e-3
    seed: int = 0
    momentum: float = 0.0
    max_grad_norm: float | None = None
    weight_decay: float | None = None
    optimizer_name: str = "Adam"
    device: str | None = None
    warmup_steps: int = 0
    save_every: int | None = None
    save_dir: str | None = None
    wandb: bool = False
    wandb_project_name: str | None = None
    print_every: int | None = 50
    max_steps: int | None = None
    progress_bar: bool = True


def make_optimizer(model: torch.nn.Module, config: HookedTransformerTrainConfig) -> Optimizer:
    """The optimiser TransformerLens's ``train`` builds for ``config``.

    Args:
        model: The model whose parameters it updates.
        config: ``optimizer_name``, ``lr``, ``weight_decay``, ``momentum``.

    Returns:
        Adam, AdamW (Adam with ``weight_decay`` set: Adam's own decay is L2, not decoupled) or SGD.

    Raises:
        ValueError: For another optimiser name.
    """
    if config.optimizer_name in ("Adam", "AdamW"):
        if config.weight_decay is not None:
            return optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer_name == "SGD":
        return optim.SGD(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay if config.weight_decay is not None else 0.0,
            momentum=config.momentum,
        )
    raise ValueError(
        f"Optimizer {config.optimizer_name} not supported (use 'Adam', 'AdamW' or 'SGD')"
    )


def _tokens(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        return batch["tokens"]
    if isinstance(batch, (list, tuple)):  # a TensorDataset's items
        return batch[0]
    return batch


def train(
    model: HookedTransformer,
    config: HookedTransformerTrainConfig,
    dataset: Dataset[Any] | Sequence[Any],
) -> HookedTransformer:
    """Train ``model`` on autoregressive language modelling, as TransformerLens's ``train``.

    Args:
        model: The model, trained in place.
        config: Hyperparameters.
        dataset: Items holding a ``"tokens"`` tensor ``[pos]`` (TransformerLens's layout, e.g.
            :func:`tlcore.utils.tokenize_and_concatenate`'s output), or token tensors, or a
            ``TensorDataset`` of them.

    Returns:
        The trained model.

    Raises:
        ImportError: If ``config.wandb`` is set and ``wandb`` is not installed.
    """
    torch.manual_seed(config.seed)
    model.train()
    wandb: Any = None
    if config.wandb:
        try:
            import wandb  # type: ignore[import-not-found, no-redef]
        except ImportError as exc:
            raise ImportError("wandb=True needs the wandb package (pip install wandb)") from exc
        if config.wandb_project_name is None:
            config.wandb_project_name = "easy-transformer"
        wandb.init(project=config.wandb_project_name, config=asdict(config))
    if config.device is None:
        from tlcore.utils.tokenize import get_device

        config.device = str(get_device())
    optimizer = make_optimizer(model, config)
    scheduler = None
    if config.warmup_steps > 0:
        scheduler = optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda=lambda step: min(1.0, step / config.warmup_steps)
        )
    dataloader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True)  # type: ignore[arg-type]
    model.to(config.device)
    for epoch in range(1, config.num_epochs + 1):
        samples = 0
        bar = tqdm(
            dataloader,
            desc=f"epoch {epoch}/{config.num_epochs}",
            unit="batch",
            disable=not config.progress_bar,
        )
        for step, batch in enumerate(bar):
            tokens = _tokens(batch).to(config.device)
            loss = model(tokens, return_type="loss")
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            optimizer.zero_grad()
            samples += tokens.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if wandb is not None:
                wandb.log({"train_loss": loss.item(), "samples": samples, "epoch": epoch})
            if config.print_every is not None and step % config.print_every == 0:
                print(f"Epoch {epoch} Samples {samples} Step {step} Loss {loss.item()}")
            if config.save_every is not None and step % config.save_every == 0 and config.save_dir:
                torch.save(model.state_dict(), f"{config.save_dir}/model_{step}.pt")
            if config.max_steps is not None and step >= config.max_steps:
                break
        bar.close()
    return model

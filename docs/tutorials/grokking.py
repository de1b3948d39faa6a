"""Grokking: a 1-layer transformer learns modular addition, then suddenly generalises.

Nanda et al., "Progress measures for grokking via mechanistic interpretability" (2023), trained a
1-layer, LayerNorm-free transformer on ``a + b mod p`` from a third of all pairs: it memorises the
training set first, and only much later (with weight decay) finds a general algorithm, built from
a few Fourier frequencies, at which point the test loss drops sharply. This is TransformerLens's
Grokking demo with a smaller modulus, a narrower model, a larger training fraction and a larger
learning rate, so it runs on a CPU in a few minutes; the model comes from a config written by
hand, as in TransformerLens.

Run ``python docs/tutorials/grokking.py [OUT_DIR]``; it writes ``grokking_loss.png`` and
``grokking_fourier.png`` and prints when the model generalised.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tlcore import HookedTransformer, HookedTransformerConfig

P = 31  # the modulus (TransformerLens's demo: 113)
TRAIN_FRACTION = 0.5  # (demo: 0.3)


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs ``a, b < P`` as ``[a, b, =]`` token rows, split into train and test."""
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).T
    tokens = torch.stack([a, b, torch.full_like(a, P)], dim=1)  # token P is "="
    labels = (a + b) % P
    order = torch.randperm(P * P, generator=torch.Generator().manual_seed(seed))
    cut = int(TRAIN_FRACTION * P * P)
    train, test = order[:cut], order[cut:]
    return tokens[train], labels[train], tokens[test], labels[test]


def make_model(seed: int = 999) -> HookedTransformer:
    """TransformerLens's grokking model, a quarter as wide: 1 layer, no LayerNorm, ReLU MLP."""
    cfg = HookedTransformerConfig(
        n_layers=1,
        n_heads=4,
        d_model=32,  # (demo: 128)
        d_head=8,
        d_mlp=128,  # (demo: 512)
        act_fn="relu",
        normalization_type=None,
        d_vocab=P + 1,
        d_vocab_out=P,
        n_ctx=3,
        seed=seed,
        device="cpu",
    )
    return HookedTransformer(cfg)


def loss_fn(model: HookedTransformer, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer, read at the ``=`` position."""
    logits = model(tokens)[:, -1].float()
    return F.cross_entropy(logits, labels)


def train(
    steps: int = 4500, log_every: int = 50, lr: float = 3e-3, weight_decay: float = 1.0
) -> dict:
    """Full-batch AdamW with strong weight decay (the demo's optimiser; lr 1e-3 there)."""
    model = make_model()
    train_x, train_y, test_x, test_y = make_data()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    history: dict = {"step": [], "train": [], "test": []}
    start = time.perf_counter()
    for step in range(steps + 1):
        loss = loss_fn(model, train_x, train_y)
        if step % log_every == 0:
            with torch.no_grad():
                test_loss = loss_fn(model, test_x, test_y).item()
            history["step"].append(step)
            history["train"].append(loss.item())
            history["test"].append(test_loss)
        if step == steps:
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    history["seconds"] = time.perf_counter() - start
    history["model"] = model
    return history


def steps_to(history: dict, key: str, threshold: float) -> int | None:
    """The first logged step where ``history[key]`` falls below ``threshold``."""
    return next((s for s, v in zip(history["step"], history[key]) if v < threshold), None)


def fourier_norms(model: HookedTransformer) -> torch.Tensor:
    """Norm of each frequency ``k`` of the embedding of the numbers ``0..P-1``.

    The Fourier basis over ``Z_P`` is ``cos(2πkx/P)``, ``sin(2πkx/P)`` for ``k = 1..(P-1)/2``;
    a model that computes ``a + b mod P`` by trigonometric identities embeds its numbers in a few
    of them.
    """
    x = torch.arange(P, dtype=torch.float64)
    k = torch.arange(1, (P - 1) // 2 + 1, dtype=torch.float64)[:, None]
    cos, sin = torch.cos(2 * torch.pi * k * x / P), torch.sin(2 * torch.pi * k * x / P)
    w_e = model.W_E[:P].detach().double()  # [P, d_model]
    w_e = w_e - w_e.mean(0)
    coefficients = torch.stack([cos @ w_e, sin @ w_e]) * (2 / P) ** 0.5  # [2, k, d_model]
    return coefficients.pow(2).sum((0, 2)).sqrt()  # [k]


def plot(history: dict, norms: torch.Tensor, out_dir: Path) -> list[Path]:
    """Loss curves (log scale) and the embedding's Fourier spectrum, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(history["step"], history["train"], label="train")
    ax.plot(history["step"], history["test"], label="test")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"Modular addition mod {P}: memorisation, then grokking")
    ax.legend()
    fig.tight_layout()
    loss_png = out_dir / "grokking_loss.png"
    fig.savefig(loss_png, dpi=100)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(1, len(norms) + 1), norms.numpy())
    ax.set_xlabel("frequency k")
    ax.set_ylabel("‖W_E component‖")
    ax.set_title("Embedding in the Fourier basis: a few key frequencies")
    fig.tight_layout()
    fourier_png = out_dir / "grokking_fourier.png"
    fig.savefig(fourier_png, dpi=100)
    plt.close("all")
    return [loss_png, fourier_png]


def main(out_dir: Path, steps: int = 4500) -> dict:
    """Train, analyse and plot; return the numbers the tutorial reports."""
    history = train(steps)
    norms = fourier_norms(history["model"])
    top = norms.pow(2).sort(descending=True).values
    images = plot(history, norms, out_dir)
    result = {
        "memorised_at": steps_to(history, "train", 0.01),
        "generalised_at": steps_to(history, "test", 0.01),
        "final_train_loss": history["train"][-1],
        "final_test_loss": history["test"][-1],
        "top5_fourier_share": float(top[:5].sum() / top.sum()),
        "seconds": history["seconds"],
        "history": history,
        "images": images,
    }
    print(
        f"memorised (train loss < 0.01) at step {result['memorised_at']}, generalised (test loss "
        f"< 0.01) at step {result['generalised_at']}; final test loss "
        f"{result['final_test_loss']:.2e}; 5 of {len(norms)} frequencies hold "
        f"{result['top5_fourier_share']:.0%} of the embedding; {result['seconds']:.0f}s"
    )
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")

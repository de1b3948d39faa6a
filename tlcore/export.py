"""Export back to an HF checkpoint folder, through the spec's weight map run in reverse.

Loading runs each weight rule forward: checkpoint tensors → ops → TransformerLens-named
parameters. Every element-moving op (``transpose``, ``in_heads``, ``chunk``, ``rearrange``,
``grouped_qkv``, ...) only moves elements, so the same rules run on *index* tensors (each
checkpoint tensor filled with the global positions of its elements) say where every parameter
element came from; export writes each parameter's values back to those positions. No op needs a
hand-written inverse, fused and interleaved layouts included.

What is exact, and what is refused (:class:`~tlcore.errors.ExportError`):

- An unprocessed model exports to the checkpoint it was loaded from (same tensors).
- A processed model exports to an equivalent checkpoint wherever that is exact: folded norms
  become identity norms (HF's initial weight/bias), folded or centred weights are written as they
  are. ``transformers`` then gives the *processed* model's logits (``center_unembed`` shifts each
  position's logits by a constant; the probabilities are unchanged).
- Refused: a config written by hand (no weight map), a model cut to its first layers, an op that
  does not only move elements (``scale``, ``add``, ``matmul``), a non-zero parameter with no
  place in the checkpoint (a folded LayerNorm bias on a model whose projections have no bias),
  and tied checkpoint tensors given different values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tlcore.errors import ExportError
from tlcore.loading.weight_map import (
    ZERO_DEFAULT_PARAMS,
    MappingReport,
    _parse_op,
    iter_mapped_tensors,
)
from tlcore.loading.weight_ops import ELEMENT_MOVING_OPS


def _hf_model(cfg: Any, device: str | torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg.hf_config, dtype=cfg.dtype)


def _check_exportable(model: Any) -> None:
    cfg, plan = model.cfg, model.plan
    if plan.weights is None or cfg.hf_config is None:
        raise ExportError(
            "this model has no HF checkpoint layout (it was built from a config written by hand, "
            "not loaded from a checkpoint): there is no weight map to reverse"
        )
    if plan.weights.checkpoint_layers not in (None, cfg.n_layers):
        raise ExportError(
            f"the model keeps {cfg.n_layers} of the checkpoint's {plan.weights.checkpoint_layers} "
            "layers (first_n_layers): its HF config describes the whole model"
        )
    params = {name.replace("._", ".") for name, _ in model.named_parameters()}
    for rule in plan.weights.spec.weights:
        if not any(_matches(target, params) for target in rule.to):
            continue
        for source in rule.sources():
            for op in source.ops:
                name = _parse_op(op)[0]
                fn = plan.weights.ops.get(name)
                if fn not in ELEMENT_MOVING_OPS and not getattr(fn, "moves_elements_only", False):
                    raise ExportError(
                        f"weight rule to {rule.to[0]} uses op '{name}', which does not only move "
                        "elements: it has no exact reverse"
                    )


def _matches(template: str, names: set[str]) -> bool:
    if "{" not in template:
        return template in names
    prefix, _, rest = template.partition("{i}")
    suffix = rest.split("}", 1)[-1] if "{e}" in rest else rest
    return any(n.startswith(prefix) and n.endswith(suffix) for n in names)


def hf_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The HF state dict that loads back into ``model`` (the inverse of its weight map).

    Args:
        model: A ``HookedTransformer`` loaded from a checkpoint (``from_pretrained``).

    Returns:
        HF key → tensor, for every checkpoint key a weight rule fills (buffers and folded norms
        are left out: HF's initial values are the identity).

    Raises:
        ExportError: See the module docstring.
    """
    _check_exportable(model)
    shapes = {k: tuple(v.shape) for k, v in _hf_model(model.cfg, "meta").state_dict().items()}
    offsets, total = {}, 0
    for key, shape in shapes.items():
        offsets[key] = total
        total += int(torch.Size(shape).numel())

    def read(key: str) -> torch.Tensor:
        n = int(torch.Size(shapes[key]).numel())
        return torch.arange(offsets[key], offsets[key] + n, dtype=torch.int64).reshape(shapes[key])

    params = {k: v for k, v in model.state_dict().items() if k in dict(model.named_parameters())}
    aliases = {name.replace("._", "."): name for name in params if "._" in name}
    targets = {name: tuple(p.shape) for name, p in params.items()}
    targets.update({alias: targets[real] for alias, real in aliases.items()})
    flat = torch.zeros(total, dtype=model.cfg.dtype)
    written = torch.zeros(total, dtype=torch.int8)
    consumed: set[str] = set()
    report = MappingReport()
    for name, index in iter_mapped_tensors(model.plan.weights, set(shapes), read, targets, report):
        real = aliases.get(name, name)
        if index.dtype != torch.int64 or (index.numel() and not 0 <= int(index.min())):
            raise ExportError(f"{real}: its weight rule's ops do not only move elements")
        value = params[real].detach().to("cpu", model.cfg.dtype).reshape(-1)
        index = index.reshape(-1)
        if bool((written[index] > 0).any()) or index.unique().numel() != index.numel():
            raise ExportError(f"{real}: its weight rule writes a checkpoint element twice")
        flat[index] = value
        written[index] = 1
        consumed.add(real)
    if report.errors or report.mis_shaped:
        raise ExportError("; ".join(report.errors + report.mis_shaped))
    for name, param in params.items():
        leaf = name.rpartition(".")[2]
        if name not in consumed and not (leaf in ZERO_DEFAULT_PARAMS and not param.any()):
            raise ExportError(
                f"{name} has no place in the HF checkpoint (the checkpoint has no such tensor) and "
                "is not zero: this model cannot be exported exactly"
            )
    out = {}
    for key, shape in shapes.items():
        n = int(torch.Size(shape).numel())
        if bool(written[offsets[key] : offsets[key] + n].any()):
            out[key] = flat[offsets[key] : offsets[key] + n].reshape(shape).clone()
    return out


def save_pretrained_hf(model: Any, path: str | Path, save_tokenizer: bool = True) -> Path:
    """Write ``model`` as an HF checkpoint folder that ``transformers`` loads with its logits.

    Args:
        model: A ``HookedTransformer`` loaded from a checkpoint.
        path: The folder (created).
        save_tokenizer: Also save ``model.tokenizer`` there, when it has one.

    Returns:
        The folder.

    Raises:
        ExportError: See the module docstring.
    """
    state = hf_state_dict(model)
    hf = _hf_model(model.cfg, "cpu")
    missing = set(state) - set(hf.state_dict())
    if missing:
        raise ExportError(f"the HF model has no tensors {sorted(missing)}")
    hf.load_state_dict(state, strict=False)
    loaded = hf.state_dict()
    for key, tensor in state.items():
        if not torch.equal(loaded[key], tensor):  # a tied tensor overwritten by its twin
            raise ExportError(
                f"{key}: the checkpoint ties it to another tensor that the model holds with "
                "different values (e.g. W_U no longer equals W_E.T)"
            )
    path = Path(path)
    hf.save_pretrained(path)
    if save_tokenizer and getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save_pretrained(path)
    return path

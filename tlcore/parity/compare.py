"""Compare a tlcore model with its HuggingFace reference: logits, log-probs and every layer.

``compare_spec`` builds the HF model of a spec's tiny test config, fills it from tlcore's own
seeded generator, writes it with ``save_pretrained``, loads it back through tlcore's real loader
and compares on a fixed token batch. On a mismatch the result names the first diverging layer and
the first diverging hook inside it.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import nn

from tlcore.spec.schema import ArchitectureSpec

DEFAULT_ATOL = 1e-4
TOKEN_SEED = 0
BATCH_SHAPE = (2, 12)
"""The parity batch: long enough for the test configs' sliding windows, small for snapshots."""


@dataclass
class ParityResult:
    """Outcome of one comparison (all diffs are max absolute differences, fp32).

    ``first_divergence`` describes where tlcore and HF first disagree; ``first_hook`` is the exact
    TransformerLens hook name there (``blocks.0.attn.hook_q``), or a coarser place
    (``blocks.0``, ``unembed``) when no finer hook could be compared. ``error`` is set when the
    case could not run at all (the spec does not build, the checkpoint does not load).
    """

    spec: str
    variant: str | None
    ok: bool
    logits_max_diff: float
    logprobs_max_diff: float | None = None
    processed_logprobs_max_diff: float | None = None
    layer_max_diffs: list[float] = field(default_factory=list)
    embed_max_diff: float | None = None
    first_divergence: str | None = None
    atol: float = DEFAULT_ATOL
    message: str = ""
    first_hook: str | None = None
    error: str | None = None
    spec_hash: str | None = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """``spec`` or ``spec/variant``."""
        return case_label(self.spec, self.variant)

    @property
    def status(self) -> str:
        """``ok``, ``fail`` (numbers differ) or ``error`` (the case did not run)."""
        if self.error is not None:
            return "error"
        return "ok" if self.ok else "fail"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (NaN diffs become None).

        Returns:
            The fields plus ``name`` and ``status``.
        """
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        out["name"], out["status"] = self.name, self.status
        return out


def case_label(spec: str, variant: str | None) -> str:
    """The printed name of a case.

    Args:
        spec: Spec name.
        variant: Test variant or None.

    Returns:
        ``spec`` or ``spec/variant``.

    Example:
        >>> case_label("llama", "mha"), case_label("gpt2", None)
        ('llama/mha', 'gpt2')
    """
    return f"{spec}/{variant}" if variant else spec


def parity_tokens(
    d_vocab: int, batch: int = BATCH_SHAPE[0], pos: int = BATCH_SHAPE[1], seed: int = TOKEN_SEED
) -> Int[torch.Tensor, "batch pos"]:
    """The fixed token batch parity runs on (long enough for the test configs' sliding windows).

    Args:
        d_vocab: Vocabulary size.
        batch: Batch size.
        pos: Sequence length.
        seed: Seed.

    Returns:
        ``[batch, pos]`` token ids.

    Example:
        >>> parity_tokens(100, 1, 4).shape
        torch.Size([1, 4])
    """
    return torch.randint(0, d_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


# -- HF side: capture module inputs/outputs --------------------------------------------------------

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe")
_O_PROJ_NAMES = ("o_proj", "dense", "out_proj", "c_proj", "o")
_DOWN_PROJ_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


def _decoder_layers(hf_model: nn.Module, n_layers: int) -> nn.ModuleList:
    lists = [
        m
        for _, m in hf_model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == n_layers
    ]
    if not lists:
        raise RuntimeError(f"cannot find the HF model's list of {n_layers} decoder layers")
    return lists[0]


def _child(module: nn.Module | None, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        sub = getattr(module, name, None) if module is not None else None
        if isinstance(sub, nn.Module):
            return sub
    return None


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("hidden_states", kwargs.get("input"))
    return value if isinstance(value, torch.Tensor) else None


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def _capture(
    targets: dict[str, tuple[nn.Module, str]],
) -> Iterator[dict[str, torch.Tensor]]:
    """Record ``input`` or ``output`` tensors of HF submodules while the block runs."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for key, (module, which) in targets.items():
        if which == "input":

            def pre(mod: nn.Module, args: Any, kwargs: Any, key: str = key) -> None:
                value = _first_tensor(args, kwargs)
                if value is not None:
                    # Cloned: HF layers may update a module's output in place afterwards
                    # (Falcon adds attention into the MLP output with +=).
                    captured[key] = value.detach().clone()

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(mod: nn.Module, args: Any, output: Any, key: str = key) -> None:
                captured[key] = _output_tensor(output).detach().clone()

            handles.append(module.register_forward_hook(post))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _hf_layer_io(
    hf_model: nn.Module, n_layers: int, tokens: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """Run HF: the first layer's input, every layer's output, logits and ``lm_head``'s input."""
    layers = _decoder_layers(hf_model, n_layers)
    targets = {"in": (layers[0], "input")}
    targets.update({f"out{i}": (layer, "output") for i, layer in enumerate(layers)})
    get_head = getattr(hf_model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, nn.Module):
        targets["head_in"] = (head, "input")
    with _capture(targets) as captured, torch.no_grad():
        logits = hf_model(tokens).logits
    return (
        captured["in"],
        [captured[f"out{i}"] for i in range(n_layers)],
        logits,
        captured.get("head_in"),
    )


# -- divergence location --------------------------------------------------------------------------


@dataclass
class _Probe:
    """One comparable point inside a layer: a tlcore hook and the HF tensor it must equal."""

    hook: str
    hf_module: nn.Module
    which: str  # "input" or "output" of hf_module


def _layer_probes(model: Any, hf_layer: nn.Module, layer: int) -> list[_Probe]:
    """The hooks of one block that have an HF counterpart, in forward order.

    Only pairs that mean the same thing in both libraries are listed, so that a correct model never
    shows a false divergence (the parity tests check this on every spec): branch outputs are
    compared only where tlcore's ``hook_attn_out``/``hook_mlp_out`` sit before any post-norm, and
    q/k/v only where no qk-norm or clamp runs between HF's projection and tlcore's hook.
    """
    cfg = model.cfg
    block = model.blocks[layer]
    kind = getattr(cfg.traits.get("block"), "kind", "pre_norm")
    prefix = f"blocks.{layer}"
    attn, mlp = _child(hf_layer, _ATTN_NAMES), _child(hf_layer, _MLP_NAMES)
    probes: list[_Probe] = []
    # TransformerLens's RMSNorm hooks ``hook_normalized`` before the weight, LayerNorm after it:
    # only a LayerNorm's hook equals the HF branch input.
    norm_kind = getattr(cfg.traits.get("norm"), "kind", None)
    ln_hooked = norm_kind == "layernorm"
    pre_norm_attn = kind in ("pre_norm", "parallel", "sandwich") and getattr(block, "ln1", None)
    if attn is not None and pre_norm_attn and ln_hooked:
        probes.append(_Probe(f"{prefix}.ln1.hook_normalized", attn, "input"))
    tl_attn = block.attn
    plain_qkv = (
        getattr(tl_attn, "q_norm", None) is None
        and getattr(getattr(tl_attn, "trait", None), "clip_qkv", None) is None
    )
    for letter in "qkv":
        proj = _child(attn, (f"{letter}_proj",))
        if proj is not None and plain_qkv:
            probes.append(_Probe(f"{prefix}.attn.hook_{letter}", proj, "output"))
    o_proj = _child(attn, _O_PROJ_NAMES)
    if o_proj is not None:
        probes.append(_Probe(f"{prefix}.attn.hook_z", o_proj, "input"))
    branch_outputs = kind in ("pre_norm", "parallel", "post_norm")
    # The output projection, not the attention module: some HF attention modules add the
    # residual themselves (BLOOM), so their output is not a branch output.
    attn_out = o_proj if o_proj is not None else attn
    if attn_out is not None and branch_outputs:
        probes.append(_Probe(f"{prefix}.hook_attn_out", attn_out, "output"))
    mlp_norm = {"pre_norm": "ln2", "sandwich": "ln2"}.get(kind)
    if kind == "parallel":
        mlp_norm = "ln2" if getattr(block, "ln2", None) is not None else "ln1"
    if mlp is not None and mlp_norm and ln_hooked and getattr(block, mlp_norm, None) is not None:
        probes.append(_Probe(f"{prefix}.{mlp_norm}.hook_normalized", mlp, "input"))
    down = _child(mlp, _DOWN_PROJ_NAMES) if not cfg.num_experts else None
    if down is not None:
        probes.append(_Probe(f"{prefix}.mlp.hook_post", down, "input"))
    mlp_out = down if down is not None else mlp
    if mlp_out is not None and branch_outputs:
        probes.append(_Probe(f"{prefix}.hook_mlp_out", mlp_out, "output"))
    return probes


def probe_layer(
    model: Any, hf_model: nn.Module, tokens: Int[torch.Tensor, "batch pos"], layer: int
) -> list[tuple[str, float]]:
    """Compare every hook of one block that has an HF counterpart.

    Args:
        model: An unprocessed tlcore model.
        hf_model: Its HF reference.
        tokens: ``[batch, pos]`` tokens.
        layer: Block index.

    Returns:
        ``(hook name, max abs diff)`` in forward order (heads flattened to match HF's layout).
    """
    hf_layer = _decoder_layers(hf_model, model.cfg.n_layers)[layer]
    probes = _layer_probes(model, hf_layer, layer)
    names = [p.hook for p in probes]
    targets = {p.hook: (p.hf_module, p.which) for p in probes}
    with _capture(targets) as captured, torch.no_grad():
        hf_model(tokens)
        _, cache = model.run_with_cache(tokens, names_filter=names)
    out = []
    for name in names:
        if name not in captured or name not in cache.cache_dict:
            continue
        ours, ref = cache[name], captured[name]
        if ours.dim() == 4 and ref.dim() == 3:  # [batch, pos, head, d_head] vs [batch, pos, h*d]
            ours = ours.flatten(-2)
        if ours.shape != ref.shape:
            continue
        out.append((name, float((ours - ref).abs().max())))
    return out


def compare_model(
    model: Any,
    hf_model: nn.Module,
    tokens: Int[torch.Tensor, "batch pos"],
    atol: float = DEFAULT_ATOL,
    spec_name: str = "?",
    variant: str | None = None,
) -> ParityResult:
    """Compare an unprocessed tlcore model with an HF model on ``tokens``.

    Args:
        model: A :class:`tlcore.HookedTransformer` loaded without processing.
        hf_model: The HF reference (fp32, eager attention).
        tokens: ``[batch, pos]`` tokens.
        atol: Tolerance on logits and residual streams.
        spec_name: For the report.
        variant: For the report.

    Returns:
        The result (``ok`` false names the first diverging layer and hook).
    """
    return _compare_model(model, hf_model, tokens, atol, spec_name, variant)[0]


def _compare_model(
    model: Any,
    hf_model: nn.Module,
    tokens: torch.Tensor,
    atol: float,
    spec_name: str,
    variant: str | None,
) -> tuple[ParityResult, torch.Tensor]:
    """:func:`compare_model`, also returning tlcore's logits (for snapshots)."""
    n_layers = model.cfg.n_layers
    hf_in, hf_out, hf_logits, hf_head_in = _hf_layer_io(hf_model, n_layers, tokens)
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_normalized"]
    names += [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    names = [n for n in names if n in model.hook_dict]  # post-norm models have no ln_final
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    embed_diff = float((cache["blocks.0.hook_resid_pre"] - hf_in).abs().max())
    layer_diffs = [
        float((cache[f"blocks.{i}.hook_resid_post"] - hf_out[i]).abs().max())
        for i in range(n_layers)
    ]
    logit_diff = float((logits - hf_logits).abs().max())
    logprob_diff = float((logits.log_softmax(-1) - hf_logits.log_softmax(-1)).abs().max())
    first, hook = None, None
    if embed_diff > atol:
        hook = "blocks.0.hook_resid_pre"
        first = f"{hook} (embedding; max diff {embed_diff:.3g})"
    else:
        for i, diff in enumerate(layer_diffs):
            if diff > atol:
                inner = [(n, d) for n, d in probe_layer(model, hf_model, tokens, i) if d > atol]
                if inner:
                    hook = inner[0][0]
                    first = (
                        f"{hook} (max diff {inner[0][1]:.3g}; "
                        f"blocks.{i}.hook_resid_post max diff {diff:.3g})"
                    )
                else:
                    hook = f"blocks.{i}.hook_resid_post"
                    first = f"{hook} (max diff {diff:.3g}; no finer hook located)"
                break
    if first is None and logit_diff > atol:
        final = "ln_final.hook_normalized"
        ours_final = cache.cache_dict.get(final)
        try:
            final_kind = getattr(model.cfg.trait("final_norm"), "kind", None)
        except KeyError:
            final_kind = None
        if (
            final_kind == "layernorm"  # RMSNorm's hook_normalized precedes its weight
            and hf_head_in is not None
            and ours_final is not None
            and ours_final.shape == hf_head_in.shape
            and float((ours_final - hf_head_in).abs().max()) > atol
        ):
            hook = final
            first = f"{final} (max diff {float((ours_final - hf_head_in).abs().max()):.3g})"
        else:
            hook = "unembed"
            first = f"unembed (logits max diff {logit_diff:.3g})"
    ok = first is None
    label = case_label(spec_name, variant)
    message = "ok" if ok else f"{label}: first divergence at {first}"
    result = ParityResult(
        spec_name,
        variant,
        ok,
        logit_diff,
        logprob_diff,
        None,
        layer_diffs,
        embed_diff,
        first,
        atol,
        message,
        first_hook=hook,
    )
    return result, logits.detach()


# -- spec-level comparison -----------------------------------------------------------------------


@contextlib.contextmanager
def resolving_to(spec: ArchitectureSpec) -> Iterator[str]:
    """Make checkpoint resolution pick ``spec``, registering it for the duration if needed.

    A spec registered under its own name with identical content is used as it is, so the real
    resolution path (``hf.model_types``, ``hf.match``, priorities) is what gets tested. Any other
    spec (an unregistered object, a modified copy) is registered through a temporary plugin, with
    a priority above every registered spec, that also answers ``resolve_hf_config`` with it; the
    plugin and its registrations are undone afterwards (``manager.scoped()``).

    Args:
        spec: The spec to load checkpoints with.

    Yields:
        The registered name that checkpoints resolve to.
    """
    from tlcore.plugins.hookspecs import hookimpl
    from tlcore.plugins.manager import get_manager

    manager = get_manager()
    registry = manager.registry
    same = False
    if spec.name in registry.specs:
        try:
            same = registry.get_spec(spec.name).content_hash() == spec.content_hash()
        except Exception:  # noqa: BLE001 - a broken registered spec: use the given one instead
            same = False
    if same:
        yield spec.name
        return
    temp_name = f"_parity_{spec.name}_{spec.content_hash()}"
    # A higher priority than any registered spec: the manager refuses two specs that claim the
    # same HF model type with equal priority, and resolution must pick this one.
    top = max((registry.get_spec(n).hf.priority for n in registry.spec_names()), default=0)
    hf_match = spec.hf.model_copy(update={"priority": max(top, spec.hf.priority) + 1})
    doc = spec.model_copy(update={"name": temp_name, "extends": None, "hf": hf_match})

    class _ParityPlugin:
        @hookimpl
        def register_specs(self, register: Any) -> None:
            register.spec(doc, override=True)

        @hookimpl
        def resolve_hf_config(self, hf_config: dict[str, Any]) -> str | None:
            return temp_name

    with manager.scoped():
        with registry.builtin_replacement(True):  # the caller asked for this spec explicitly
            record = manager.add_plugin(_ParityPlugin(), f"tlcore-parity:{temp_name}")
        if record.error or temp_name not in manager.registry.specs:
            from tlcore.errors import SpecError

            raise SpecError(f"spec '{spec.name}' cannot be registered: {record.error}")
        yield temp_name


def _resolve_spec(spec: ArchitectureSpec | str) -> ArchitectureSpec:
    from tlcore.registry import get_registry

    return get_registry().get_spec(spec) if isinstance(spec, str) else spec


@dataclass
class CaseRun:
    """Everything one tiny-checkpoint run produced (the parity tool shares it across outputs)."""

    result: ParityResult
    tokens: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_case(
    spec: ArchitectureSpec | str,
    variant: str | None = None,
    *,
    hf: bool = True,
    processed: bool = True,
    atol: float | None = None,
    seed: int | None = None,
    tokens: torch.Tensor | None = None,
    workdir: str | Path | None = None,
    attn_implementation: str | None = None,
    inspect: Callable[[Any, torch.Tensor], dict[str, Any]] | None = None,
) -> CaseRun:
    """Build a spec's tiny checkpoint once and derive everything the parity tool needs from it.

    Args:
        spec: A spec or an architecture name.
        variant: A named test variant.
        hf: Run the HF forward and compare (otherwise only tlcore's logits are produced).
        processed: Also compare the processed model's log-softmax (needs ``hf``).
        atol: Tolerance (default: the spec's ``parity.atol``).
        seed: Weight-fill seed (default :data:`tlcore.testing.tiny.DEFAULT_SEED`).
        tokens: Token batch (default: :func:`parity_tokens`).
        workdir: Where to write the checkpoint (default: a temporary folder).
        attn_implementation: HF reference attention (default: the spec's ``parity`` settings).
        inspect: ``inspect(model, tokens) -> dict`` called on the loaded unprocessed model; its
            answer is returned in ``extra``.

    Returns:
        The run (``result.ok`` is true when ``hf`` is false and the model ran).

    Raises:
        SpecError: If the spec's own test config resolves to a different spec.
    """
    from tlcore.errors import SpecError
    from tlcore.model import HookedTransformer
    from tlcore.testing.tiny import DEFAULT_SEED, save_tiny_checkpoint

    start = time.perf_counter()
    spec = _resolve_spec(spec)
    atol = spec.parity.atol if atol is None else atol
    attn_implementation = attn_implementation or spec.parity.attn_for(variant)
    seed = DEFAULT_SEED if seed is None else seed
    with contextlib.ExitStack() as stack:
        folder = (
            Path(workdir)
            if workdir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlcore-parity-")))
        )
        _, hf_model = save_tiny_checkpoint(
            spec, folder, variant, seed, attn_implementation=attn_implementation
        )
        expected = stack.enter_context(resolving_to(spec))
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
        if model.cfg.spec_name != expected:
            raise SpecError(
                f"spec '{spec.name}': the test config of {case_label(spec.name, variant)} "
                f"resolves to spec '{model.cfg.spec_name}' (check hf.match / hf.priority)"
            )
        tokens = parity_tokens(model.cfg.d_vocab) if tokens is None else tokens
        if hf:
            result, _ = _compare_model(model, hf_model, tokens, atol, spec.name, variant)
        else:
            result = ParityResult(spec.name, variant, True, float("nan"), atol=atol, message="ok")
        # Snapshots store a plain forward (not run_with_cache's logits): writing and checking
        # must take the same numerical path, which differs from the cached one by fp32 noise.
        with torch.no_grad():
            logits = model(tokens).detach()
        if hf and processed:
            # Processing is exact maths; float64 shows that without fp32 summation noise, which
            # alone reaches ~1e-4 in log-probs for large-logit specs (Gemma's sqrt(d) embedding).
            processed_model = HookedTransformer.from_pretrained(
                str(folder), device="cpu", dtype=torch.float64
            )
            with torch.no_grad():
                ours = processed_model(tokens).log_softmax(-1)
                ref = hf_model.to(torch.float64)(tokens).logits.log_softmax(-1)
            diff = float((ours - ref).abs().max())
            result.processed_logprobs_max_diff = diff
            if diff > atol and result.ok:
                result.ok = False
                result.first_hook = "weight processing"
                result.first_divergence = (
                    f"weight processing (processed log-softmax max diff {diff:.3g})"
                )
                result.message = f"{result.name}: {result.first_divergence}"
        extra = inspect(model, tokens) if inspect is not None else {}
    result.spec_hash = spec.content_hash()
    result.seconds = time.perf_counter() - start
    return CaseRun(result, tokens, logits, extra)


def compare_spec(
    spec: ArchitectureSpec | str,
    variant: str | None = None,
    atol: float | None = None,
    workdir: str | Path | None = None,
    processed: bool = True,
    seed: int | None = None,
    attn_implementation: str | None = None,
) -> ParityResult:
    """Prove a spec against HF on its tiny test config, through tlcore's real loading path.

    A spec object that is not registered (or differs from the registered one of its name) is
    registered for the duration of the check, so plugin authors and mutation tests can check a spec
    before shipping it.

    Args:
        spec: A spec or an architecture name.
        variant: A named test variant.
        atol: Tolerance (default: the spec's ``parity.atol``, 1e-4).
        workdir: Where to write the checkpoint (default: a temporary folder).
        processed: Also compare the processed model's log-softmax (``from_pretrained`` defaults).
        seed: Weight-fill seed.
        attn_implementation: HF reference attention (default: the spec's ``parity`` settings).

    Returns:
        The result.
    """
    return run_case(
        spec,
        variant,
        hf=True,
        processed=processed,
        atol=atol,
        seed=seed,
        workdir=workdir,
        attn_implementation=attn_implementation,
    ).result

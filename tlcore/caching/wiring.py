"""How the cache's analysis reads a model: through the blocks' declared wiring, never kind names.

Every decomposition asks the block (``block.wiring``, a
:class:`~tlcore.components.wiring.BlockWiring`) which norm reads the residual stream into each
branch, which post-norm sits between a branch and its output hook, which residual a branch reads
and how its output hook's value enters the stream; and asks each norm (a
:class:`~tlcore.components.norms.Norm`) whether it centres and what its weight and bias are. A
plugin's block layout or norm that declares these gets every analysis method.

A component's *contribution* is exactly what the residual stream receives from it. In a pre-norm
or parallel block that is the branch output itself. Where the block normalises a branch before
its output hook (sandwich: Gemma 2/3; post_only: OLMo-2) the branch's pieces (heads, neurons,
biases) are mapped through that post-norm with its cached scale (``hook_scale``), which is linear
once the scale is fixed; a branch's ``to_resid`` maps (a residual multiplier, a learned gate) are
linear too. The pieces then sum exactly to what was added, with the same frozen-scale convention
``apply_ln_to_stack`` uses.
"""

from __future__ import annotations

from typing import Any

import torch

from tlcore.caching.storage import CacheStorage
from tlcore.components.residual_io import ResidualIO
from tlcore.components.wiring import BlockWiring, Branch
from tlcore.errors import HookNameError, UnsupportedConfigError
from tlcore.utils.slicing import Slice, SliceInput


class WiringReader(CacheStorage):
    """The cache's view of the model's declarations (helpers shared by the analysis methods)."""

    def _cfg(self) -> Any:
        cfg = getattr(self.model, "cfg", None)
        if cfg is None:
            raise ValueError("This analysis needs the cache's model (cache.model is None)")
        return cfg

    def _input_layer(self, layer: int | None) -> int:
        """``layer`` as an input index in ``[0, n_layers]``; None and -1 mean ``n_layers``."""
        n_layers = self._cfg().n_layers
        if layer is None or layer == -1:
            return n_layers
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layer must be in [0, {n_layers}] (or -1/None), got {layer}")
        return layer

    def _check_mlp_input(self, layer: int, mlp_input: bool) -> None:
        if mlp_input and layer == self._cfg().n_layers:
            raise ValueError("mlp_input=True needs a block's layer (< n_layers), not the unembed")

    def _wiring(self, layer: int) -> BlockWiring:
        """The wiring block ``layer`` declares."""
        block = self.model.blocks[layer]
        wiring = getattr(block, "wiring", None)
        if not isinstance(wiring, BlockWiring):
            raise UnsupportedConfigError(
                f"ActivationCache analysis needs block {layer} ({type(block).__name__}) to "
                f"declare its wiring (a BlockWiring as block.wiring)"
            )
        return wiring

    def _branches(self, layer: int, mode: str = "all") -> list[Branch]:
        """The branches of a block that ``mode`` selects (``all`` or a branch name)."""
        attn_only = self._cfg().attn_only
        return [
            b
            for b in self._wiring(layer).branches
            if mode in ("all", b.name) and not (attn_only and b.name == "mlp")
        ]

    def _mlp_reads_mid(self, layer: int) -> bool:
        """Whether the MLP of ``layer`` reads ``resid_mid`` (so earlier branches feed it)."""
        return bool(self._wiring(layer).mlp_input_branches())

    def _require_additive(self, method: str) -> None:
        for layer in range(self._cfg().n_layers):
            if not self._wiring(layer).additive:
                raise UnsupportedConfigError(
                    f"{method}: block {layer} renormalises the residual stream after an add "
                    f"(post-norm layout), so it is not a sum of component outputs; use "
                    f"accumulated_resid or the cached activations directly"
                )

    def _reader_norm(self, layer: int, mlp_input: bool) -> tuple[str, Any] | None:
        """(hook prefix, module) of the norm reading the residual stream at ``layer``, or None."""
        if layer == self._cfg().n_layers:
            norm = getattr(self.model, "ln_final", None)
            return None if norm is None else ("ln_final", norm)
        wiring = self._wiring(layer)
        branch = wiring.branch("mlp") if mlp_input else wiring.branches[0]
        if branch is None or branch.norm is None:
            return None
        norm = getattr(self.model.blocks[layer], branch.norm, None)
        return None if norm is None else (f"blocks.{layer}.{branch.norm}", norm)

    @staticmethod
    def _centres(norm: Any) -> bool:
        """Whether a norm subtracts the mean (its declaration)."""
        centres = getattr(norm, "centres", None)
        if not isinstance(centres, bool):
            raise UnsupportedConfigError(
                f"norm {type(norm).__name__} does not declare whether it centres (subclass "
                f"tlcore.components.norms.Norm)"
            )
        return centres

    def _cached_scale(
        self, norm_name: str, pos_slice: Slice, batch_slice: Slice | None = None
    ) -> torch.Tensor:
        """A norm's cached ``hook_scale`` ``[*batch_and_pos_dims, 1]``, sliced like the stack."""
        key = f"{norm_name}.hook_scale"
        if key not in self.cache_dict:
            raise HookNameError(
                f"'{key}' is not in this ActivationCache: normalising a stack needs the norm's "
                "cached scale (run_with_cache's names_filter may have left it out)"
            )
        scale = self.cache_dict[key]
        if scale.ndim == (3 if self.has_batch_dim else 2) + 1:
            # Split q/k/v inputs normalise one residual copy per head; the copies are equal
            # unless a hook edited them, so any one gives the stream's scale.
            scale = scale[..., 0, :]
        scale = pos_slice.apply(scale, dim=-2)
        if batch_slice is not None and self.has_batch_dim:
            scale = batch_slice.apply(scale, dim=0)
        return scale

    def _embedding_terms(self) -> list[tuple[str, str]]:
        """(cache key, label) of the embeddings added to the residual stream."""
        terms = [("hook_embed", "embed")] if self.has_embed else []
        pos_embed = getattr(self.model, "pos_embed", None)
        # Shortformer positions feed queries and keys only; they never enter the residual stream.
        if self.has_pos_embed and getattr(pos_embed, "adds_to_residual", True):
            terms.append(("hook_pos_embed", "pos_embed"))
        return terms

    def _resid_into(self, layer: int, mlp_input: bool = False) -> torch.Tensor:
        """The residual stream entering ``layer`` (its MLP with ``mlp_input``)."""
        if mlp_input and self._mlp_reads_mid(layer):
            return self[("resid_mid", layer)]
        if layer == 0 or ("resid_post", layer - 1) not in self:
            return self[("resid_pre", layer)]
        return self[("resid_post", layer - 1)]

    def _empty_stack(self, pos_slice: Slice) -> torch.Tensor:
        """A zero-component stack shaped like a residual-stream stack."""
        reference = pos_slice.apply(self[("resid_pre", 0)], dim=-2)
        return reference.new_zeros(0, *reference.shape)

    def _ensure_head_results(self, layers: Any = None) -> int:
        """Compute the missing ``hook_result`` entries; returns how many were computed."""
        cfg = self._cfg()
        computed = 0
        for index in range(cfg.n_layers) if layers is None else layers:
            key = f"blocks.{index}.attn.hook_result"
            z = self[("z", index, "attn")]
            cached = self.cache_dict.get(key)
            if cached is not None and cached.shape[:-1] == z.shape[:-1]:
                continue
            W_O = self.model.blocks[index].attn.W_O
            self.cache_dict[key] = torch.einsum("...hd,hdm->...hm", z, W_O.to(z))
            computed += 1
        return computed

    def _post_norm(self, layer: int, branch: Branch) -> tuple[str, Any] | None:
        """(hook prefix, module) of the branch's post-norm, or None."""
        if branch.post_norm is None:
            return None
        norm = getattr(self.model.blocks[layer], branch.post_norm, None)
        return None if norm is None else (f"blocks.{layer}.{branch.post_norm}", norm)

    def _branch_to_resid(
        self, x: torch.Tensor, layer: int, branch: Branch, pos_slice: Slice, pieces: bool
    ) -> torch.Tensor:
        """Map linear pieces of a branch output to what the residual stream receives from them.

        ``x`` is ``[*batch_and_pos_dims, d_model]``, or with ``pieces`` one more axis before
        ``d_model`` (heads). A post-norm acts with its cached scale (linear: the pieces' images
        sum to the image of their sum, less the norm's bias, which `_bias_to_resid` adds once).
        """
        post = self._post_norm(layer, branch)
        if post is not None:
            name, norm = post
            if self._centres(norm):
                x = x - x.mean(-1, keepdim=True)
            scale = self._cached_scale(name, pos_slice)
            x = x / (scale.unsqueeze(-2) if pieces else scale).to(x)
            weight, _ = norm.affine()
            if weight is not None:
                x = x * weight.to(x)
        return branch.into_resid(x, self.model.blocks[layer])

    def _neuron_terms(
        self, layer: int, neuron_slice: Slice, pos_slice: Slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-position activation factors ``[..., n]``, write vectors ``[n, d_model]``).

        A neuron's contribution is ``factor[..., n] * write[n]``; the factor folds in a post-norm's
        cached scale, the writes its centring and weight and the branch's ``to_resid`` maps.
        """
        block = self.model.blocks[layer]
        mlp = block.mlp
        W_out = getattr(mlp, "W_out", None)
        if not isinstance(W_out, torch.Tensor):
            raise UnsupportedConfigError(
                f"layer {layer}'s MLP ({type(mlp).__name__}) is a mixture of experts: it has no "
                "single set of neurons; use decompose_resid(mode='mlp') or "
                "get_full_resid_decomposition(expand_neurons=False)"
            )
        branch = self._wiring(layer).branch("mlp")
        assert branch is not None, "a block with an MLP declares its branch"
        acts = pos_slice.apply(self[("post", layer, "mlp")], dim=-2)
        writes = W_out.to(acts)
        post = self._post_norm(layer, branch)
        if post is not None:
            name, norm = post
            if self._centres(norm):
                writes = writes - writes.mean(-1, keepdim=True)
            weight, _ = norm.affine()
            if weight is not None:
                writes = writes * weight.to(writes)
            # Divide before slicing neurons: an int neuron_slice drops the axis the scale's
            # trailing 1 broadcasts against.
            acts = acts / self._cached_scale(name, pos_slice).to(acts)
        acts, writes = neuron_slice.apply(acts, dim=-1), neuron_slice.apply(writes, dim=0)
        return acts, branch.into_resid(writes, block)

    def _bias_to_resid(
        self, layer: int, mlp_input: bool, include_mlp_biases: bool, pos_slice: Slice
    ) -> torch.Tensor:
        """What the residual stream entering ``layer`` received from output biases.

        Each branch module declares its output bias (``b_O``, ``b_out``); without post-norms the
        sum is ``[d_model]``. Where a post-norm follows a branch, the bias goes through it with the
        cached scale (so the result is ``[*batch_and_pos_dims, d_model]``) and the post-norm's own
        bias is added.
        """
        terms = [
            (index, branch)
            for index in range(layer)
            for branch in self._branches(index)
            if branch.name != "mlp" or include_mlp_biases
        ]
        if mlp_input:
            terms += [(layer, b) for b in self._wiring(layer).mlp_input_branches()]
        total = self[("resid_pre", 0)].new_zeros(self._cfg().d_model)
        for index, branch in terms:
            block = self.model.blocks[index]
            module = getattr(block, branch.name)
            bias = module.output_bias() if isinstance(module, ResidualIO) else None
            if bias is not None:
                mapped = self._branch_to_resid(bias, index, branch, pos_slice, pieces=False)
                total = total + mapped.to(total)
            post = self._post_norm(index, branch)
            norm_bias = post[1].affine()[1] if post is not None else None
            if isinstance(norm_bias, torch.Tensor):
                total = total + branch.into_resid(norm_bias, block).to(total)
        return total


def as_slice(value: Slice | SliceInput) -> Slice:
    """``value`` as a `Slice`."""
    return value if isinstance(value, Slice) else Slice(value)


def projection_2d(project: torch.Tensor | None) -> tuple[torch.Tensor | None, bool]:
    """A ``[d_model, n]`` projection, and whether the result's last axis is squeezed after."""
    if project is None:
        return None, False
    return (project[:, None], True) if project.ndim == 1 else (project, False)

"""`ActivationCache`: the activations of one forward pass, with TransformerLens's access helpers.

`tlcore.hooks.HookedRootModule.run_with_cache` returns one. Keys are full hook names; indexing also
takes `tlcore.utils.act_names.get_act_name` shorthands and ``(name, layer[, layer_type])`` tuples,
with negative layers counted from the end.

The class holds the storage and access methods first; the analysis methods (residual-stream
decompositions, head and neuron stacks, logit attribution) follow them in the same class.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.errors import HookNameError, UnsupportedConfigError
from tlcore.utils.act_names import get_act_name
from tlcore.utils.slicing import Slice, SliceInput

logger = logging.getLogger(__name__)

CacheKey = str | tuple
"""A full hook name, a shorthand (``"pattern0"``) or a tuple ``(name, layer[, layer_type])``."""


class ActivationCache:
    """The activations of a forward pass, indexed by hook name.

    Args:
        cache_dict: Activations keyed by full hook name (gradients as ``"<name>_grad"``).
        model: The model they came from; used for ``model.cfg`` (negative layers, analysis).
            The cache keeps it alive; set ``cache.model = None`` to drop it.
        has_batch_dim: Whether activations still have their leading batch dimension.
        has_embed: Whether ``hook_embed`` was cached; None infers it from the keys.
        has_pos_embed: Whether ``hook_pos_embed`` was cached; None infers it from the keys.

    Examples:
        >>> import torch
        >>> cache = ActivationCache({"blocks.0.attn.hook_pattern": torch.ones(1, 2, 3, 3)}, None)
        >>> cache["pattern", 0].shape
        torch.Size([1, 2, 3, 3])
        >>> cache["pattern0"] is cache["blocks.0.attn.hook_pattern"]
        True
        >>> ("pattern", 0) in cache, "pattern1" in cache
        (True, False)
        >>> cache.remove_batch_dim()["blocks.0.attn.hook_pattern"].shape
        torch.Size([2, 3, 3])
    """

    def __init__(
        self,
        cache_dict: dict[str, torch.Tensor],
        model: Any,
        has_batch_dim: bool = True,
        has_embed: bool | None = None,
        has_pos_embed: bool | None = None,
    ) -> None:
        self.cache_dict = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim
        self.has_embed = "hook_embed" in cache_dict if has_embed is None else has_embed
        self.has_pos_embed = (
            "hook_pos_embed" in cache_dict if has_pos_embed is None else has_pos_embed
        )

    # ----- mapping interface -----

    def __getitem__(self, key: CacheKey) -> torch.Tensor:
        """Look up an activation by full name, shorthand or ``(name, layer[, layer_type])``.

        Args:
            key: The key; negative layers count back from ``model.cfg.n_layers``.

        Returns:
            The cached tensor.

        Raises:
            HookNameError: (a ``KeyError``) if the activation is not in this cache; the message
                lists close matches.
        """
        return self.cache_dict[self._resolve(key)]

    def __contains__(self, key: object) -> bool:
        try:
            self._resolve(key)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def keys(self) -> KeysView[str]:
        """The full hook names in the cache, in the order they were computed.

        Returns:
            A view of the keys.
        """
        return self.cache_dict.keys()

    def values(self) -> ValuesView[torch.Tensor]:
        """The cached tensors.

        Returns:
            A view of the values.
        """
        return self.cache_dict.values()

    def items(self) -> ItemsView[str, torch.Tensor]:
        """(hook name, tensor) pairs.

        Returns:
            A view of the items.
        """
        return self.cache_dict.items()

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict.keys())}"

    # ----- batch and device -----

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the batch dimension of a batch-size-1 cache, in place.

        Returns:
            This cache.

        Raises:
            ValueError: If the batch size is not 1.
        """
        if not self.has_batch_dim:
            logger.warning("Tried removing batch dimension after already having removed it.")
            return self
        batch_size = self._batch_size()
        if batch_size != 1:
            raise ValueError(
                f"Cannot remove batch dimension from cache with batch size {batch_size}"
            )
        for key, value in self.cache_dict.items():
            if value.ndim > 0 and value.size(0) == 1:
                self.cache_dict[key] = value[0]
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice: Slice | SliceInput) -> ActivationCache:
        """A new cache holding only some batch items.

        Args:
            batch_slice: Which items (see `Slice`); an int also removes the batch dimension.

        Returns:
            A new `ActivationCache` sharing the model.

        Raises:
            ValueError: If this cache has no batch dimension and the slice is not the identity.
        """
        if not isinstance(batch_slice, Slice):
            batch_slice = Slice(batch_slice)
        if not self.has_batch_dim and batch_slice.mode != "identity":
            raise ValueError("Cannot index into a cache without a batch dim")
        batch_size = self._batch_size()
        # Entries whose leading axis is not the batch (MoE routing flattens batch and position)
        # are kept whole rather than sliced along the wrong axis.
        new_cache_dict = {
            name: batch_slice.apply(value, dim=0)
            if value.ndim > 0 and value.size(0) == batch_size
            else value
            for name, value in self.cache_dict.items()
        }
        return ActivationCache(
            new_cache_dict,
            self.model,
            has_batch_dim=self.has_batch_dim and batch_slice.mode != "int",
            has_embed=self.has_embed,
            has_pos_embed=self.has_pos_embed,
        )

    def to(self, device: str | torch.device, move_model: bool = False) -> ActivationCache:
        """Move every cached tensor to a device, in place.

        Args:
            device: The target device (e.g. ``"cpu"`` to free accelerator memory).
            move_model: Also move the model (analysis methods need model and cache together).

        Returns:
            This cache.
        """
        self.cache_dict = {key: value.to(device) for key, value in self.cache_dict.items()}
        if move_model:
            self.model.to(device)
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """Turn PyTorch's autograd on or off globally (``torch.set_grad_enabled``).

        This is process-wide state, not the cache's, exactly as in TransformerLens. Prefer
        ``torch.no_grad()`` or ``torch.inference_mode()`` as a context manager.

        Args:
            mode: True enables gradients; False disables them.
        """
        logger.warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    # ----- helpers -----

    def _batch_size(self) -> int:
        """The batch size: the most common leading size among the cached tensors.

        A few entries have other leading axes (MoE routing is ``[batch * pos, ...]``); batched
        activations far outnumber them.
        """
        counts = Counter(value.size(0) for value in self.cache_dict.values() if value.ndim > 0)
        return counts.most_common(1)[0][0] if counts else 1

    def _resolve(self, key: CacheKey) -> str:
        """The full cache key for ``key``, or a `HookNameError` with close matches."""
        if isinstance(key, str):
            if key in self.cache_dict:
                return key
            name = get_act_name(key)
        elif isinstance(key, tuple) and key and isinstance(key[0], str):
            name = get_act_name(*self._absolute_layer(key))
        else:
            raise TypeError(
                f"ActivationCache keys are hook names or (name, layer[, layer_type]) tuples, "
                f"got {key!r}"
            )
        if name not in self.cache_dict:
            raise HookNameError(self._missing_message(key, name))
        return name

    def _absolute_layer(self, key: tuple) -> tuple:
        """``key`` with a negative layer index counted back from ``model.cfg.n_layers``."""
        if len(key) < 2 or not isinstance(key[1], int) or key[1] >= 0:
            return key
        cfg = getattr(self.model, "cfg", None)
        if cfg is None:
            raise ValueError(f"A negative layer in {key!r} needs the cache's model.cfg.n_layers")
        return (key[0], cfg.n_layers + key[1], *key[2:])

    def _missing_message(self, key: CacheKey, name: str) -> str:
        asked = f"{name!r}" if key == name else f"{name!r} (from {key!r})"
        close = difflib.get_close_matches(name, self.cache_dict, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return (
            f"{asked} is not in this ActivationCache ({len(self.cache_dict)} activations; "
            f"run_with_cache's names_filter or pos_slice may have left it out).{hint}"
        )

    # ----- analysis: residual-stream decompositions -----
    #
    # Conventions (TransformerLens's): ``layer`` is the block whose *input* is decomposed, and
    # None or -1 mean ``n_layers`` (the input of the unembed); ``pos_slice`` selects positions of
    # ``[..., pos, d]`` activations (an int drops the position dimension); stacks put the
    # component axis first.
    #
    # A component's *contribution* is exactly what the residual stream receives from it. In a
    # pre-norm or parallel block that is the branch output itself. Where the block normalises a
    # branch before adding it (sandwich: Gemma 2/3; post_only: OLMo-2) or scales it (a residual
    # multiplier: Granite), the branch's pieces (heads, neurons, biases) are mapped through that
    # post-norm with its cached scale (``ln1_post``/``ln2_post.hook_scale``), which is linear once
    # the scale is fixed: the pieces then sum exactly to ``hook_attn_out`` / ``hook_mlp_out``, with
    # the same frozen-scale convention ``apply_ln_to_stack`` uses.

    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> (
        Float[torch.Tensor, "layers_covered *batch_and_pos_dims d_model"]
        | tuple[Float[torch.Tensor, "layers_covered *batch_and_pos_dims d_model"], list[str]]
    ):
        """The residual stream entering each layer up to ``layer``: the logit-lens stack.

        Entries are ``resid_pre`` of layers ``0 .. layer`` (labels ``"{l}_pre"``), and, when
        ``layer`` is ``n_layers``, the final ``resid_post`` (``"final_post"``).

        Args:
            layer: Stop at the input of this layer (included). None, -1 or ``n_layers``: every
                layer and the final residual stream.
            incl_mid: Also include ``resid_mid`` of each layer before ``layer`` (``"{l}_mid"``).
                Parallel blocks have no ``resid_mid``.
            apply_ln: Normalise the stack for the layer it enters (see `apply_ln_to_stack`); at
                ``n_layers`` each entry is normalised by ``ln_final`` with its own statistics
                (``recompute_ln``), which is the logit lens.
            pos_slice: Positions to keep.
            mlp_input: End at the MLP input of ``layer`` (adds its ``resid_mid``; for a parallel
                block the MLP reads ``resid_pre``, already the last entry) and normalise with the
                MLP's norm.
            return_labels: Also return the labels.

        Returns:
            ``[layers_covered, *batch_and_pos_dims, d_model]``, with the labels if asked.

        Raises:
            UnsupportedConfigError: ``incl_mid`` with parallel blocks.
            ValueError: A layer outside ``[0, n_layers]``.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu"})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> stack, labels = cache.accumulated_resid(return_labels=True)
            >>> labels, tuple(stack.shape)
            (['0_pre', '1_pre', 'final_post'], (3, 1, 4, 16))
            >>> cache.accumulated_resid(1, incl_mid=True, mlp_input=True, return_labels=True)[1]
            ['0_pre', '0_mid', '1_pre', '1_mid']
            >>> torch.equal(stack[-1], cache["resid_post", -1])
            True
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._input_layer(layer)
        n_layers = self._cfg().n_layers
        components: list[torch.Tensor] = []
        labels: list[str] = []
        for index in range(layer + 1):
            if index == n_layers:
                components.append(self[("resid_post", n_layers - 1)])
                labels.append("final_post")
                continue
            components.append(self[("resid_pre", index)])
            labels.append(f"{index}_pre")
            if (incl_mid and index < layer) or (mlp_input and index == layer):
                if not self._block_io(index).mlp_sees_attn:
                    if incl_mid:
                        raise UnsupportedConfigError(
                            "accumulated_resid(incl_mid=True): parallel blocks have no resid_mid "
                            "(attention and MLP both read resid_pre)"
                        )
                    continue  # parallel: the MLP reads resid_pre, already the last entry
                components.append(self[("resid_mid", index)])
                labels.append(f"{index}_mid")
        stack = torch.stack([pos_slice.apply(c, dim=-2) for c in components], dim=0)
        if apply_ln:
            stack = self.apply_ln_to_stack(
                stack,
                layer,
                mlp_input=mlp_input,
                pos_slice=pos_slice,
                has_batch_dim=self.has_batch_dim,
                recompute_ln=layer == n_layers,
            )
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: Literal["all", "mlp", "attn"] = "all",
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> (
        Float[torch.Tensor, "layers_covered *batch_and_pos_dims d_model"]
        | tuple[Float[torch.Tensor, "layers_covered *batch_and_pos_dims d_model"], list[str]]
    ):
        """Split the residual stream entering ``layer`` into the outputs that were added to it.

        Components, in order: ``"embed"``, ``"pos_embed"`` (learned positions that are added to
        the residual stream; not rotary, ALiBi or shortformer), then ``"{l}_attn_out"`` and
        ``"{l}_mlp_out"`` per earlier layer. With ``incl_embeds`` and ``mode="all"`` they sum to
        the residual stream (``resid_pre`` of ``layer``; the final ``resid_post`` at ``n_layers``).
        A block that scales its branches (a residual multiplier) has them scaled here too.

        Args:
            layer: Decompose the input of this layer; None, -1 or ``n_layers``: the final
                residual stream; 0: only the embeddings.
            mlp_input: Decompose the MLP input of ``layer`` instead (adds its attention output,
                except in a parallel block, whose MLP reads ``resid_pre``).
            mode: ``"all"``, ``"mlp"`` (MLP outputs only) or ``"attn"`` (attention outputs only).
            apply_ln: Scale the stack by the cached norm scale of the layer it enters
                (`apply_ln_to_stack`).
            pos_slice: Positions to keep.
            incl_embeds: Include the embeddings.
            return_labels: Also return the labels.

        Returns:
            ``[n_components, *batch_and_pos_dims, d_model]``, with the labels if asked.

        Raises:
            UnsupportedConfigError: For post-norm blocks (the residual stream is renormalised
                after each add, so it is not a sum of outputs).
            ValueError: For an unknown ``mode``, a layer outside ``[0, n_layers]``, or
                ``mlp_input`` at ``n_layers``.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu"})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> stack, labels = cache.decompose_resid(return_labels=True)
            >>> labels
            ['embed', 'pos_embed', '0_attn_out', '0_mlp_out', '1_attn_out', '1_mlp_out']
            >>> torch.allclose(stack.sum(0), cache["resid_post", -1], atol=1e-6)
            True
        """
        if mode not in ("all", "mlp", "attn"):
            raise ValueError(f"mode must be 'all', 'mlp' or 'attn', got {mode!r}")
        pos_slice = _as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("decompose_resid")
        incl_attn = mode != "mlp"
        incl_mlp = mode != "attn" and not self._cfg().attn_only
        components: list[torch.Tensor] = []
        labels: list[str] = []
        if incl_embeds:
            for name, label in self._embedding_terms():
                components.append(self[name])
                labels.append(label)
        for index in range(layer):
            multiplier = self._block_io(index).multiplier
            if incl_attn:
                components.append(_times(self[("attn_out", index)], multiplier))
                labels.append(f"{index}_attn_out")
            if incl_mlp:
                components.append(_times(self[("mlp_out", index)], multiplier))
                labels.append(f"{index}_mlp_out")
        if mlp_input and incl_attn and self._block_io(layer).mlp_sees_attn:
            components.append(_times(self[("attn_out", layer)], self._block_io(layer).multiplier))
            labels.append(f"{layer}_attn_out")
        components = [pos_slice.apply(c, dim=-2) for c in components]
        stack = torch.stack(components, dim=0) if components else self._empty_stack(pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def compute_head_results(self) -> None:
        """Cache each head's output ``blocks.{l}.attn.hook_result`` (``hook_z @ W_O`` per head).

        The same tensor ``hook_result`` holds when ``model.set_use_attn_result(True)``:
        ``[*batch_and_pos_dims, head_index, d_model]``, summing with ``b_O`` to the attention
        output (before a sandwich/post_only post-norm). Grouped-query models give one result per
        query head. Results already cached are kept; the others are computed from ``hook_z``.
        """
        if self._ensure_head_results() == 0:
            logger.warning("Tried to compute head results when they were already cached")

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Slice | SliceInput = None,
        apply_ln: bool = False,
    ) -> (
        Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"]
        | tuple[Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"], list[str]]
    ):
        """Each attention head's contribution to the residual stream, layers before ``layer``.

        The component axis is ``(layer, head)`` flattened, labelled ``"L{l}H{h}"``. In a
        pre-norm or parallel block a head's contribution is its result (``hook_result``), and the
        heads of layer ``l`` plus ``b_O`` sum to ``hook_attn_out``. Where the attention output
        passes through a post-norm (sandwich, post_only) or a residual multiplier, each result is
        mapped through it with the cached scale, so the heads plus the mapped bias (the ``"bias"``
        row of `get_full_resid_decomposition`) sum to what the residual stream received.

        Args:
            layer: Heads of layers strictly before this one; -1 or None: all layers.
            return_labels: Also return the labels.
            incl_remainder: Append ``"remainder"``: the residual stream entering ``layer`` minus
                the heads' sum.
            pos_slice: Positions to keep.
            apply_ln: Scale the stack by the cached norm scale of the layer it enters.

        Returns:
            ``[n_components, *batch_and_pos_dims, d_model]``, with the labels if asked.

        Raises:
            UnsupportedConfigError: For post-norm blocks.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu"})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> heads, labels = cache.stack_head_results(layer=1, return_labels=True)
            >>> labels, tuple(heads.shape)
            (['L0H0', 'L0H1', 'L0H2', 'L0H3'], (4, 1, 4, 16))
            >>> attn_out = heads.sum(0) + model.blocks[0].attn.b_O
            >>> torch.allclose(attn_out, cache["attn_out", 0], atol=1e-6)
            True
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._require_additive("stack_head_results")
        self._ensure_head_results(range(layer))
        n_heads = self._cfg().n_heads
        per_layer: list[torch.Tensor] = []
        labels: list[str] = []
        for index in range(layer):
            result = pos_slice.apply(self[("result", index, "attn")], dim=-3)
            per_layer.append(self._branch_to_resid(result, index, "attn", pos_slice, pieces=True))
            labels.extend(f"L{index}H{head}" for head in range(n_heads))
        if per_layer:
            stack = torch.cat(per_layer, dim=-2).movedim(-2, 0)
        else:
            stack = self._empty_stack(pos_slice)
        if incl_remainder:
            target = pos_slice.apply(self._resid_into(layer), dim=-2)
            stack = torch.cat([stack, (target - stack.sum(0))[None]], dim=0)
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_activation(
        self, activation_name: str, layer: int = -1, sublayer_type: str | None = None
    ) -> Float[torch.Tensor, "layers_covered ..."]:
        """Stack one activation over the layers before ``layer``.

        Args:
            activation_name: A `get_act_name` name or shorthand (``"pattern"``, ``"resid_pre"``).
            layer: Layers strictly before this one; -1 or None: all layers.
            sublayer_type: The sublayer (``"attn"``, ``"mlp"`` ...) when the name is ambiguous.

        Returns:
            ``[layers_covered, ...]``.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu"})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> tuple(cache.stack_activation("pattern").shape)
            (2, 1, 4, 4, 4)
        """
        layer = self._input_layer(layer)
        return torch.stack(
            [self[(activation_name, index, sublayer_type)] for index in range(layer)], dim=0
        )

    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Slice | SliceInput = None,
        pos_slice: Slice | SliceInput = None,
        project_output_onto: Float[torch.Tensor, " d_model *num_outputs"] | None = None,
    ) -> Float[torch.Tensor, "*batch_and_pos_dims num_neurons d_model"]:
        """Each MLP neuron's contribution to the residual stream in one layer (not cached).

        ``hook_post[..., n] * W_out[n]``; these plus ``b_out`` sum to ``hook_mlp_out``. Where the
        MLP output passes through a post-norm or a residual multiplier, each neuron's write is
        mapped through it with the cached scale (see `stack_head_results`).

        Args:
            layer: The layer.
            neuron_slice: Neurons to keep (an int drops the neuron dimension).
            pos_slice: Positions to keep.
            project_output_onto: A ``[d_model]`` or ``[d_model, num_outputs]`` projection applied
                to each neuron's write before the expansion, so ``[..., d_mlp, d_model]`` is never
                built; the last dimension becomes ``num_outputs`` (dropped for ``[d_model]``).

        Returns:
            ``[*batch_and_pos_dims, num_neurons, d_model]`` (or projected).

        Raises:
            UnsupportedConfigError: If the layer's MLP is a mixture of experts.
        """
        neuron_slice, pos_slice = _as_slice(neuron_slice), _as_slice(pos_slice)
        self._require_additive("get_neuron_results")
        acts, writes = self._neuron_terms(layer, neuron_slice, pos_slice)
        if project_output_onto is None:
            return acts[..., None] * writes
        projected = writes @ project_output_onto.to(writes)
        return acts * projected if project_output_onto.ndim == 1 else acts[..., None] * projected

    def stack_neuron_results(
        self,
        layer: int,
        pos_slice: Slice | SliceInput = None,
        neuron_slice: Slice | SliceInput = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
        project_output_onto: Float[torch.Tensor, " d_model *num_outputs"] | None = None,
        mlp_input: bool = False,
    ) -> (
        Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"]
        | tuple[Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"], list[str]]
    ):
        """Each neuron's contribution to the residual stream, for the layers before ``layer``.

        The component axis is ``(layer, neuron)`` flattened, labelled ``"L{l}N{n}"``. All neurons
        of a model is a very large tensor; pass ``neuron_slice`` or ``project_output_onto``.

        Args:
            layer: Neurons of layers strictly before this one; -1 or None: all layers.
            pos_slice: Positions to keep.
            neuron_slice: Neurons to keep in every layer (an int keeps one, as a list of one).
            return_labels: Also return the labels.
            incl_remainder: Append ``"remainder"``: the residual stream entering ``layer`` (its
                MLP input with ``mlp_input``) minus the neurons' sum.
            apply_ln: Scale the stack by the cached norm scale of the layer it enters.
            project_output_onto: A ``[d_model]`` or ``[d_model, num_outputs]`` projection folded in
                before the per-neuron expansion (also with ``apply_ln``), so
                ``[..., d_mlp, d_model]`` is never built.
            mlp_input: The stack enters ``layer``'s MLP: the remainder fills up to its input and
                ``apply_ln`` uses the MLP's norm. The neurons stacked are the same.

        Returns:
            ``[n_components, *batch_and_pos_dims, d_model]`` (or projected), with the labels if
            asked.

        Raises:
            UnsupportedConfigError: If a layer's MLP is a mixture of experts, or for post-norm
                blocks.
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("stack_neuron_results")
        neuron_slice = Slice.unwrap(neuron_slice)
        if neuron_slice.mode == "int":  # layers are concatenated along the neuron axis: keep it
            neuron_slice = Slice([neuron_slice.slice])  # type: ignore[list-item]
        project, squeeze = _projection_2d(project_output_onto)
        d_mlp = self._cfg().d_mlp or 0
        neuron_ids = [int(n) for n in neuron_slice.apply(torch.arange(d_mlp), dim=0)]
        labels = [f"L{index}N{n}" for index in range(layer) for n in neuron_ids]
        reader = self._reader_norm(layer, mlp_input) if apply_ln else None
        per_layer: list[torch.Tensor] = []
        for index in range(layer):
            acts, writes = self._neuron_terms(index, neuron_slice, pos_slice)
            if reader is not None:
                # Frozen-scale normalisation is linear, so it folds into each neuron's write:
                # centre the write vectors (LayerNorm) and divide the activations by the scale.
                scale = self._cached_scale(reader[0], pos_slice)
                acts = acts / scale.to(acts)
                if reader[1]:
                    writes = writes - writes.mean(-1, keepdim=True)
            if project is not None:
                writes = writes @ project.to(writes)
            per_layer.append(acts[..., None] * writes)
        if per_layer:
            stack = torch.cat(per_layer, dim=-2).movedim(-2, 0)
        else:
            reference = self._empty_stack(pos_slice)
            width = project.shape[-1] if project is not None else reference.shape[-1]
            stack = reference.new_zeros(0, *reference.shape[1:-1], width)
        if incl_remainder:
            target = pos_slice.apply(self._resid_into(layer, mlp_input), dim=-2)[None]
            if reader is not None:
                target = self.apply_ln_to_stack(
                    target, layer, mlp_input=mlp_input, pos_slice=pos_slice
                )
            if project is not None:
                target = target @ project.to(target)
            stack = torch.cat([stack, target - stack.sum(0, keepdim=True)], dim=0)
            labels.append("remainder")
        if squeeze:
            stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack

    def apply_ln_to_stack(
        self,
        residual_stack: Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"],
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Slice | SliceInput = None,
        batch_slice: Slice | SliceInput = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Float[torch.Tensor, "num_components *batch_and_pos_dims_out d_model"]:
        """Normalise stacked residual-stream pieces as the norm reading them did, with its scale.

        Each piece is centred (LayerNorm only) and divided by the norm's cached ``hook_scale``
        for the actual residual stream: the scale is shared by the whole stream at each
        position, so the normalised pieces sum to the normalised stream. The norm's weight and
        bias are not applied (after ``fold_ln`` they live in the next weights, e.g. ``W_U``).

        The norm is the one reading the residual stream at ``layer``: ``ln_final`` at
        ``n_layers``, else the block's attention norm (``ln1``) or, with ``mlp_input``, its MLP
        norm (``ln2``; ``ln1`` for a parallel block with one norm). A block whose input is not
        normalised (post_only) or a model without that norm returns the stack unchanged.

        Args:
            residual_stack: Pieces of the residual stream, ``pos_slice`` already applied.
            layer: The layer they enter; None, -1 or ``n_layers``: the unembed.
            mlp_input: They enter the MLP of ``layer`` rather than its attention.
            pos_slice: The positions the stack holds (applied to the cached scale).
            batch_slice: Batch items to keep (applied to the stack and the scale).
            has_batch_dim: Whether the stack has a batch dimension (after the component axis).
            recompute_ln: At the unembed, normalise each piece with ``ln_final`` itself (its own
                statistics, weight and bias): the logit lens.

        Returns:
            The normalised stack.

        Raises:
            HookNameError: If the norm's ``hook_scale`` is not in the cache.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu",
            ...                            "normalization_type": "LNPre"})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> final = cache.accumulated_resid()[-1:]
            >>> torch.allclose(cache.apply_ln_to_stack(final)[0], cache["ln_final.hook_normalized"])
            True
        """
        pos_slice, batch_slice = _as_slice(pos_slice), _as_slice(batch_slice)
        layer = self._input_layer(layer)
        if has_batch_dim:
            residual_stack = batch_slice.apply(residual_stack, dim=1)
        n_layers = self._cfg().n_layers
        if recompute_ln and layer == n_layers:
            ln_final = getattr(self.model, "ln_final", None)
            if ln_final is None:
                return residual_stack
            d_model = residual_stack.shape[-1]
            # One [rows, 1, d_model] call: the norm's hooks see a [batch, pos, d] activation.
            flat = ln_final(residual_stack.reshape(-1, 1, d_model))
            return flat.reshape(residual_stack.shape)
        reader = self._reader_norm(layer, mlp_input)
        if reader is None:
            return residual_stack
        name, centers = reader
        if centers:
            residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        scale = self._cached_scale(name, pos_slice, batch_slice)
        return (residual_stack / scale).to(residual_stack.dtype)

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Slice | SliceInput = None,
        return_labels: bool = False,
        project_output_onto: Float[torch.Tensor, " d_model *num_outputs"] | None = None,
    ) -> (
        Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"]
        | tuple[Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"], list[str]]
    ):
        """The residual stream entering ``layer`` as every head, neuron, embedding and bias.

        Rows, in order: each head (``"L{l}H{h}"``), each neuron (``"L{l}N{n}"``; with
        ``expand_neurons=False`` each MLP output, ``"{l}_mlp_out"``), ``"embed"``,
        ``"pos_embed"`` (learned positions added to the residual stream), ``"bias"`` (every
        attention and MLP output bias, through post-norms where the block has them). They sum to
        the residual stream entering ``layer``.

        Args:
            layer: The layer whose input is decomposed; None, -1 or ``n_layers``: the unembed.
            mlp_input: Decompose the MLP input of ``layer`` (adds that layer's heads and
                attention bias, except in a parallel block).
            expand_neurons: One row per neuron (else one per MLP layer). Mixture-of-experts
                MLPs need False.
            apply_ln: Scale the stack by the cached norm scale of the layer it enters.
            pos_slice: Positions to keep.
            return_labels: Also return the labels.
            project_output_onto: A ``[d_model]`` or ``[d_model, num_outputs]`` projection of
                every row, folded in before the neuron expansion.

        Returns:
            ``[n_components, *batch_and_pos_dims, d_model]`` (or projected), with the labels if
            asked.

        Raises:
            UnsupportedConfigError: Mixture-of-experts MLPs with ``expand_neurons``, or
                post-norm blocks.
            ValueError: ``mlp_input`` at ``n_layers``.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu",
            ...                            "d_mlp": 8})
            >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> stack, labels = cache.get_full_resid_decomposition(return_labels=True)
            >>> len(labels), labels[:2], labels[8:10], labels[-3:]
            (27, ['L0H0', 'L0H1'], ['L0N0', 'L0N1'], ['embed', 'pos_embed', 'bias'])
            >>> torch.allclose(stack.sum(0), cache["resid_post", -1], atol=1e-5)
            True
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("get_full_resid_decomposition")
        project, squeeze = _projection_2d(project_output_onto)
        # With a projection, normalise each block of rows before projecting it (the neurons
        # analytically), so the d_model-wide neuron stack is never built.
        fold = apply_ln and project is not None

        def finish(stack: torch.Tensor) -> torch.Tensor:
            if fold:
                stack = self.apply_ln_to_stack(
                    stack, layer, mlp_input=mlp_input, pos_slice=pos_slice
                )
            return stack @ project.to(stack) if project is not None else stack

        heads_through = layer + (1 if mlp_input and self._block_io(layer).mlp_sees_attn else 0)
        heads, labels = self.stack_head_results(
            heads_through, return_labels=True, pos_slice=pos_slice
        )
        components = [finish(heads)]
        if not self._cfg().attn_only and layer > 0:
            if expand_neurons:
                neurons, neuron_labels = self.stack_neuron_results(
                    layer,
                    pos_slice=pos_slice,
                    return_labels=True,
                    apply_ln=fold,
                    project_output_onto=project,
                    mlp_input=mlp_input,
                )
                components.append(neurons)
                labels.extend(neuron_labels)
            else:
                mlps, mlp_labels = self.decompose_resid(
                    layer, mode="mlp", pos_slice=pos_slice, incl_embeds=False, return_labels=True
                )
                components.append(finish(mlps))
                labels.extend(mlp_labels)
        for name, label in self._embedding_terms():
            components.append(finish(pos_slice.apply(self[name], dim=-2)[None]))
            labels.append(label)
        reference = pos_slice.apply(self._resid_into(layer), dim=-2)
        bias = self._bias_to_resid(layer, mlp_input, expand_neurons, pos_slice).to(reference)
        components.append(finish(bias.expand((1, *reference.shape))))
        labels.append("bias")
        stack = torch.cat(components, dim=0)
        if apply_ln and not fold:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        if squeeze:
            stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack

    def logit_attrs(
        self,
        residual_stack: Float[torch.Tensor, "num_components *batch_and_pos_dims d_model"],
        tokens: str
        | int
        | Int[torch.Tensor, ""]
        | Int[torch.Tensor, " batch"]
        | Int[torch.Tensor, "batch position"],
        incorrect_tokens: str
        | int
        | Int[torch.Tensor, ""]
        | Int[torch.Tensor, " batch"]
        | Int[torch.Tensor, "batch position"]
        | None = None,
        pos_slice: Slice | SliceInput = None,
        batch_slice: Slice | SliceInput = None,
        has_batch_dim: bool = True,
    ) -> Float[torch.Tensor, " num_components *batch_and_pos_dims_out"]:
        """Direct logit attribution: each piece's contribution to the logit of ``tokens``.

        The stack is normalised for the unembed (`apply_ln_to_stack` at ``n_layers``, cached
        final-norm scale) and dotted with ``W_U[:, token]`` (minus ``W_U[:, incorrect]`` when
        given). On a processed model (``fold_ln``) the pieces of a full decomposition then sum to
        the logit (difference) minus ``b_U`` (difference). Logit scales and soft-caps after
        ``W_U`` are not applied.

        Args:
            residual_stack: Pieces of the residual stream (e.g. `decompose_resid`), not yet
                normalised.
            tokens: One token (a string, an id or a 0-d tensor), one per batch item ``[batch]``
                (broadcast over positions), or ``[batch, position]``; already matching any slices.
            incorrect_tokens: Same shape as ``tokens``: attribute the logit difference.
            pos_slice: The positions the stack holds.
            batch_slice: Batch items to keep.
            has_batch_dim: Whether the stack has a batch dimension.

        Returns:
            ``[num_components, *batch_and_pos_dims]``.

        Raises:
            ValueError: If ``tokens`` and ``incorrect_tokens`` differ in shape.

        Examples:
            >>> import torch
            >>> from tlcore import HookedTransformer
            >>> model = HookedTransformer({"d_model": 16, "n_layers": 2, "n_ctx": 8, "d_head": 4,
            ...                            "n_heads": 4, "d_vocab": 20, "act_fn": "gelu",
            ...                            "normalization_type": "LNPre"})
            >>> logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
            >>> stack = cache.decompose_resid(pos_slice=-1)
            >>> attrs = cache.logit_attrs(stack, tokens=5, incorrect_tokens=7, pos_slice=-1)
            >>> tuple(attrs.shape)
            (6, 1)
            >>> diff = logits[0, -1, 5] - logits[0, -1, 7] - (model.b_U[5] - model.b_U[7])
            >>> torch.allclose(attrs.sum(0), diff, atol=1e-5)
            True
        """
        pos_slice, batch_slice = _as_slice(pos_slice), _as_slice(batch_slice)
        directions = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            shape, incorrect_shape = _token_shape(tokens), _token_shape(incorrect_tokens)
            if shape != incorrect_shape:
                raise ValueError(
                    f"tokens and incorrect_tokens must have the same shape "
                    f"(tokens.shape={shape}, incorrect_tokens.shape={incorrect_shape})"
                )
            directions = directions - self.model.tokens_to_residual_directions(incorrect_tokens)
        scaled = self.apply_ln_to_stack(
            residual_stack,
            layer=-1,
            pos_slice=pos_slice,
            batch_slice=batch_slice,
            has_batch_dim=has_batch_dim,
        )
        if (
            has_batch_dim
            and batch_slice.mode != "int"
            and scaled.ndim == 4
            and directions.ndim == 2
            and directions.shape[0] == scaled.shape[1]
        ):
            # One token per batch item: broadcast over positions, not against them.
            directions = directions.unsqueeze(-2)
        return (scaled * directions.to(scaled)).sum(dim=-1)

    # ----- analysis helpers -----

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

    def _block_io(self, layer: int) -> _BlockIO:
        """How block ``layer`` reads and writes the residual stream, from its layout trait."""
        cfg = self._cfg()
        trait = cfg.trait("block")
        kind = trait.kind
        if kind not in _LAYOUT_NORMS:
            raise UnsupportedConfigError(
                f"ActivationCache analysis does not know block layout '{kind}' (it knows "
                f"{', '.join(sorted(_LAYOUT_NORMS))})"
            )
        attn_norm, mlp_norm, attn_post, mlp_post = _LAYOUT_NORMS[kind]
        if kind == "parallel" and getattr(trait, "norms", 1) == 1:
            mlp_norm = "ln1"
        block = self.model.blocks[layer]

        def present(name: str | None) -> str | None:
            # A norm of kind "none" is built as None: the residual passes through unchanged.
            return name if name is not None and getattr(block, name, None) is not None else None

        return _BlockIO(
            kind=kind,
            attn_norm=present(attn_norm),
            mlp_norm=present(mlp_norm),
            attn_post=present(attn_post),
            mlp_post=present(mlp_post),
            mlp_sees_attn=kind != "parallel",
            multiplier=float(getattr(trait, "residual_multiplier", 1.0)),
        )

    def _require_additive(self, method: str) -> None:
        if self._cfg().n_layers and self._block_io(0).kind == "post_norm":
            raise UnsupportedConfigError(
                f"{method}: post-norm blocks renormalise the residual stream after every add, "
                "so it is not a sum of component outputs; use accumulated_resid or the cached "
                "activations directly"
            )

    def _reader_norm(self, layer: int, mlp_input: bool) -> tuple[str, bool] | None:
        """(hook prefix, centres) of the norm reading the residual stream at ``layer``, or None."""
        if layer == self._cfg().n_layers:
            norm = getattr(self.model, "ln_final", None)
            return None if norm is None else ("ln_final", self._centres(norm))
        io = self._block_io(layer)
        name = io.mlp_norm if mlp_input else io.attn_norm
        if name is None:
            return None
        return f"blocks.{layer}.{name}", self._centres(getattr(self.model.blocks[layer], name))

    def _centres(self, norm: Any) -> bool:
        """Whether a norm subtracts the mean (LayerNorm) or not (RMSNorm)."""
        from tlcore.components.norms import LayerNorm, RMSNorm

        if isinstance(norm, LayerNorm):
            return True
        if isinstance(norm, RMSNorm):
            return False
        return self._cfg().normalization_type in ("LN", "LNPre")

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
        if mlp_input and self._block_io(layer).mlp_sees_attn:
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

    def _post_norm(self, layer: int, branch: str) -> str | None:
        io = self._block_io(layer)
        return io.attn_post if branch == "attn" else io.mlp_post

    def _branch_to_resid(
        self, x: torch.Tensor, layer: int, branch: str, pos_slice: Slice, pieces: bool
    ) -> torch.Tensor:
        """Map linear pieces of a branch output to what the residual stream receives from them.

        ``x`` is ``[*batch_and_pos_dims, d_model]``, or with ``pieces`` one more axis before
        ``d_model`` (heads). A post-norm acts with its cached scale (linear: the pieces' images
        sum to the image of their sum, less the norm's bias, which `_bias_to_resid` adds once).
        """
        name = self._post_norm(layer, branch)
        if name is not None:
            norm = getattr(self.model.blocks[layer], name)
            if self._centres(norm):
                x = x - x.mean(-1, keepdim=True)
            scale = self._cached_scale(f"blocks.{layer}.{name}", pos_slice)
            x = x / (scale.unsqueeze(-2) if pieces else scale).to(x)
            weight = _norm_weight(norm)
            if weight is not None:
                x = x * weight.to(x)
        return _times(x, self._block_io(layer).multiplier)

    def _neuron_terms(
        self, layer: int, neuron_slice: Slice, pos_slice: Slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-position activation factors ``[..., n]``, write vectors ``[n, d_model]``).

        A neuron's contribution is ``factor[..., n] * write[n]``; the factor folds in a
        post-norm's cached scale and the residual multiplier.
        """
        mlp = self.model.blocks[layer].mlp
        W_out = getattr(mlp, "W_out", None)
        if not isinstance(W_out, torch.Tensor):
            raise UnsupportedConfigError(
                f"layer {layer}'s MLP ({type(mlp).__name__}) is a mixture of experts: it has no "
                "single set of neurons; use decompose_resid(mode='mlp') or "
                "get_full_resid_decomposition(expand_neurons=False)"
            )
        acts = pos_slice.apply(self[("post", layer, "mlp")], dim=-2)
        writes = W_out.to(acts)
        name = self._post_norm(layer, "mlp")
        if name is not None:
            norm = getattr(self.model.blocks[layer], name)
            if self._centres(norm):
                writes = writes - writes.mean(-1, keepdim=True)
            weight = _norm_weight(norm)
            if weight is not None:
                writes = writes * weight.to(writes)
            # Divide before slicing neurons: an int neuron_slice drops the axis the scale's
            # trailing 1 broadcasts against.
            acts = acts / self._cached_scale(f"blocks.{layer}.{name}", pos_slice).to(acts)
        acts, writes = neuron_slice.apply(acts, dim=-1), neuron_slice.apply(writes, dim=0)
        return _times(acts, self._block_io(layer).multiplier), writes

    def _bias_to_resid(
        self, layer: int, mlp_input: bool, include_mlp_biases: bool, pos_slice: Slice
    ) -> torch.Tensor:
        """What the residual stream entering ``layer`` received from output biases.

        For pre-norm and parallel blocks this is ``model.accumulated_bias`` ``[d_model]``. Where
        a post-norm follows a branch, its bias goes through it with the cached scale (so the
        result is ``[*batch_and_pos_dims, d_model]``) and the post-norm's own bias is added.
        """
        terms: list[tuple[int, str]] = []
        for index in range(layer):
            terms.append((index, "attn"))
            if include_mlp_biases and not self._cfg().attn_only:
                terms.append((index, "mlp"))
        if mlp_input and self._block_io(layer).mlp_sees_attn:
            terms.append((layer, "attn"))
        reference = self[("resid_pre", 0)]
        total = reference.new_zeros(self._cfg().d_model)
        for index, branch in terms:
            block = self.model.blocks[index]
            module = block.attn if branch == "attn" else block.mlp
            bias = getattr(module, "b_O" if branch == "attn" else "b_out", None)
            if isinstance(bias, torch.Tensor):
                mapped = self._branch_to_resid(bias, index, branch, pos_slice, pieces=False)
                total = total + mapped.to(total)
            name = self._post_norm(index, branch)
            norm_bias = getattr(getattr(block, name), "b", None) if name is not None else None
            if isinstance(norm_bias, torch.Tensor):
                multiplier = self._block_io(index).multiplier
                total = total + _times(norm_bias, multiplier).to(total)
        return total


@dataclass(frozen=True)
class _BlockIO:
    """How a block reads and writes the residual stream (norm names as block attributes)."""

    kind: str
    attn_norm: str | None  # the norm attention reads the residual stream through (None: raw)
    mlp_norm: str | None
    attn_post: str | None  # the norm between the attention output and the residual add
    mlp_post: str | None
    mlp_sees_attn: bool  # False for parallel blocks: the MLP reads resid_pre
    multiplier: float  # each branch is scaled by this before the add (Granite)


# Block layout -> (attention norm, MLP norm, attention post-norm, MLP post-norm). Post-norm blocks
# read a residual stream that is already normalised, so nothing normalises their inputs here.
_LAYOUT_NORMS: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "pre_norm": ("ln1", "ln2", None, None),
    "parallel": ("ln1", "ln2", None, None),
    "sandwich": ("ln1", "ln2", "ln1_post", "ln2_post"),
    "post_only": (None, None, "ln1_post", "ln2_post"),
    "post_norm": (None, None, None, None),
}


def _as_slice(value: Slice | SliceInput) -> Slice:
    return value if isinstance(value, Slice) else Slice(value)


def _times(x: torch.Tensor, multiplier: float) -> torch.Tensor:
    return x if multiplier == 1.0 else x * multiplier


def _norm_weight(norm: Any) -> torch.Tensor | None:
    """The effective weight of a norm (``1 + w`` for offset RMSNorms), or None."""
    weight = getattr(norm, "w", None)
    if weight is None:
        return None
    return 1.0 + weight.float() if getattr(norm, "offset", False) else weight


def _projection_2d(project: torch.Tensor | None) -> tuple[torch.Tensor | None, bool]:
    """A ``[d_model, n]`` projection, and whether the result's last axis is squeezed after."""
    if project is None:
        return None, False
    return (project[:, None], True) if project.ndim == 1 else (project, False)


def _token_shape(tokens: Any) -> tuple[int, ...]:
    return tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else ()

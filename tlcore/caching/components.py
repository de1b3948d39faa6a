"""Component stacks of a cache: per-head and per-neuron contributions, the full decomposition.

Each piece is mapped to what the residual stream received from it through the block's declared
post-norms and ``to_resid`` maps (:mod:`tlcore.caching.wiring`), so heads, neurons, embeddings and
biases sum exactly to the residual stream.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from tlcore.caching.residual import ResidualAnalysis
from tlcore.caching.storage import logger
from tlcore.caching.wiring import as_slice, projection_2d
from tlcore.utils.slicing import Slice, SliceInput


class ComponentAnalysis(ResidualAnalysis):
    """Heads (``stack_head_results``), neurons (``stack_neuron_results``) and the full split."""

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
        heads of layer ``l`` plus ``b_O`` sum to ``hook_attn_out``. Where the block declares a
        post-norm on the attention branch (sandwich, post_only) or ``to_resid`` maps (a residual
        multiplier, a gate), each result is mapped through them with the cached scale, so the
        heads plus the mapped bias (the ``"bias"`` row of `get_full_resid_decomposition`) sum to
        what the residual stream received.

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
        pos_slice = as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._require_additive("stack_head_results")
        self._ensure_head_results(range(layer))
        n_heads = self._cfg().n_heads
        per_layer: list[torch.Tensor] = []
        labels: list[str] = []
        for index in range(layer):
            result = pos_slice.apply(self[("result", index, "attn")], dim=-3)
            branch = self._wiring(index).branch("attn")
            assert branch is not None, "a block with attention declares its branch"
            per_layer.append(self._branch_to_resid(result, index, branch, pos_slice, pieces=True))
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
        neuron_slice, pos_slice = as_slice(neuron_slice), as_slice(pos_slice)
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
        pos_slice = as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("stack_neuron_results")
        neuron_slice = Slice.unwrap(neuron_slice)
        if neuron_slice.mode == "int":  # layers are concatenated along the neuron axis: keep it
            neuron_slice = Slice([neuron_slice.slice])  # type: ignore[list-item]
        project, squeeze = projection_2d(project_output_onto)
        d_mlp = self._cfg().d_mlp or 0
        neuron_ids = [int(n) for n in neuron_slice.apply(torch.arange(d_mlp), dim=0)]
        labels = [f"L{index}N{n}" for index in range(layer) for n in neuron_ids]
        reader = self._reader_norm(layer, mlp_input) if apply_ln else None
        per_layer: list[torch.Tensor] = []
        for index in range(layer):
            acts, writes = self._neuron_terms(index, neuron_slice, pos_slice)
            if reader is not None:
                # Frozen-scale normalisation is linear, so it folds into each neuron's write:
                # centre the writes (a centring norm) and divide the activations by the scale.
                scale = self._cached_scale(reader[0], pos_slice)
                acts = acts / scale.to(acts)
                if self._centres(reader[1]):
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
        pos_slice = as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("get_full_resid_decomposition")
        project, squeeze = projection_2d(project_output_onto)
        # With a projection, normalise each block of rows before projecting it (the neurons
        # analytically), so the d_model-wide neuron stack is never built.
        fold = apply_ln and project is not None

        def finish(stack: torch.Tensor) -> torch.Tensor:
            if fold:
                stack = self.apply_ln_to_stack(
                    stack, layer, mlp_input=mlp_input, pos_slice=pos_slice
                )
            return stack @ project.to(stack) if project is not None else stack

        heads_through = layer + (1 if mlp_input and self._mlp_reads_mid(layer) else 0)
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

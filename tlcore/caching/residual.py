"""Residual-stream analysis of a cache: the logit lens, decompositions, normalisation, DLA.

TransformerLens's conventions: ``layer`` is the block whose *input* is decomposed, and None or -1
mean ``n_layers`` (the input of the unembed); ``pos_slice`` selects positions of
``[..., pos, d]`` activations (an int drops the position dimension); stacks put the component axis
first. Which residual each branch reads and how its output enters the stream come from the blocks'
declared wiring (:mod:`tlcore.caching.wiring`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from tlcore.caching.wiring import WiringReader, as_slice
from tlcore.errors import UnsupportedConfigError
from tlcore.utils.slicing import Slice, SliceInput


class ResidualAnalysis(WiringReader):
    """``accumulated_resid``, ``decompose_resid``, ``apply_ln_to_stack`` and ``logit_attrs``."""

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
        pos_slice = as_slice(pos_slice)
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
                if not self._wiring(index).has_resid_mid:
                    if incl_mid:
                        raise UnsupportedConfigError(
                            f"accumulated_resid(incl_mid=True): block {index} has no resid_mid "
                            "(a parallel layout: attention and MLP both read resid_pre)"
                        )
                    continue  # the MLP reads resid_pre, already the last entry
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
        Each output goes through its branch's declared ``to_resid`` maps (a residual multiplier, a
        learned gate), so it is exactly what the residual stream received.

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
        pos_slice = as_slice(pos_slice)
        layer = self._input_layer(layer)
        self._check_mlp_input(layer, mlp_input)
        self._require_additive("decompose_resid")
        components: list[torch.Tensor] = []
        labels: list[str] = []
        if incl_embeds:
            for name, label in self._embedding_terms():
                components.append(self[name])
                labels.append(label)
        terms = [(index, b) for index in range(layer) for b in self._branches(index, mode)]
        if mlp_input:
            selected = self._branches(layer, mode)
            terms += [(layer, b) for b in self._wiring(layer).mlp_input_branches() if b in selected]
        for index, branch in terms:
            out = self[f"blocks.{index}.{branch.out_hook}"]
            components.append(branch.into_resid(out, self.model.blocks[index]))
            labels.append(f"{index}_{branch.name}_out")
        components = [pos_slice.apply(c, dim=-2) for c in components]
        stack = torch.stack(components, dim=0) if components else self._empty_stack(pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
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
        ``n_layers``, else the norm the block's wiring declares for its first branch (``ln1``) or,
        with ``mlp_input``, for its MLP (``ln2``; ``ln1`` for a parallel block with one norm). A
        branch that reads the stream without a norm (post_only) or a model without that norm
        returns the stack unchanged.

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
        pos_slice, batch_slice = as_slice(pos_slice), as_slice(batch_slice)
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
        name, norm = reader
        if self._centres(norm):
            residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        scale = self._cached_scale(name, pos_slice, batch_slice)
        return (residual_stack / scale).to(residual_stack.dtype)

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
        pos_slice, batch_slice = as_slice(pos_slice), as_slice(batch_slice)
        directions = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            shape, incorrect_shape = token_shape(tokens), token_shape(incorrect_tokens)
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


def token_shape(tokens: Any) -> tuple[int, ...]:
    """The shape of a token argument (``()`` for a string or an int)."""
    return tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else ()

"""The ``mixer`` slot: sequence mixers other than attention, chosen per layer.

A block's first branch mixes information across positions. Attention (the ``attention`` slot)
does it for every layer unless the spec fills the ``mixer`` slot, whose trait names the layers it
holds (``layers``, one flag per layer, e.g. from a config's ``layer_types``; default: all). Those
layers hold the mixer instead of attention; the others keep attention with its TransformerLens
hooks unchanged.

A mixer kind is a trait (a subclass of :class:`MixerTrait`, registered in the ``mixer`` slot
through ``register_traits`` like any built-in or plugin kind) and a module (a subclass of
:class:`SequenceMixer`). The module is called as ``mixer(x, ctx)`` on the block's normalised
residual and returns what enters the residual stream; it is the block attribute named by
:attr:`SequenceMixer.branch` (``blocks.{i}.mixer`` for state-space mixers, as in HF's Mamba), and
the block's output hook is ``hook_{branch}_out``. Recurrent mixers keep their state between
generation steps in the KV cache's per-layer entry (:func:`load_state` / :func:`save_state`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import nn

from tlcore.components.context import ForwardContext
from tlcore.components.residual_io import HFProbe, ResidualIO, Writer
from tlcore.errors import SpecError
from tlcore.spec.traits import Trait


class MixerTrait(Trait):
    """Base of the ``mixer`` slot's kinds.

    Attributes:
        layers: Which layers hold this mixer (one flag per layer); None means every layer.
    """

    slot = "mixer"
    layers: list[bool] | None = None

    def holds(self, layer: int) -> bool:
        """Whether ``layer`` holds this mixer (otherwise it holds attention).

        Returns:
            True for a layer of this mixer.

        Raises:
            SpecError: If ``layers`` has no entry for ``layer``.

        Example:
            >>> class Toy(MixerTrait):
            ...     kind: str = "toy"
            >>> Toy(layers=[True, False]).holds(1), Toy().holds(7)
            (False, True)
        """
        if self.layers is None:
            return True
        if layer >= len(self.layers):
            raise SpecError(f"mixer '{self.kind}': layers lists {len(self.layers)} layers")
        return bool(self.layers[layer])

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        why = (
            f"mixer kind '{self.kind}' has no W_V/W_O (its layers are not attention), and "
            f"TransformerLens's attention refactorings have no meaning for it"
        )
        return {"fold_value_biases": why, "refactor_factored_attn_matrices": why}


class SequenceMixer(nn.Module, ResidualIO):
    """Base of mixer modules: ``forward(x, ctx)`` on the normalised residual stream.

    Args:
        cfg: The model config.
        layer: The layer index (the key of its state in the KV cache).
    """

    hf_names: tuple[str, ...] = ("mixer",)
    branch: ClassVar[str] = "mixer"
    """The block attribute holding the mixer, and the stem of its output hook."""
    recurrent: ClassVar[bool] = True
    """Whether the module carries a state across positions (kept in the KV cache)."""

    def __init__(self, cfg: Any, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer

    # Every mixer here ends in one output projection, ``W_out`` (+ ``b_out`` where the
    # checkpoint has one), HF's ``out_proj``: these defaults declare it once for all of them.
    def residual_writers(self) -> list[Writer]:  # noqa: D102
        bias = [Writer(self, "b_out")] if getattr(self, "b_out", None) is not None else []
        return [Writer(self, "W_out"), *bias]

    def output_bias(self) -> torch.Tensor | None:  # noqa: D102
        bias = getattr(self, "b_out", None)
        return bias if isinstance(bias, torch.Tensor) else None

    def hf_probes(self) -> list[HFProbe]:  # noqa: D102
        return [HFProbe("hook_post", ("out_proj",), "input")]

    def forward(  # noqa: D102
        self, x: Float[torch.Tensor, "batch pos d_model"], ctx: ForwardContext
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        raise NotImplementedError


def padding_mask(ctx: ForwardContext) -> torch.Tensor | None:
    """The current positions' padding mask ``[batch, pos]`` (1 = real token), or None.

    Args:
        ctx: The forward context.

    Returns:
        The mask of the positions this forward computes, or None when nothing is padded.
    """
    if ctx.key_mask is None:
        return None
    return ctx.key_mask[:, ctx.k_len - ctx.q_len :]


def load_state(ctx: ForwardContext, layer: int) -> dict[str, torch.Tensor] | None:
    """A recurrent mixer's state after the cached positions, or None (no cache, or empty).

    Args:
        ctx: The forward context (its ``past_kv_cache``).
        layer: The layer.

    Returns:
        The state the layer saved, or None.
    """
    if ctx.past_kv_cache is None:
        return None
    return ctx.past_kv_cache[layer].state or None


def save_state(ctx: ForwardContext, layer: int, state: dict[str, torch.Tensor]) -> None:
    """Store a recurrent mixer's state in the KV cache (nothing without one, or when frozen).

    Args:
        ctx: The forward context.
        layer: The layer.
        state: The state after the current positions.
    """
    if ctx.past_kv_cache is None:
        return
    entry = ctx.past_kv_cache[layer]
    if not entry.frozen:
        entry.state = {k: v.detach() for k, v in state.items()}


def causal_conv(
    x: Float[torch.Tensor, "batch channel pos"],
    weight: Float[torch.Tensor, "channel kernel"],
    bias: torch.Tensor | None,
    past: Float[torch.Tensor, "batch channel kernel_minus_1"] | None,
) -> tuple[Float[torch.Tensor, "batch channel pos"], torch.Tensor]:
    """Depthwise causal convolution continuing from the last ``kernel - 1`` inputs (zeros first).

    Args:
        x: The inputs of the current positions.
        weight: One filter per channel.
        bias: ``[channel]`` or None.
        past: The previous ``kernel - 1`` inputs (None: zeros, the start of a sequence).

    Returns:
        ``(outputs, the last kernel - 1 inputs)``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 4)
        >>> out, tail = causal_conv(x, torch.tensor([[1.0, 1.0]]), None, None)
        >>> out.tolist(), tail.tolist()
        ([[[0.0, 1.0, 3.0, 5.0]]], [[[3.0]]])
    """
    kernel, channels, pos = weight.shape[-1], x.shape[1], x.shape[-1]
    if past is None:  # HF's prefill: zero padding inside the convolution
        out = nn.functional.conv1d(
            x, weight.unsqueeze(1), bias, padding=kernel - 1, groups=channels
        )[..., :pos]
        full = torch.cat([x.new_zeros(*x.shape[:2], kernel - 1), x], dim=-1)
    else:
        full = torch.cat([past.to(x.dtype), x], dim=-1)
        out = nn.functional.conv1d(full, weight.unsqueeze(1), bias, groups=channels)
    return out, full[..., full.shape[-1] - (kernel - 1) :]

"""Trait base class: a trait is a typed, validated block of a spec (``{kind: ..., params...}``).

Traits sit in *slots* (``embedding``, ``positional``, ``norm``, ``final_norm``, ``block``,
``attention``, ``mixer``, ``mlp``, ``unembed``). A trait kind is registered with the slot it
fills, the pydantic model of its parameters and the component that implements it, so a plugin adds
a kind without touching tlcore.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

SLOTS: tuple[str, ...] = (
    "embedding",
    "positional",
    "norm",
    "final_norm",
    "block",
    "attention",
    "mixer",
    "mlp",
    "unembed",
    "head",
    "decoder_block",
    "cross_attention",
)
"""The slots a spec's ``traits:`` block may fill; ``final_norm`` defaults to ``norm``.

``mixer`` holds a sequence mixer other than attention (a state-space or linear-attention kind)
for the layers it names; the other layers hold ``attention``. A spec fills at least one of the
two. Without ``mlp`` the blocks have no MLP branch (Mamba: norm, mixer, residual add).
``head``: an output transform before the unembedding (an encoder's masked-LM head);
``decoder_block`` and ``cross_attention``: the decoder stack of an encoder-decoder."""

OPTIONAL_SLOTS: frozenset[str] = frozenset(
    {"final_norm", "attention", "mixer", "mlp", "head", "decoder_block", "cross_attention"}
)

MIXER_SLOTS: tuple[str, ...] = ("attention", "mixer")
"""The slots of which a spec must fill at least one (every block holds a sequence mixer)."""

# Slots whose kinds are looked up in another slot's table (``final_norm`` takes any ``norm`` kind).
SLOT_KINDS_FROM: dict[str, str] = {
    "final_norm": "norm",
    "decoder_block": "block",
    "cross_attention": "attention",
}


class Trait(BaseModel):
    """Base of every trait's parameter model.

    Subclasses declare their parameters as pydantic fields and may override :meth:`apply_to_cfg` to
    set the TransformerLens config fields they imply (``positional_embedding_type``, ``rotary_dim``,
    ``gated_mlp``, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    slot: ClassVar[str] = ""
    linear_io: ClassVar[bool] = False
    """The component reads the residual stream only through linear maps with biases (``W_Q``...,
    ``W_in``/``W_gate``, a router) and writes to it only through ``W_O``/``W_out`` with biases, so
    TransformerLens's weight processing (folding norms in, centring writers) is exact for it. Its
    module declares those maps (``residual_readers``/``residual_writers``)."""
    routes_tokens: ClassVar[bool] = False
    """The component sends each token to a subset of experts picked from rounded router scores, so a
    near-tie can route a token differently under another rounding (half-precision parity judges
    the share of positions that agree, :mod:`tlcore.parity.half`)."""

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:
        """Record what this trait implies in the TransformerLens-named config fields.

        Args:
            cfg: The config fields being resolved; mutate in place.
        """

    def processing_refusals(self) -> dict[str, str]:
        """The weight-processing steps this trait makes inexact, and why.

        Returns:
            ``{flag: reason}`` for flags of :data:`tlcore.processing_plan.FLAGS` (``fold_ln``,
            ``center_writing_weights``, ...); the plan skips each one with the reason.
        """
        return {}

    def layer_value(self, value: Any, layer: int) -> Any:
        """Pick a per-layer entry when ``value`` is a list, else return it unchanged.

        Args:
            value: A scalar or a list with one entry per layer.

        Returns:
            The entry for ``layer``.
        """
        return value[layer] if isinstance(value, list) else value

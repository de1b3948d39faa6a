"""Unembedding: ``logits = x @ W_U + b_U``, then an optional scale and final soft-cap.

A tied checkpoint's processed ``W_U`` may be held derived from the embedding (no second
``[d_vocab, d_model]`` matrix) until something takes it as a tensor: see
:mod:`tlcore.components.tied_unembed` for the form and the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.components.layout import LinearLayout
from tlcore.components.residual_io import Reader, ResidualIO
from tlcore.components.tied_unembed import TiedUnembedding
from tlcore.spec.traits import Trait


class UnembedTrait(Trait):
    """Unembedding parameters.

    ``bias``: the checkpoint has an lm_head bias (else ``b_U`` is zeros). ``logit_scale`` multiplies
    logits (Cohere 0.0625; Granite ``1/logits_scaling``); ``softcap`` is Gemma 2's final soft-cap.
    """

    slot = "unembed"
    linear_io = True
    kind: Literal["linear"] = "linear"
    bias: bool = False
    logit_scale: float = 1.0
    softcap: float | None = None

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        if self.softcap is not None:
            cfg.setdefault("output_logits_soft_cap", self.softcap)

    def processing_refusals(self) -> dict[str, str]:  # noqa: D102
        if self.softcap is None:
            return {}
        return {
            "center_unembed": (
                f"the final logit soft-cap ({self.softcap}) is not shift-invariant, so centring "
                f"W_U would change the log-probs (TransformerLens refuses too)"
            )
        }


class _UntieOnEnumerate(dict):  # type: ignore[type-arg]
    """``Unembed._parameters`` while ``W_U`` is derived: handing out its values unties first.

    ``named_parameters()``, ``parameters()``, optimizers and ``load_state_dict`` reach a module's
    parameters through ``_parameters.items()``; ``quiet`` suspends that for the module's own
    conversions (``to``) and ``state_dict``.
    """

    def __init__(self, owner: Unembed, entries: dict[str, Any]) -> None:
        super().__init__(entries)
        self.owner = owner
        self.quiet = False

    def _untie(self) -> None:
        if not self.quiet and self.owner._tied is not None:
            self.owner.untie_()

    def items(self) -> Any:  # noqa: D102
        self._untie()
        return super().items()

    def values(self) -> Any:  # noqa: D102
        self._untie()
        return super().values()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Copies and pickles hold a plain dict; Unembed.__setstate__ wraps it again.
        return (dict, (dict(dict.items(self)),))


class Unembed(LinearLayout, ResidualIO):
    """``W_U [d_model, d_vocab_out]``, ``b_U [d_vocab_out]``.

    ``W_U`` is a parameter, or (after processing a tied checkpoint) derived from the embedding:
    :meth:`tie_to_` switches to the derived form, :meth:`untie_` back for good (see
    :mod:`tlcore.components.tied_unembed` for what unties).

    Args:
        cfg: The model config (``d_model``, ``d_vocab_out``, ``dtype``).
    """

    def __init__(self, trait: UnembedTrait, cfg: Any) -> None:
        super().__init__()
        self.trait = trait
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        self._tied: TiedUnembedding | None = None

    linear_layouts = {"W_U": "matrix"}

    def residual_readers(self) -> list[Reader]:  # noqa: D102
        return [Reader(self, "W_U", "b_U", 0)]

    # ------------------------------------------------------------------------- the tied form
    @property
    def is_tied(self) -> bool:
        """Whether ``W_U`` is held derived from the embedding (no parameter of its own)."""
        return self._tied is not None

    def derived_weight(self, name: str) -> TiedUnembedding | None:
        """The derived form of parameter ``name`` (``W_U``), or None while it is a parameter.

        Args:
            name: A parameter name.

        Returns:
            Its derived form (for processing steps).
        """
        return self._tied if name == "W_U" else None

    def tie_to_(self, embed: nn.Module, name: str = "W_E", trusted: bool = False) -> bool:
        """Hold ``W_U`` as derived from ``embed.<name>`` if it equals its transpose exactly.

        Args:
            embed: The embedding module.
            name: Its ``[d_vocab, d_model]`` parameter.
            trusted: The caller knows they are equal (the loader read both from one checkpoint
                tensor): skip comparing the values.

        Returns:
            Whether ``W_U`` is now derived (the old parameter is released).
        """
        if self._tied is not None:
            return self._tied.embed is embed
        w_u, source = self._parameters.get("W_U"), embed._parameters.get(name)
        if w_u is None or source is None or not _same_layout(w_u, source):
            return False
        if not trusted and not _equal_transposed(w_u, source):
            return False
        self._tied = TiedUnembedding(embed, name, w_u.requires_grad)
        entries = {k: v for k, v in self._parameters.items() if k != "W_U"}
        self.__dict__["_parameters"] = _UntieOnEnumerate(self, entries)
        return True

    def untie_(self, check: bool = True) -> nn.Parameter:
        """Materialise the exact processed ``W_U`` as a parameter of its own, for good.

        Args:
            check: Refuse if the embedding changed since (False: its values are about to be
                overwritten, by ``load_state_dict``).

        Returns:
            ``W_U`` (the module's parameter from now on).

        Raises:
            TiedWeightsError: The embedding changed since ``W_U`` was derived from it.
        """
        tied = self._tied
        if tied is None:
            return self._parameters["W_U"]  # type: ignore[return-value]
        if check:
            tied.check()
        value = tied.materialize(device=self.b_U.device)
        param = nn.Parameter(value, requires_grad=tied.requires_grad)
        entries = {"W_U": param, **{k: v for k, v in dict.items(self._parameters) if k != "W_U"}}
        old = self._parameters
        dict.clear(old)
        dict.update(old, entries)  # an enumeration that is untying sees W_U
        self.__dict__["_parameters"] = dict(entries)
        self._tied = None
        return param

    def __getattr__(self, name: str) -> Any:
        if name == "W_U" and self.__dict__.get("_tied") is not None:
            return self.untie_()
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "W_U" and self.__dict__.get("_tied") is not None:
            self.untie_(check=False)  # a new W_U replaces the derived one
        super().__setattr__(name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.__dict__.get("_tied") is not None:
            self.__dict__["_parameters"] = _UntieOnEnumerate(self, dict(self._parameters))

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        params = self._parameters
        if not isinstance(params, _UntieOnEnumerate):
            yield
            return
        params.quiet = True
        try:
            yield
        finally:
            params.quiet = False

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        tied = self._tied
        if tied is None:
            return super()._apply(fn, recurse)
        source = tied.source
        probe = fn(torch.empty(0, dtype=source.dtype, device=source.device))
        if probe.device != source.device or probe.dtype != source.dtype:
            # Going somewhere the embedding is not (a device split, a cast of this part alone).
            self.untie_()
            return super()._apply(fn, recurse)
        with self._quiet():
            out = super()._apply(fn, recurse)
        tied.to_(probe.device)
        tied.resync()  # the embedding was converted first (it is registered before unembed)
        return out

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        tied = self._tied
        if tied is None:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        tied.check()
        destination[prefix + "W_U"] = tied.materialize(device=self.b_U.device)
        with self._quiet():
            super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        if self._tied is not None:
            self.untie_(check=prefix + "W_U" not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ---------------------------------------------------------------------------- forward
    def forward(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_vocab_out"]:
        """Compute logits.

        Args:
            x: Final normalised residual.

        Returns:
            Logits.
        """
        tied = self._tied
        if tied is not None and torch.is_grad_enabled() and tied.source.requires_grad:
            self.untie_()  # gradients for W_E and W_U as TransformerLens's untied model has them
            tied = None
        if tied is not None:
            logits = tied.logits(x, self.b_U)
        else:
            logits = F.linear(x, self.W_U.T, self.b_U)
        if self.trait.logit_scale != 1.0:
            logits = logits * self.trait.logit_scale
        if self.trait.softcap is not None:
            logits = self.trait.softcap * torch.tanh(logits / self.trait.softcap)
        return logits


def _same_layout(w_u: torch.Tensor, w_e: torch.Tensor) -> bool:
    """Shapes transposed, one dtype, one (real) device."""
    return (
        w_u.dim() == 2
        and w_u.shape == w_e.shape[::-1]
        and w_u.dtype == w_e.dtype
        and w_u.device == w_e.device
        and not (w_u.is_meta or w_e.is_meta)
    )


def _equal_transposed(w_u: torch.Tensor, w_e: torch.Tensor) -> bool:
    """``w_u == w_e.T`` exactly, compared a block of rows at a time (stops at a difference)."""
    if w_u.data_ptr() == w_e.data_ptr() and w_u.stride() == w_e.stride()[::-1]:
        return True  # one memory (an HF model's tied lm_head)
    rows = max(1, (1 << 20) // max(1, w_e.shape[1]))
    with torch.no_grad():
        for start in range(0, w_e.shape[0], rows):
            stop = min(start + rows, w_e.shape[0])
            if not torch.equal(w_u[:, start:stop].T, w_e[start:stop]):
                return False
    return True


def make_unembed(trait: UnembedTrait, cfg: Any) -> Unembed:
    """Component factory for ``unembed/linear``.

    Returns:
        The module.
    """
    return Unembed(trait, cfg)

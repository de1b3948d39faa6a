"""The processed unembedding of a tied checkpoint, held as the embedding plus a low-rank term.

A checkpoint that ties its unembedding to its embedding (GPT-2, Gemma, ...) loads with
``W_U == W_E.T``. TransformerLens's processing then gives them different values: with ``ln_final``
weight ``w`` folded, ``W_E`` centred over ``d_model`` (``C_d``) and ``W_U`` centred over the
vocabulary (``C_V``),

    ``W_U = C_d diag(w) W_E_orig^T C_V = diag(w) W_E^T + L R^T``

where ``W_E`` is the processed (centred) embedding and ``L R^T`` has rank at most 3 (one term per
centring). Materialising it would hold a second ``[d_vocab, d_model]`` matrix; instead
:class:`TiedUnembedding` keeps ``diag(scale) W_E^T + left right^T`` over the *live* embedding
parameter (shared storage, not a copy) and the unembedding's forward computes
``F.linear(x * scale, W_E, b_U) + (x left) right^T``: HF's tied ``lm_head`` plus a rank-r update.

Each processing step that touches ``W_U`` or ``W_E`` updates the factors exactly (in float64):
folding a norm (:meth:`TiedUnembedding.fold_`), centring ``W_U`` over either axis
(:meth:`TiedUnembedding.center_`) and centring ``W_E`` (:meth:`TiedUnembedding.source_centred_`,
called just before the embedding is rewritten). ``b_U`` stays a real parameter.

The rule that keeps TransformerLens's surface exact (:class:`~tlcore.components.unembed.Unembed`
implements it): anything that hands ``W_U`` out as a tensor unties for good, materialising the
exact processed values into a real ``nn.Parameter`` (the module then behaves as an untied one):
reading ``W_U``, enumerating parameters (``parameters()``, ``named_parameters()``, an optimizer,
``requires_grad_``), ``load_state_dict``, moving the unembedding apart from the embedding (another
device or dtype, a ``device_map`` / ``n_devices`` split), and a forward that records gradients for
``W_E`` (so ``W_E.grad`` and ``W_U.grad`` are TransformerLens's). ``state_dict()`` holds a computed
``unembed.W_U`` without untying. A change to ``W_E`` while tied (an in-place edit, an optimizer
step on ``W_E`` alone, a replaced parameter) would move ``W_U`` with it, which TransformerLens's
untied model does not: the next forward (or untie) raises :class:`~tlcore.errors.TiedWeightsError`
instead. Edits through ``W_E.data`` are invisible to that check: untie first.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tlcore.errors import TiedWeightsError

_ROWS_ELEMENTS = 1 << 17
"""Embedding rows worked on at once (``rows * d_model`` values: 1 MB of float64). Small on
purpose: glibc keeps freed blocks of this size in the heap, so larger slices stay resident."""

_MAX_RANK = 4
"""Above this rank the low-rank term is recompressed (a repeated processing appends terms)."""


def _master_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class TiedUnembedding:
    """``W_U = diag(scale) · W_E^T + left · right^T`` over the live embedding parameter.

    Args:
        embed: The module holding the embedding (``embed``).
        name: Its parameter (``W_E``, ``[d_vocab, d_model]``).
        requires_grad: Whether the parameter materialised on untie requires grad.
    """

    def __init__(self, embed: nn.Module, name: str, requires_grad: bool) -> None:
        self.embed = embed
        self.name = name
        self.requires_grad = requires_grad
        source = self.source
        d_vocab, d_model = source.shape
        dtype, device = _master_dtype(source.device), source.device
        self.scale: Float[torch.Tensor, " d_model"] = torch.ones(
            d_model, dtype=dtype, device=device
        )
        self.unit_scale = True
        self.left: Float[torch.Tensor, "d_model rank"] = torch.zeros(
            d_model, 0, dtype=dtype, device=device
        )
        self.right: Float[torch.Tensor, "d_vocab rank"] = torch.zeros(
            d_vocab, 0, dtype=dtype, device=device
        )
        self.resync()

    # ------------------------------------------------------------------------------ the source
    @property
    def source(self) -> torch.Tensor:
        """The embedding parameter, as the embedding module holds it now."""
        value = self.embed._parameters[self.name]
        assert value is not None
        return value

    def resync(self) -> None:
        """Take the embedding as it is now as the one ``W_U`` is derived from."""
        source = self.source
        self._ref: weakref.ref[torch.Tensor] | None = weakref.ref(source)
        self._version = source._version

    def __getstate__(self) -> dict[str, Any]:
        self.check()  # a copy must not start from a stale derivation
        return {**self.__dict__, "_ref": None}  # the copy takes its own embedding on first use

    def check(self) -> None:
        """Raise if the embedding changed since ``W_U`` was derived from it.

        Raises:
            TiedWeightsError: ``W_E`` was replaced or written in place.
        """
        if self._ref is None:  # a copy: its embedding is the copied one
            self.resync()
        source = self.source
        assert self._ref is not None
        if self._ref() is not source or source._version != self._version:
            raise TiedWeightsError(
                f"{self.name} was changed (written in place, by an optimizer, or replaced) after "
                "the processed unembedding W_U was derived from it. TransformerLens's processed "
                "W_U is independent of W_E, and its values can no longer be computed: reload the "
                "model, and untie first (read model.W_U or call model.unembed.untie_()) before "
                "changing W_E"
            )

    # ------------------------------------------------------------------------- exact algebra
    @property
    def rank(self) -> int:
        """The rank of the low-rank term (its number of columns)."""
        return int(self.left.shape[1])

    def _rows(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        source = self.source.detach()
        rows = max(1, _ROWS_ELEMENTS // max(1, source.shape[1]))
        for start in range(0, source.shape[0], rows):
            stop = min(start + rows, source.shape[0])
            yield start, stop, source[start:stop].to(self.scale.dtype)

    def _matvec(self, vec: torch.Tensor) -> torch.Tensor:
        """``W_E @ vec`` ``[d_vocab]`` in the master dtype, a block of rows at a time."""
        out = torch.empty(self.source.shape[0], dtype=self.scale.dtype, device=self.scale.device)
        for start, stop, rows in self._rows():
            out[start:stop] = rows @ vec
        return out

    def _append(self, left: torch.Tensor, right: torch.Tensor) -> None:
        self.left = torch.cat([self.left, left.to(self.left)[:, None]], dim=1)
        self.right = torch.cat([self.right, right.to(self.right)[:, None]], dim=1)
        if self.rank > _MAX_RANK:
            self._compress()

    def _compress(self) -> None:
        """Rewrite ``left right^T`` with as few columns as its numerical rank."""
        q_left, r_left = torch.linalg.qr(self.left)
        q_right, r_right = torch.linalg.qr(self.right)
        u, s, vh = torch.linalg.svd(r_left @ r_right.T)
        keep = s > (s.max() * 1e-13 if s.numel() else 0)
        self.left = q_left @ (u[:, keep] * s[keep])
        self.right = q_right @ vh[keep].T

    def fold_(
        self, weight: torch.Tensor | None, bias: torch.Tensor | None, center: bool
    ) -> torch.Tensor | None:
        """Fold a norm reading ``W_U``'s ``d_model`` axis: ``W_U ← C_d diag(w) W_U``.

        Args:
            weight: The norm's weight ``[d_model]`` (None: none).
            bias: Its bias (None or zeros: none).
            center: Centre over ``d_model`` afterwards (LayerNorm).

        Returns:
            ``W_U^T b`` ``[d_vocab]`` (before scaling, in the master dtype) to add to ``b_U``, or
            None without a bias.
        """
        extra = None
        if bias is not None and bool((bias != 0).any()):
            b = bias.detach().to(self.scale)
            extra = self._matvec(self.scale * b) + self.right @ (self.left.T @ b)
        if weight is not None:
            w = weight.detach().to(self.scale)
            self.scale = self.scale * w
            self.left = self.left * w[:, None]
            self.unit_scale = False
        if center:
            self.center_(0)
        return extra

    def center_(self, axis: int) -> None:
        """Subtract the mean over ``d_model`` (``axis`` 0) or the vocabulary (1) from ``W_U``.

        Args:
            axis: The axis of ``W_U`` ``[d_model, d_vocab]`` to centre over.
        """
        d_vocab, d_model = self.source.shape
        if axis % 2 == 0:
            # 1^T W_U = (W_E scale)^T + (1^T left) right^T
            self.left = self.left - self.left.mean(0, keepdim=True)
            ones = torch.ones(d_model, dtype=self.scale.dtype, device=self.scale.device)
            self._append(-ones / d_model, self._matvec(self.scale))
        else:
            # W_U 1 = scale * (1^T W_E) + left (right^T 1)
            column_sums = torch.zeros_like(self.scale)
            for _, _, rows in self._rows():
                column_sums += rows.sum(0)
            self.right = self.right - self.right.mean(0, keepdim=True)
            ones = torch.ones(d_vocab, dtype=self.scale.dtype, device=self.scale.device)
            self._append(-self.scale * column_sums / d_vocab, ones)

    def source_centred_(self) -> None:
        """Account for ``W_E ← W_E C_d`` (call it just before the embedding is centred).

        ``W_E_old = W_E_new + m 1^T`` with ``m`` each row's mean, so ``diag(scale) W_E_old^T``
        gains ``scale m^T``. ``m`` is rounded as the centring rounds the mean it subtracts.
        """
        means = torch.empty(self.source.shape[0], dtype=self.scale.dtype, device=self.scale.device)
        for start, stop, rows in self._rows():
            means[start:stop] = rows.mean(1)
        if self.source.dtype in (torch.float32, torch.float64):
            means = means.to(self.source.dtype).to(means.dtype)
        self._append(self.scale, means)

    # ------------------------------------------------------------------------------- use
    def materialize(
        self, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Float[torch.Tensor, "d_model d_vocab"]:
        """The processed ``W_U`` as a tensor, laid out for ``F.linear`` (``W_U.T`` contiguous).

        Args:
            device: Where (default: the embedding's device).
            dtype: Its dtype (default: the embedding's).

        Returns:
            ``[d_model, d_vocab]``.
        """
        source = self.source
        out = torch.empty(source.shape, dtype=dtype or source.dtype, device=device or source.device)
        for start, stop, rows in self._rows():
            value = rows * self.scale + self.right[start:stop] @ self.left.T
            out[start:stop].copy_(value)
        return out.T

    def logits(
        self, x: Float[torch.Tensor, "... d_model"], bias: torch.Tensor | None
    ) -> Float[torch.Tensor, "... d_vocab"]:
        """``x @ W_U + bias`` without materialising ``W_U``.

        Args:
            x: The final normalised residual.
            bias: ``b_U``.

        Returns:
            The logits.
        """
        self.check()
        weight = self.source
        if weight.device != x.device:
            weight = weight.to(x.device)
        if not self.unit_scale:
            x_in = x * self.scale.to(device=x.device, dtype=x.dtype)
        else:
            x_in = x
        out = F.linear(x_in, weight, bias)
        if self.rank:
            low = x.reshape(-1, x.shape[-1]) @ self.left.to(device=x.device, dtype=x.dtype)
            right = self.right.to(device=x.device, dtype=x.dtype)
            if out.requires_grad:
                out = out + (low @ right.T).view(out.shape)
            else:
                out.view(-1, out.shape[-1]).addmm_(low, right.T)
        return out

    def to_(self, device: torch.device) -> None:
        """Move the factors (kept in the master dtype) to ``device``.

        Args:
            device: The new device.
        """
        dtype = _master_dtype(device)
        self.scale = self.scale.to(device, dtype)
        self.left = self.left.to(device, dtype)
        self.right = self.right.to(device, dtype)

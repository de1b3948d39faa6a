"""Transformer blocks: how attention, MLP, norms and the residual stream are wired.

Layouts (the ``block`` slot): ``pre_norm`` (GPT-2, Llama), ``attn_only`` (TransformerLens's
``attn_only=True``: no MLP, no ``ln2``, no ``hook_resid_mid``), ``parallel`` (GPT-J and Phi with one
norm, NeoX with two), ``post_norm`` (original Transformer / OPT-350m / BERT), ``sandwich`` (Gemma
2/3: pre- and post-norm around each branch) and ``post_only`` (OLMo-2). Each is a small subclass
whose ``forward`` reads top to bottom, and whose trait declares the same wiring as data
(:class:`~tlcore.components.wiring.BlockWiring`), which the cache, weight processing and the parity
tool read.

Hooks (TransformerLens names): ``hook_resid_pre``, ``hook_attn_in`` / ``hook_q_input`` /
``hook_k_input`` / ``hook_v_input`` (behind ``use_attn_in`` / ``use_split_qkv_input``),
``hook_attn_out``, ``hook_resid_mid`` (not for parallel layouts), ``hook_mlp_in`` (behind
``use_hook_mlp_in``), ``hook_mlp_out``, ``hook_resid_post``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import nn

from tlcore.components.context import ForwardContext
from tlcore.components.mixer import SequenceMixer
from tlcore.components.wiring import BlockWiring, Branch, ResidMap, Scale
from tlcore.errors import SpecError
from tlcore.hook_points import HookPoint
from tlcore.spec.traits import Trait

Resid = Float[torch.Tensor, "batch pos d_model"]


class BlockTrait(Trait):
    """Base of block layouts: declares the layout's wiring (:meth:`wiring`)."""

    slot = "block"
    output_hook: ClassVar[str] = "hook_resid_post"
    """The block hook holding the block's output (what HF reports as the layer's hidden state)."""

    def wiring(self) -> BlockWiring:
        """How this layout reads and writes the residual stream.

        Returns:
            The wiring the block built from this trait owns (``block.wiring``).
        """
        raise NotImplementedError(f"block kind '{self.kind}' does not declare its wiring")


class ScaledBlockTrait(BlockTrait):
    """A built-in layout: each branch may be multiplied by a constant before the add."""

    residual_multiplier: float = 1.0
    """Each branch is multiplied by this before the add (Granite's ``residual_multiplier``)."""

    def _scale(self) -> tuple[ResidMap, ...]:
        if self.residual_multiplier == 1.0:
            return ()
        return (Scale(self.residual_multiplier),)


class PreNormTrait(ScaledBlockTrait):
    """``x + attn(ln1 x)``, then ``x + mlp(ln2 x)``."""

    kind: Literal["pre_norm"] = "pre_norm"

    def wiring(self) -> BlockWiring:  # noqa: D102
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", norm="ln1", to_resid=self._scale()),
                Branch("mlp", "hook_resid_mid", norm="ln2", to_resid=self._scale()),
            )
        )


class AttnOnlyTrait(ScaledBlockTrait):
    """``x + attn(ln1 x)``: attention only. The builder builds no MLP for a layout without one."""

    kind: Literal["attn_only"] = "attn_only"

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("attn_only", True)

    def wiring(self) -> BlockWiring:  # noqa: D102
        return BlockWiring((Branch("attn", "hook_resid_pre", norm="ln1", to_resid=self._scale()),))


class ParallelTrait(ScaledBlockTrait):
    """``x + attn(ln1 x) + mlp(ln x)``; the MLP's ``ln`` is ``ln1`` (``norms: 1``) or ``ln2``."""

    kind: Literal["parallel"] = "parallel"
    norms: Literal[1, 2] = 1

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("parallel_attn_mlp", True)

    def wiring(self) -> BlockWiring:  # noqa: D102
        mlp_norm = "ln1" if self.norms == 1 else "ln2"
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", norm="ln1", to_resid=self._scale()),
                Branch("mlp", "hook_resid_pre", norm=mlp_norm, to_resid=self._scale()),
            )
        )


class PostNormTrait(ScaledBlockTrait):
    """``ln1(x + attn x)``, then ``ln2(x + mlp x)``."""

    kind: Literal["post_norm"] = "post_norm"

    def wiring(self) -> BlockWiring:  # noqa: D102
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", to_resid=self._scale()),
                Branch("mlp", "hook_resid_mid", to_resid=self._scale()),
            ),
            stream_norms=("ln1", "ln2"),
        )


class SandwichTrait(ScaledBlockTrait):
    """``x + ln1_post(attn(ln1 x))``, then ``x + ln2_post(mlp(ln2 x))``."""

    kind: Literal["sandwich"] = "sandwich"

    def apply_to_cfg(self, cfg: dict[str, Any]) -> None:  # noqa: D102
        cfg.setdefault("use_normalization_before_and_after", True)

    def wiring(self) -> BlockWiring:  # noqa: D102
        scale = self._scale()
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", "ln1", "ln1_post", to_resid=scale),
                Branch("mlp", "hook_resid_mid", "ln2", "ln2_post", to_resid=scale),
            )
        )


class PostOnlyTrait(ScaledBlockTrait):
    """``x + ln1_post(attn x)``, then ``x + ln2_post(mlp x)`` (no pre-norms)."""

    kind: Literal["post_only"] = "post_only"

    def wiring(self) -> BlockWiring:  # noqa: D102
        scale = self._scale()
        return BlockWiring(
            (
                Branch("attn", "hook_resid_pre", post_norm="ln1_post", to_resid=scale),
                Branch("mlp", "hook_resid_mid", post_norm="ln2_post", to_resid=scale),
            )
        )


class TransformerBlock(nn.Module):
    """Shared machinery of every layout: hooks, flag-gated inputs, residual adds.

    The block builds every norm its wiring names (``ln1``, ``ln2``, ``ln1_post``...) and keeps the
    wiring as ``self.wiring``.

    Args:
        trait: The layout.
        cfg: The model config (the hook flags ``use_attn_in`` ... are read at each forward).
        attn: The layer's sequence mixer: attention, or a
            :class:`~tlcore.components.mixer.SequenceMixer` (held as ``block.<its branch>``).
        mlp: The MLP (or MoE) module, or None for a layer without one (attn_only, Mamba).
        make_norm: Builds a fresh block norm (None when the norm kind is ``none``).
    """

    def __init__(
        self,
        trait: BlockTrait,
        cfg: Any,
        layer: int,
        attn: nn.Module,
        mlp: nn.Module | None,
        make_norm: Callable[[], nn.Module | None],
    ) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        # Attention reads query/key/value inputs (with TransformerLens's input hooks); any other
        # sequence mixer reads the normalised residual and sits under its own name.
        self._mixes_qkv = not isinstance(attn, SequenceMixer)
        mixer: str = attn.branch if isinstance(attn, SequenceMixer) else "attn"
        if mlp is None and not self.allows_no_mlp:
            raise SpecError(f"block layout {type(self).__name__} needs an MLP in every layer")
        self.wiring = trait.wiring().for_layer(mixer, mlp is not None)
        self.residual_multiplier = float(getattr(trait, "residual_multiplier", 1.0))
        for name in self.wiring.norm_names:
            setattr(self, name, make_norm())
        setattr(self, mixer, attn)
        # No ``mlp`` attribute at all without one, as TransformerLens's attention-only blocks.
        self.has_mlp = mlp is not None
        if mlp is not None:
            self.mlp = mlp
        self.hook_resid_pre = HookPoint()
        if self._mixes_qkv:
            self.hook_attn_in = HookPoint()
            self.hook_q_input = HookPoint()
            self.hook_k_input = HookPoint()
            self.hook_v_input = HookPoint()
        self._mixer_name: str = mixer
        setattr(self, f"hook_{mixer}_out", HookPoint())
        if self.wiring.has_resid_mid:
            self.hook_resid_mid = HookPoint()
        if mlp is not None:
            self.hook_mlp_in = HookPoint()
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    allows_no_mlp = False
    """Whether the layout's forward handles a layer without an MLP branch."""

    def _mixer_out(self, x: Resid) -> Resid:
        """The output hook of the layer's sequence mixer (``hook_attn_out`` for attention)."""
        hook: HookPoint = getattr(self, f"hook_{self._mixer_name}_out")
        return hook(x)

    def _mix(self, resid: Resid, ctx: ForwardContext, norm: str | None) -> Resid:
        """Run the layer's sequence mixer on ``resid`` (normalised by ``norm`` unless None)."""
        if self._mixes_qkv:
            return self._attention(resid, ctx, norm)
        mixer = getattr(self, self._mixer_name)
        return mixer(self._norm(norm, resid) if norm is not None else resid, ctx)

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, name, None)
        return norm(x) if norm is not None else x

    def _add(self, resid: Resid, branch: Resid) -> Resid:
        if self.residual_multiplier != 1.0:
            branch = branch * self.residual_multiplier
        return resid + branch

    def _attention(self, resid: Resid, ctx: ForwardContext, norm: str | None) -> Resid:
        """Run attention on ``resid`` (normalised by ``norm`` unless None), with the input hooks."""
        cfg = self.cfg
        if cfg.use_split_qkv_input or cfg.use_attn_in:
            n_kv = cfg.n_heads if cfg.ungroup_grouped_query_attention else cfg.n_key_value_heads
            if cfg.use_attn_in:
                q_in = k_in = v_in = self.hook_attn_in(_per_head(resid, cfg.n_heads))
                if n_kv != cfg.n_heads:
                    k_in = v_in = _per_head(resid, n_kv)
            else:
                q_in = self.hook_q_input(_per_head(resid, cfg.n_heads))
                k_in = self.hook_k_input(_per_head(resid, n_kv))
                v_in = self.hook_v_input(_per_head(resid, n_kv))
            if norm is not None:
                q_in, k_in, v_in = (self._norm(norm, t) for t in (q_in, k_in, v_in))
        else:
            q_in = k_in = v_in = self._norm(norm, resid) if norm is not None else resid
        if ctx.shortformer_pos_embed is not None:
            pos = ctx.shortformer_pos_embed
            pos = pos[:, :, None, :] if q_in.dim() == 4 else pos
            q_in = q_in + pos
            k_in = k_in + (pos[:, :, :1] if k_in.dim() == 4 and pos.dim() == 4 else pos)
        attn = getattr(self, self._mixer_name)  # ``attn``
        return attn(q_in, k_in, v_in, ctx)

    def _mlp(self, x: Resid, norm: str | None) -> Resid:
        assert self.has_mlp, "only called for layers with an MLP"
        if self.cfg.use_hook_mlp_in:
            x = self.hook_mlp_in(x.clone())
        return self.mlp(self._norm(norm, x) if norm is not None else x)


class PreNormBlock(TransformerBlock):
    """Pre-norm sequential block (a layer without an MLP is ``x + mixer(ln1 x)``)."""

    allows_no_mlp = True

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._mix(resid_pre, ctx, "ln1"))
        if not self.has_mlp:  # norm, mixer, residual add (Mamba)
            return self.hook_resid_post(self._add(resid_pre, attn_out))
        resid_mid = self.hook_resid_mid(self._add(resid_pre, attn_out))
        mlp_out = self.hook_mlp_out(self._mlp(resid_mid, "ln2"))
        return self.hook_resid_post(self._add(resid_mid, mlp_out))


class AttnOnlyBlock(TransformerBlock):
    """Attention only: ``resid_post = resid_pre + attn_out``."""

    allows_no_mlp = True

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._attention(resid_pre, ctx, "ln1"))
        return self.hook_resid_post(self._add(resid_pre, attn_out))


class ParallelBlock(TransformerBlock):
    """Attention and MLP read the same ``resid_pre``; no ``hook_resid_mid``."""

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._mix(resid_pre, ctx, "ln1"))
        mlp_out = self.hook_mlp_out(self._mlp(resid_pre, self._mlp_norm))
        return self.hook_resid_post(self._add(self._add(resid_pre, attn_out), mlp_out))

    @property
    def _mlp_norm(self) -> str | None:
        branch = self.wiring.branch("mlp")
        return branch.norm if branch is not None else None


class PostNormBlock(TransformerBlock):
    """Post-norm block: each norm follows its residual add."""

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._mix(resid_pre, ctx, None))
        resid_mid = self.hook_resid_mid(self._norm("ln1", self._add(resid_pre, attn_out)))
        mlp_out = self.hook_mlp_out(self._mlp(resid_mid, None))
        return self.hook_resid_post(self._norm("ln2", self._add(resid_mid, mlp_out)))


class SandwichBlock(TransformerBlock):
    """Pre- and post-norm around each branch; ``hook_attn_out``/``hook_mlp_out`` are post-normed."""

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._norm("ln1_post", self._mix(resid_pre, ctx, "ln1")))
        resid_mid = self.hook_resid_mid(self._add(resid_pre, attn_out))
        mlp_out = self.hook_mlp_out(self._norm("ln2_post", self._mlp(resid_mid, "ln2")))
        return self.hook_resid_post(self._add(resid_mid, mlp_out))


class PostOnlyBlock(TransformerBlock):
    """Post-norms only (OLMo-2): ``x + ln1_post(attn x)``, ``x + ln2_post(mlp x)``."""

    def forward(self, resid: Resid, ctx: ForwardContext) -> Resid:
        """Map ``resid_pre`` to ``resid_post``."""
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self._mixer_out(self._norm("ln1_post", self._mix(resid_pre, ctx, None)))
        resid_mid = self.hook_resid_mid(self._add(resid_pre, attn_out))
        mlp_out = self.hook_mlp_out(self._norm("ln2_post", self._mlp(resid_mid, None)))
        return self.hook_resid_post(self._add(resid_mid, mlp_out))


def runs_mlp(trait: Trait) -> bool:
    """Whether a block layout has an ``mlp`` branch (layouts that declare no wiring are assumed to).

    Args:
        trait: The ``block`` trait.

    Returns:
        False for ``attn_only``: the builder then builds no MLP.
    """
    if not isinstance(trait, BlockTrait):
        return True
    try:
        return trait.wiring().branch("mlp") is not None
    except NotImplementedError:
        return True


def _per_head(x: Resid, n: int) -> Float[torch.Tensor, "batch pos head_index d_model"]:
    return x[:, :, None, :].expand(-1, -1, n, -1).clone()


def _factory(cls: type[TransformerBlock]) -> Callable[..., TransformerBlock]:
    def make(
        trait: BlockTrait,
        cfg: Any,
        layer: int,
        attn: nn.Module,
        mlp: nn.Module | None,
        make_norm: Callable[[], nn.Module | None],
    ) -> TransformerBlock:
        return cls(trait, cfg, layer, attn, mlp, make_norm)

    make.__doc__ = f"Component factory for ``block/{cls.__name__}``."
    return make


make_pre_norm_block = _factory(PreNormBlock)
make_attn_only_block = _factory(AttnOnlyBlock)
make_parallel_block = _factory(ParallelBlock)
make_post_norm_block = _factory(PostNormBlock)
make_sandwich_block = _factory(SandwichBlock)
make_post_only_block = _factory(PostOnlyBlock)

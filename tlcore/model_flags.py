"""TransformerLens's hook flags: ``set_use_attn_result`` and friends.

The model refuses hooks on points the current flags leave unused, as TransformerLens's
``HookedTransformer`` does (``check_hooks_to_add``).
"""

from __future__ import annotations

from typing import Any, Literal

from tlcore.errors import HookNameError
from tlcore.hook_points import HookPoint

_FLAG_HOOKS = {
    "hook_result": ("use_attn_result", "set_use_attn_result"),
    "hook_q_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_k_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_v_input": ("use_split_qkv_input", "set_use_split_qkv_input"),
    "hook_mlp_in": ("use_hook_mlp_in", "set_use_hook_mlp_in"),
    "hook_attn_in": ("use_attn_in", "set_use_attn_in"),
    "hook_tokens": ("use_hook_tokens", "cfg.use_hook_tokens = True"),
}


class FlagsMixin:
    """The flag setters and ``check_hooks_to_add``."""

    cfg: Any

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute per-head outputs (``hook_result``, ``[batch, pos, head, d_model]``).

        Args:
            use_attn_result: On or off.
        """
        self.cfg.use_attn_result = use_attn_result

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Give each head its own copy of the residual input (``hook_q/k/v_input``).

        Args:
            use_split_qkv_input: On or off.
        """
        self.cfg.use_split_qkv_input = use_split_qkv_input

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Enable ``hook_mlp_in``.

        Args:
            use_hook_mlp_in: On or off.
        """
        self.cfg.use_hook_mlp_in = use_hook_mlp_in

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Enable ``hook_attn_in`` (one residual copy per head, shared by q, k and v).

        Args:
            use_attn_in: On or off.
        """
        self.cfg.use_attn_in = use_attn_in

    def set_ungroup_grouped_query_attention(self, ungroup: bool) -> None:
        """Expand grouped keys/values to one per query head before ``hook_k``/``hook_v``.

        Args:
            ungroup: On or off.
        """
        self.cfg.ungroup_grouped_query_attention = ungroup

    def check_hooks_to_add(
        self,
        hook_point: HookPoint,
        hook_point_name: str,
        hook: Any,
        dir: Literal["fwd", "bwd"] = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> None:
        """Refuse hooks on points the current flags leave unused (as TransformerLens does).

        Raises:
            HookNameError: If the hook point needs a flag that is off.
        """
        leaf = hook_point_name.rpartition(".")[2]
        if leaf in _FLAG_HOOKS:
            flag, setter = _FLAG_HOOKS[leaf]
            if not getattr(self.cfg, flag):
                remedy = f"set {setter}"
                if setter.startswith("set_"):
                    remedy = f"call model.{setter}(True)"
                raise HookNameError(
                    f"'{hook_point_name}' only fires with cfg.{flag} = True; {remedy} first"
                )

"""`get_act_name`: TransformerLens's shorthand hook names (``"k6"`` → ``blocks.6.attn.hook_k``)."""

from __future__ import annotations

import re

_LAYER_TYPE_ALIASES = {
    "a": "attn",
    "m": "mlp",
    "b": "",
    "block": "",
    "blocks": "",
    "attention": "attn",
}

_NAME_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}

_ATTN_NAMES = {"k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores"}
_MLP_NAMES = {"pre", "post", "mid", "pre_linear"}
_NORM_NAMES = {"scale", "normalized"}

# A leading word, then the layer digits, then (optionally) the layer type: "scale4ln1".
_SHORTHAND = re.compile(r"([a-z]+)(\d+)([a-z]?.*)")


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """Expand a shorthand activation name to a full hook name, exactly as TransformerLens does.

    A name that already looks full (it contains a dot or starts with ``hook_``) comes back unchanged
    when no layer or layer type is given. Otherwise the first run of digits in ``name`` is the layer
    and anything after it the layer type (``"scale4ln1"`` = ``("scale", 4, "ln1")``).
    Attention names (``q k v z rot_q rot_k result pattern attn_scores``) live under ``attn``; MLP
    names (``pre post mid pre_linear``) under ``mlp``; ``scale``/``normalized`` without a layer
    belong to ``ln_final``. Aliases: ``attn`` = ``pattern``, ``attn_logits`` = ``attn_scores``,
    ``key/query/value`` = ``k/q/v``, ``mlp_pre/mlp_mid/mlp_post`` = ``pre/mid/post``; layer types
    ``a`` = ``attn``, ``m`` = ``mlp``, ``b``/``block``/``blocks`` = the block itself.

    Args:
        name: A full hook name, or a shorthand such as ``"k"``, ``"k6"``, ``"resid_pre"``.
        layer: The layer index, for activations inside a block.
        layer_type: The sub-module (``"attn"``, ``"mlp"``, ``"ln1"``, ``"ln2"``, or an alias) for
            names that occur in several places in a block.

    Returns:
        The full hook name.

    Examples:
        >>> get_act_name("k", 6, "a")
        'blocks.6.attn.hook_k'
        >>> get_act_name("k6")
        'blocks.6.attn.hook_k'
        >>> get_act_name("pre5")
        'blocks.5.mlp.hook_pre'
        >>> get_act_name("scale4ln1")
        'blocks.4.ln1.hook_scale'
        >>> get_act_name("normalized", 27, "ln2")
        'blocks.27.ln2.hook_normalized'
        >>> get_act_name("attn", 0)
        'blocks.0.attn.hook_pattern'
        >>> get_act_name("resid_pre", 3)
        'blocks.3.hook_resid_pre'
        >>> get_act_name("scale")
        'ln_final.hook_scale'
        >>> get_act_name("normalized", layer_type="ln_final")
        'ln_final.hook_normalized'
        >>> get_act_name("embed")
        'hook_embed'
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    match = _SHORTHAND.match(name)
    if match is not None:
        name, layer, layer_type = match.groups()
    name = _NAME_ALIASES.get(name, name)

    full_name = f"blocks.{layer}." if layer is not None else ""
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIASES:
        layer_type = _LAYER_TYPE_ALIASES[layer_type]
    if layer_type:
        full_name += f"{layer_type}."
    full_name += f"hook_{name}"

    # TransformerLens also prefixes when layer_type is already "ln_final", giving the invalid
    # "ln_final.ln_final.hook_scale"; we don't.
    if name in _NORM_NAMES and layer is None and layer_type != "ln_final":
        full_name = f"ln_final.{full_name}"
    return full_name

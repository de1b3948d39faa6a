"""get_act_name: TransformerLens's shorthand hook names."""

from __future__ import annotations

import pytest

from tlcore.utils.act_names import get_act_name


@pytest.mark.parametrize(
    "args, expected",
    [
        # TransformerLens's documented examples.
        (("k", 6, "a"), "blocks.6.attn.hook_k"),
        (("pre", 2), "blocks.2.mlp.hook_pre"),
        (("embed",), "hook_embed"),
        (("normalized", 27, "ln2"), "blocks.27.ln2.hook_normalized"),
        (("k6",), "blocks.6.attn.hook_k"),
        (("scale4ln1",), "blocks.4.ln1.hook_scale"),
        (("pre5",), "blocks.5.mlp.hook_pre"),
        # Attention names go under attn, whatever layer_type says.
        (("q", 0), "blocks.0.attn.hook_q"),
        (("v", 1), "blocks.1.attn.hook_v"),
        (("z", 3), "blocks.3.attn.hook_z"),
        (("result", 3), "blocks.3.attn.hook_result"),
        (("rot_q", 2), "blocks.2.attn.hook_rot_q"),
        (("rot_k", 2), "blocks.2.attn.hook_rot_k"),
        (("pattern", 0), "blocks.0.attn.hook_pattern"),
        (("attn", 0), "blocks.0.attn.hook_pattern"),
        (("attn_scores", 1), "blocks.1.attn.hook_attn_scores"),
        (("attn_logits", 1), "blocks.1.attn.hook_attn_scores"),
        (("key", 1), "blocks.1.attn.hook_k"),
        (("query", 1), "blocks.1.attn.hook_q"),
        (("value", 1), "blocks.1.attn.hook_v"),
        (("q", 1, "mlp"), "blocks.1.attn.hook_q"),
        (("attn0",), "blocks.0.attn.hook_pattern"),
        (("q12",), "blocks.12.attn.hook_q"),
        # MLP names go under mlp.
        (("post", 4), "blocks.4.mlp.hook_post"),
        (("mid", 4), "blocks.4.mlp.hook_mid"),
        (("pre_linear", 4), "blocks.4.mlp.hook_pre_linear"),
        (("mlp_pre", 4), "blocks.4.mlp.hook_pre"),
        (("mlp_mid", 4), "blocks.4.mlp.hook_mid"),
        (("mlp_post", 4), "blocks.4.mlp.hook_post"),
        (("post10",), "blocks.10.mlp.hook_post"),
        # Block-level names.
        (("resid_pre", 0), "blocks.0.hook_resid_pre"),
        (("resid_mid", 0), "blocks.0.hook_resid_mid"),
        (("resid_post", 11), "blocks.11.hook_resid_post"),
        (("attn_out", 2), "blocks.2.hook_attn_out"),
        (("mlp_out", 2), "blocks.2.hook_mlp_out"),
        (("q_input", 1), "blocks.1.hook_q_input"),
        (("k_input", 1), "blocks.1.hook_k_input"),
        (("v_input", 1), "blocks.1.hook_v_input"),
        (("attn_in", 1), "blocks.1.hook_attn_in"),
        (("mlp_in", 1), "blocks.1.hook_mlp_in"),
        (("resid_pre", 1, "b"), "blocks.1.hook_resid_pre"),
        (("resid_pre", 1, "block"), "blocks.1.hook_resid_pre"),
        # Norms: layer types, aliases, and ln_final without a layer.
        (("scale", 3, "ln1"), "blocks.3.ln1.hook_scale"),
        (("scale", 3, "ln2"), "blocks.3.ln2.hook_scale"),
        (("normalized", 0, "ln1"), "blocks.0.ln1.hook_normalized"),
        (("scale",), "ln_final.hook_scale"),
        (("normalized",), "ln_final.hook_normalized"),
        (("scale", None, "ln_final"), "ln_final.hook_scale"),
        (("normalized3ln2",), "blocks.3.ln2.hook_normalized"),
        (("pos_embed",), "hook_pos_embed"),
        (("tokens",), "hook_tokens"),
        # Layer types "a"/"m" and the spelled-out alias.
        (("foo", 2, "a"), "blocks.2.attn.hook_foo"),
        (("foo", 2, "m"), "blocks.2.mlp.hook_foo"),
        (("foo", 2, "attention"), "blocks.2.attn.hook_foo"),
        (("foo", 2, "ln1"), "blocks.2.ln1.hook_foo"),
        # A string layer is accepted as is.
        (("k", "7"), "blocks.7.attn.hook_k"),
    ],
)
def test_get_act_name(args, expected):
    assert get_act_name(*args) == expected


@pytest.mark.parametrize(
    "name", ["blocks.0.attn.hook_pattern", "hook_embed", "ln_final.hook_scale", "hook_tokens"]
)
def test_full_names_pass_through(name):
    assert get_act_name(name) == name


def test_underscored_shorthand_with_digits_is_not_split():
    # TransformerLens's regex needs letters then digits; "resid_pre5" does not match it.
    assert get_act_name("resid_pre5") == "hook_resid_pre5"


def test_layer_zero_is_a_layer():
    assert get_act_name("resid_post", 0) == "blocks.0.hook_resid_post"
    assert get_act_name("scale", 0, "ln1") == "blocks.0.ln1.hook_scale"

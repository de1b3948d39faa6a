"""The config guard: which non-default HF fields are accepted, why, and what is refused.

The facts checked here come from transformers itself (what its modelling code reads, what its
config classes derive), not from lists the tests made up.
"""

from __future__ import annotations

import pytest
from transformers import AutoConfig, FalconConfig, GPT2Config, LlamaConfig

from tlcore.config_resolution import resolve_config
from tlcore.errors import InvalidConfigError, UnsupportedConfigError
from tlcore.guard import check_config_guard, hf_read_fields, non_default_fields
from tlcore.loading.resolve import hf_config_object, spec_for_hf_config
from tlcore.registry import get_registry


def spec(name: str):
    return get_registry().get_spec(name)


def test_the_scan_finds_what_gpt2s_code_reads_and_not_its_legacy_keys():
    reads = hf_read_fields(GPT2Config)
    assert {"n_embd", "n_layer", "n_head", "n_inner", "activation_function"} <= reads
    # attribute_map: modelling code reads config.hidden_size, which is n_embd.
    assert "hidden_size" in reads and GPT2Config.attribute_map["hidden_size"] == "n_embd"
    assert not {"n_ctx", "n_special", "predict_special_tokens"} & reads


def test_non_default_fields_compare_with_the_class_defaults():
    config = AutoConfig.for_model("gpt2", n_ctx=1024, n_embd=64)
    assert non_default_fields(config) == {"n_ctx", "n_embd"}
    assert non_default_fields(GPT2Config()) == set()


def test_legacy_gpt2_keys_are_accepted_as_never_read_by_hf():
    config = AutoConfig.for_model("gpt2", n_ctx=1024, n_special=0, predict_special_tokens=True)
    cfg = resolve_config(spec("gpt2"), config)
    assert cfg.extra["config_guard"]["not_read_by_hf"] == [
        "n_ctx",
        "n_special",
        "predict_special_tokens",
    ]


def test_a_field_hf_reads_and_the_spec_does_not_is_refused():
    # Llama's attention honours attention_chunk_size (masking_utils); the llama spec reads it not.
    assert "attention_chunk_size" in hf_read_fields(LlamaConfig)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=100,
        attention_chunk_size=8,
    )
    with pytest.raises(UnsupportedConfigError, match=r"attention_chunk_size=8"):
        resolve_config(spec("llama"), config)


def test_a_field_hf_derives_from_another_is_accepted():
    config = FalconConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_kv_heads=2,
        new_decoder_architecture=True,
        num_hidden_layers=1,
    )
    assert config.num_key_value_heads == 2  # transformers 5.25 stores it, derived
    guard = resolve_config(spec("falcon"), config).extra["config_guard"]
    accepted = guard.get("not_read_by_hf", []) + guard.get("derived_by_hf", [])
    assert "num_key_value_heads" in accepted and "num_kv_heads" in guard["read_by_spec"]


def test_inference_neutral_fields_are_accepted_with_their_reason():
    config = LlamaConfig(attention_dropout=0.1, initializer_range=0.5, pad_token_id=3)
    verdict = check_config_guard(spec("llama"), config, read=set())
    assert {"attention_dropout", "initializer_range", "pad_token_id"} <= set(
        verdict.inference_neutral
    )


def test_quantised_checkpoints_are_refused_unless_the_loader_dequantises_them():
    gptq = LlamaConfig(quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(UnsupportedConfigError, match="quant_method='gptq'"):
        check_config_guard(spec("llama"), gptq, read=set())
    mxfp4 = AutoConfig.for_model("gpt_oss", quantization_config={"quant_method": "mxfp4"})
    check_config_guard(spec("gpt_oss"), mxfp4, read=set())


def test_a_multimodal_wrappers_quantisation_is_refused_for_its_text_tower():
    # The wrapper's quantization_config sits beside text_config, not inside it.
    wrapper = {
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2},
        "quantization_config": {"quant_method": "awq", "bits": 4},
    }
    config = hf_config_object(wrapper)
    with pytest.raises(UnsupportedConfigError, match="quant_method='awq'"):
        resolve_config(spec_for_hf_config(config), config)
    del wrapper["quantization_config"]
    config = hf_config_object(wrapper)
    assert resolve_config(spec_for_hf_config(config), config).d_model == 64


def test_guard_unsupported_refuses_named_values_even_when_read():
    config = AutoConfig.for_model("bloom", apply_residual_connection_post_layernorm=True)
    with pytest.raises(UnsupportedConfigError, match="guard.unsupported"):
        resolve_config(spec("bloom"), config)


def test_a_model_registered_at_run_time_is_scanned_too():
    from torch import nn
    from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

    class GuardProbeConfig(PretrainedConfig):
        model_type = "tlcore_guard_probe"

        def __init__(self, width: int = 4, legacy: int = 0, **kwargs):
            self.width, self.legacy = width, legacy
            super().__init__(**kwargs)

    class GuardProbeForCausalLM(PreTrainedModel):
        config_class = GuardProbeConfig

        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.width, config.width)

    AutoConfig.register("tlcore_guard_probe", GuardProbeConfig, exist_ok=True)
    AutoModelForCausalLM.register(GuardProbeConfig, GuardProbeForCausalLM, exist_ok=True)
    reads = hf_read_fields(GuardProbeConfig)
    assert reads is not None and "width" in reads and "legacy" not in reads


def test_a_field_hf_reads_but_derives_is_accepted_as_derived():
    # LlamaConfig computes head_dim = hidden_size // num_attention_heads when it is not given.
    config = LlamaConfig(hidden_size=64, num_attention_heads=4)
    assert config.head_dim == 16 and "head_dim" in hf_read_fields(LlamaConfig)
    read = non_default_fields(config) - {"head_dim"}
    verdict = check_config_guard(spec("llama"), config, read=read)
    assert verdict.derived_by_hf == ["head_dim"] and verdict.refused == []
    # The same value given on its own (no longer implied by the others) is refused.
    explicit = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=32)
    with pytest.raises(UnsupportedConfigError, match="head_dim=32"):
        check_config_guard(
            spec("llama"), explicit, read=non_default_fields(explicit) - {"head_dim"}
        )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("hidden_size", "abc", "hidden_size"),  # tlcore's own size check
        ("tie_word_embeddings", "yes", "tie_word_embeddings"),  # transformers' strict dataclass
    ],
)
def test_config_dict_with_a_wrong_field_type_is_a_typed_error(field, value, named):
    # transformers' strict dataclasses raise huggingface_hub's untyped validation error; a dict
    # config must fail like a config.json file does: a tlcore error naming the field.
    with pytest.raises(InvalidConfigError, match=named):
        hf_config_object({"model_type": "llama", field: value})

"""The shrinker fills what a wrapper's ``text_config`` leaves to its class, and nothing else."""

from __future__ import annotations

from transformers import AutoConfig

from tlcore.testing.shrink import shrink_config_dict


def test_heads_a_text_config_leaves_out_come_from_its_class():
    # google/gemma-3-4b-it states the width and depth of its text tower but not its heads, so
    # Gemma3TextConfig's defaults (8 query heads sharing 4 key-value heads) apply.
    real = {
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": 2560,
                        "intermediate_size": 10240, "num_hidden_layers": 34},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
    }  # fmt: skip
    text = shrink_config_dict(real)["text_config"]
    assert text["num_attention_heads"] == 2 * text["num_key_value_heads"]
    assert text["num_hidden_layers"] < 34 and text["hidden_size"] < 2560
    tiny = AutoConfig.for_model("gemma3", **{k: v for k, v in real.items() if k != "model_type"})
    assert tiny.text_config.num_attention_heads == 8  # what HF builds for the real config


def test_stated_heads_keep_the_class_from_adding_other_key_value_heads():
    # A LLaVA-1.5-13B style text_config: 40 heads, no key-value count, so HF uses 40 (MHA);
    # LlamaConfig's default head count (32) must not bring its own key-value count along.
    real = {
        "model_type": "llava",
        "text_config": {"model_type": "llama", "hidden_size": 5120, "num_attention_heads": 40,
                        "num_hidden_layers": 40, "intermediate_size": 13824},
    }  # fmt: skip
    text = shrink_config_dict(real)["text_config"]
    assert "num_key_value_heads" not in text
    built = AutoConfig.for_model(**text)  # model_type is the first argument
    assert built.num_key_value_heads == text["num_attention_heads"]


def test_a_config_with_both_layouts_shrinks_the_text_config_too():
    # transformers 4.55 saved Qwen2.5-VL fine-tunes (allenai/olmOCR-2-7B-1025) with the flat
    # text fields AND a text_config; transformers 5 builds the language model from text_config,
    # so a shrinker that only shrinks the flat fields builds a full-size 7B model.
    text = {
        "model_type": "qwen2_5_vl_text",
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "num_hidden_layers": 28,
        "intermediate_size": 18944,
        "vocab_size": 152064,
    }
    vision = {"depth": 32, "hidden_size": 1280, "out_hidden_size": 3584}
    real = {**text, "model_type": "qwen2_5_vl", "text_config": text, "vision_config": vision}
    tiny = shrink_config_dict(real)
    config = AutoConfig.for_model(
        "qwen2_5_vl", **{k: v for k, v in tiny.items() if k != "model_type"}
    )
    assert config.text_config.hidden_size == tiny["hidden_size"] < 3584
    assert config.text_config.num_hidden_layers == tiny["num_hidden_layers"] < 28
    assert config.text_config.vocab_size == tiny["vocab_size"] < 152064
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size

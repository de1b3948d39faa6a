"""Text towers are registered through the ``register_specs`` hook, like the built-ins' own."""

from __future__ import annotations

import pytest

from tlcore import hookimpl
from tlcore.errors import PluginError
from tlcore.loading.resolve import spec_for_hf_config
from tlcore.registry import get_registry

pytest_plugins = ["tlcore.testing.pytest_plugin"]

TOWER = {"model_types": ["toy_vlm"], "config": "text_config",
         "keys": {"model.": ["language_model.model."]}, "skip": ["vision_tower."]}  # fmt: skip


def test_a_plugin_registers_a_text_tower_and_the_wrapper_resolves_to_its_text_spec(
    tlcore_plugin,
) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.text_tower(TOWER)

    record = tlcore_plugin(Plugin(), "toy-vlm")
    assert record.registered["text_towers"] == ["toy_vlm"]
    wrapper = {"model_type": "toy_vlm", "text_config": {"model_type": "llama"}}
    spec = spec_for_hf_config(wrapper)
    assert spec.name == "llama" and spec.text_tower is not None
    assert spec.text_tower.text_key("language_model.model.norm.weight") == "model.norm.weight"
    assert spec.text_tower.text_key("vision_tower.layer.weight") is None


def test_a_second_tower_for_a_model_type_is_refused(tlcore_plugin) -> None:
    class Plugin:
        @hookimpl
        def register_specs(self, register) -> None:
            register.text_tower({**TOWER, "model_types": ["gemma3"]})

    with pytest.raises(PluginError, match="text tower of model_type 'gemma3'"):
        tlcore_plugin(Plugin(), "second-gemma3-tower")
    assert get_registry().text_towers["gemma3"][1].plugin == "tlcore.builtin.plugin"

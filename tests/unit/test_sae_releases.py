"""The model table's SAE column is checked, not claimed (issue 15, item 7).

Every release in ``specs/sae_releases.yaml`` whose model has a real config in the corpus is
resolved to tlcore's spec of that config and its model is built on the meta device; the hook names
the release's SAEs read must exist there (except where tlcore is known to lack a hook name).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tlcore.registry import get_registry
from tlcore.sae_releases import SAERelease, missing_hooks, model_hook_names, sae_releases

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hub_configs"
BY_CONFIG: dict[str, list[SAERelease]] = defaultdict(list)
for _release in sae_releases():
    if _release.spec is not None and _release.config is not None:
        BY_CONFIG[_release.config].append(_release)

# The releases researchers reach for first; each must attach to tlcore's hook points as named.
MUST_SERVE = {
    "gemma-scope-2b-pt-res", "gemma-scope-2b-pt-mlp", "gemma-scope-2b-pt-att",
    "gemma-scope-2b-pt-transcoders", "gemma-scope-9b-pt-res", "gemma-scope-9b-it-res",
    "gemma-scope-2-270m-pt-res", "gemma-scope-2-1b-it-res", "gemma-scope-2-4b-pt-res",
    "gemma-scope-2-4b-it-transcoders", "gemma-scope-2-27b-it-res", "gemma-scope-2-27b-it-att-all",
    "llama_scope_lxr_8x", "llama_scope_lxa_32x", "llama_scope_lxm_8x",
    "qwen-scope-3-1.7b-base-w32k-l50", "qwen-scope-3-8b-base-w64k-l100",
    "qwen-scope-3-30b-a3b-base-w32k-l50", "gpt2-small-res-jb", "gpt2-small-resid-post-v5-32k",
    "gpt2-small-attn-out-v5-128k", "pythia-70m-deduped-res-sm", "pythia-70m-deduped-att-sm",
}  # fmt: skip
# Circuit-tracer transcoders read ``blocks.{l}.mlp.hook_in``: tlcore names the MLP's input
# ``blocks.{l}.hook_mlp_in`` (TransformerLens's name) and has no ``mlp.hook_in``.
KNOWN_UNSERVED = {"mwhanna-qwen3-"}


@pytest.mark.parametrize("config", sorted(BY_CONFIG))
def test_release_hook_names_exist_in_tlcore(config: str):
    data = json.loads((CORPUS / config).read_text())
    model = model_hook_names(data)
    for release in BY_CONFIG[config]:
        missing = missing_hooks(release, data, model)
        if release.release.startswith(tuple(KNOWN_UNSERVED)):
            assert missing and all(".mlp.hook_in" in name for name in missing), release.release
        else:
            assert missing == [], f"{release.release}: {missing[:5]}"


def test_the_main_releases_are_listed_with_a_checked_config():
    listed = {r.release: r for r in sae_releases()}
    for name in MUST_SERVE:
        assert listed[name].config is not None and listed[name].spec is not None, name


def test_release_data_agree_with_saelens_facts():
    listed = {r.release: r for r in sae_releases()}
    # Gemma Scope 2B residual: the embedding SAEs read hook_embed, the last layer is 25 of 26.
    assert {"hook_embed", "blocks.25.hook_resid_post"} <= set(
        listed["gemma-scope-2b-pt-res"].hook_names()
    )
    # jbloom's GPT-2 small SAEs: resid_pre of the 12 blocks plus the last resid_post.
    names = listed["gpt2-small-res-jb"].hook_names()
    assert len(names) == 13 and "blocks.11.hook_resid_post" in names
    # Gemma Scope 2 transcoders read the MLP input and write its output.
    assert listed["gemma-scope-2-4b-pt-transcoders"].hooks["blocks.{layer}.hook_mlp_in"]
    assert listed["gemma-scope-2-4b-pt-res"].spec == "gemma3"
    assert listed["llama_scope_lxa_8x"].hook_names()[0].endswith("hook_attn_out")


def test_every_named_spec_and_config_exists():
    registry = get_registry()
    for release in sae_releases():
        if release.spec is not None:
            assert release.spec in registry.specs, release.release
        if release.config is not None:
            assert (CORPUS / release.config).is_file(), release.release

"""Regenerate specs/sae_releases.yaml from SAELens's list of pretrained SAE releases.

Usage (with an environment that has sae-lens installed)::

    python tools/gen_sae_releases.py [path/to/sae_lens/pretrained_saes.yaml]

For each release of the families below it records the hook names its SAEs read, derived the way
SAELens derives them (the conversion function named in the release; releases without one name
their hook in the SAE id), the model, the tlcore spec that serves it, and a real config.json from
tests/data/hub_configs with that model's dimensions. tests/unit/test_sae_releases.py builds
tlcore's model of each config on the meta device and checks that every hook name exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# SAELens model name -> (tlcore spec, corpus config with that model's dimensions)
MODELS: dict[str, tuple[str, str | None]] = {
    "gpt2-small": ("gpt2", "openai-community__gpt2.json"),
    "pythia-70m-deduped": ("gpt_neox", "EleutherAI__pythia-70m.json"),
    "gemma-2-2b": ("gemma2", "google__gemma-2-2b-it.json"),
    "gemma-2-9b": ("gemma2", "google__gemma-2-9b-it.json"),
    "gemma-2-9b-it": ("gemma2", "google__gemma-2-9b-it.json"),
    "gemma-2-27b": ("gemma2", None),
    "google/gemma-3-270m": ("gemma3", "google__gemma-3-270m-it.json"),
    "google/gemma-3-270m-it": ("gemma3", "google__gemma-3-270m-it.json"),
    "google/gemma-3-1b-pt": ("gemma3", "google__gemma-3-1b-it.json"),
    "google/gemma-3-1b-it": ("gemma3", "google__gemma-3-1b-it.json"),
    "google/gemma-3-4b-pt": ("gemma3", "gghfez__gemma-3-4b-novision.json"),
    "google/gemma-3-4b-it": ("gemma3", "gghfez__gemma-3-4b-novision.json"),
    "google/gemma-3-12b-pt": ("gemma3", None),
    "google/gemma-3-12b-it": ("gemma3", None),
    "google/gemma-3-27b-pt": ("gemma3", "google__medgemma-27b-it.json"),
    "google/gemma-3-27b-it": ("gemma3", "google__medgemma-27b-it.json"),
    "meta-llama/Llama-3.1-8B": ("llama", "meta-llama__Llama-3.1-8B.json"),
    "Qwen/Qwen3-1.7B-Base": ("qwen3", "Qwen__Qwen3-1.7B.json"),
    "Qwen/Qwen3-8B-Base": ("qwen3", "Qwen__Qwen3-8B.json"),
    "Qwen/Qwen3-30B-A3B-Base": ("qwen3_moe", "Qwen__Qwen3-30B-A3B.json"),
    "Qwen/Qwen3.5-2B-Base": ("qwen3_5", None),
    "Qwen/Qwen3.5-9B-Base": ("qwen3_5", "Qwen__Qwen3.5-9B.json"),
    "Qwen/Qwen3.5-27B": ("qwen3_5", None),
    "Qwen/Qwen3.5-35B-A3B-Base": ("qwen3_5_moe", None),
    "qwen3-0.6b": ("qwen3", "Qwen__Qwen3-0.6B.json"),
    "qwen3-4b": ("qwen3", None),
    "qwen3-1.7b": ("qwen3", "Qwen__Qwen3-1.7B.json"),
    "qwen3-8b": ("qwen3", "Qwen__Qwen3-8B.json"),
    "qwen3-14b": ("qwen3", "Qwen__Qwen3-14B.json"),
}

FAMILIES = (
    ("gemma-scope-2-", "Gemma Scope 2"),
    ("gemma-scope-", "Gemma Scope"),
    ("llama_scope_lx", "Llama Scope"),
    ("qwen-scope-", "Qwen Scope"),
    ("mwhanna-qwen3-", "Qwen3 transcoders (mwhanna)"),
    ("gpt2-small-res-jb", "GPT-2 residual SAEs (jbloom)"),
    ("gpt2-small-res_", "GPT-2 residual SAEs (ajt)"),
    ("gpt2-small-resid-", "GPT-2 SAEs (OpenAI v5)"),
    ("gpt2-small-attn-out-", "GPT-2 SAEs (OpenAI v5)"),
    ("gpt2-small-mlp-out-", "GPT-2 SAEs (OpenAI v5)"),
    ("pythia-70m-deduped-", "Pythia SAEs (Marks et al.)"),
)

# Llama Scope's hook comes from each SAE's hyperparams.json (hook_point_in), not from the release
# list; the release names the sublayer: R = residual stream after the block, A = attention
# output, M = MLP output (the Llama Scope paper's positions).
LLAMA_SCOPE = {"R": "hook_resid_post", "A": "hook_attn_out", "M": "hook_mlp_out"}


def _layer(text: str) -> int:
    match = re.search(r"layer_?(\d+)", text)
    if match is None:
        raise ValueError(f"no layer in {text!r}")
    return int(match.group(1))


def hook_names(release: str, entry: dict[str, Any], sae: dict[str, Any]) -> list[str]:
    """The hook names one SAE reads (and writes, for transcoders), as SAELens derives them.

    Returns:
        Hook names.
    """
    func, path, repo = entry.get("conversion_func"), sae.get("path", ""), entry["repo_id"]
    if func is None:
        return [sae["id"]]
    if func == "gemma_2":  # get_gemma_2_config_from_hf
        if "res" in repo:
            return (
                ["hook_embed"]
                if "embedding" in path
                else [f"blocks.{_layer(path)}.hook_resid_post"]
            )
        if "mlp" in repo:
            return [f"blocks.{_layer(path)}.hook_mlp_out"]
        return [f"blocks.{_layer(path)}.attn.hook_z"]
    if func == "gemma_2_transcoder":  # get_gemma_2_transcoder_config_from_hf
        layer = _layer(path)
        return [f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"]
    if func == "gemma_3":  # get_gemma_3_config_from_hf
        layer = _layer(path)
        if "resid_post" in path:
            return [f"blocks.{layer}.hook_resid_post"]
        if "attn_out" in path:
            return [f"blocks.{layer}.attn.hook_z"]
        if "mlp_out" in path:
            return [f"blocks.{layer}.hook_mlp_out"]
        return [f"blocks.{layer}.hook_mlp_in", f"blocks.{layer}.hook_mlp_out"]
    if func == "llama_scope":
        match = re.search(r"-L(\d+)([RAM])-", path)
        assert match is not None, path
        return [f"blocks.{match.group(1)}.{LLAMA_SCOPE[match.group(2)]}"]
    if func == "qwen_scope":  # get_qwen_scope_config_from_hf
        return [f"blocks.{_layer(path)}.hook_resid_post"]
    if func == "mwhanna_transcoder":  # get_mwhanna_transcoder_config_from_hf
        layer = int(path.replace(".safetensors", "").split("_")[-1])
        return [f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"]
    raise ValueError(f"{release}: conversion {func} not handled")


def _compact(names: set[str]) -> dict[str, list[int]]:
    """``{"blocks.{layer}.hook_x": [layers]}`` (non-layer hooks map to an empty list)."""
    out: dict[str, list[int]] = {}
    for name in names:
        match = re.match(r"blocks\.(\d+)\.(.+)$", name)
        if match is None:
            out.setdefault(name, [])
        else:
            out.setdefault(f"blocks.{{layer}}.{match.group(2)}", []).append(int(match.group(1)))
    return {k: sorted(v) for k, v in sorted(out.items())}


def main() -> int:
    """Write specs/sae_releases.yaml.

    Returns:
        The exit status.
    """
    if len(sys.argv) > 1:
        source = Path(sys.argv[1])
    else:
        import sae_lens

        source = Path(sae_lens.__file__).parent / "pretrained_saes.yaml"
    releases = yaml.safe_load(source.read_text())
    out = []
    for release, entry in releases.items():
        family = next((f for prefix, f in FAMILIES if release.startswith(prefix)), None)
        if family is None or "feature-splitting" in release:
            continue
        model = entry["model"]
        names = {n for sae in entry["saes"] for n in hook_names(release, entry, sae)}
        spec, config = MODELS.get(model, (None, None))
        out.append(
            {
                "release": release,
                "family": family,
                "model": model,
                "repo_id": entry["repo_id"],
                "spec": spec,
                "config": config,
                "hooks": _compact(names),
            }  # fmt: skip
        )
    header = (
        "# Public SAE / transcoder releases and the tlcore spec whose hook points they read\n"
        "# (issue 15, item 7). GENERATED by tools/gen_sae_releases.py from sae-lens's\n"
        "# pretrained_saes.yaml (hook names derived as sae-lens's conversion functions derive\n"
        "# them); do not edit by hand. `config` is a real config.json in tests/data/hub_configs\n"
        "# with the release model's dimensions (null: none in the corpus; `spec: null`: no\n"
        "# tlcore spec). tests/unit/test_sae_releases.py proves every hook name exists in\n"
        "# tlcore's model of that config (or that the hooks it lacks are the known ones); the\n"
        "# README's model table lists the releases with none missing.\n"
    )
    text = header + yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=100)
    (ROOT / "specs" / "sae_releases.yaml").write_text(text)
    print(f"wrote {len(out)} releases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

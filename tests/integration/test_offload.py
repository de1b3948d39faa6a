"""Models larger than memory: device maps, disk and CPU offload, TransformerLens's n_devices split.

Every placement must leave the model's behaviour unchanged (logits, every cached activation,
greedy generation with the KV cache, hooks); a model left on "disk" must run holding only a part of
its weights in memory at a time, measured as the peak RSS of a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tlcore.errors import InputValidationError, UnsupportedConfigError
from tlcore.model import HookedTransformer
from tlcore.offload import placements, split_device_map
from tlcore.testing.random_checkpoint import write_random_llama

MAPS = [
    {"blocks": "disk"},
    {"embed": "disk", "blocks": "disk", "ln_final": "disk", "unembed": "disk"},
    {"blocks.1": "cpu", "unembed": "cpu"},
]


@pytest.fixture(scope="module")
def llama(tiny_checkpoint):
    folder, _ = tiny_checkpoint("llama")
    return str(folder), HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")


def _generate(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    return model.generate(tokens, 6, do_sample=False, stop_at_eos=False, verbose=False)


@pytest.mark.parametrize("device_map", MAPS, ids=["blocks-disk", "all-disk", "cpu"])
def test_placed_model_behaves_the_same(llama, device_map) -> None:
    folder, reference = llama
    model = HookedTransformer.from_pretrained_no_processing(
        folder, device="cpu", device_map=device_map
    )
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, cache = model.run_with_cache(tokens)
        theirs, ref_cache = reference.run_with_cache(tokens)
    assert torch.equal(ours, theirs)
    assert set(cache.keys()) == set(ref_cache.keys())
    assert all(torch.equal(cache[k], ref_cache[k]) for k in ref_cache.keys())
    assert torch.equal(_generate(model, tokens[:1]), _generate(reference, tokens[:1]))
    # A hook on an offloaded block still sees and changes its activation.
    seen = []

    def zero(x: torch.Tensor, hook) -> torch.Tensor:
        seen.append(hook.name)
        return torch.zeros_like(x)

    name = "blocks.1.hook_mlp_out"
    with torch.no_grad():
        hooked = model.run_with_hooks(tokens, fwd_hooks=[(name, zero)])
        expected = reference.run_with_hooks(tokens, fwd_hooks=[(name, zero)])
    assert seen == [name, name] and torch.equal(hooked, expected)


def test_n_devices_split_on_cpu_matches(llama) -> None:
    folder, _ = llama
    split = HookedTransformer.from_pretrained(folder, device="cpu", n_devices=2)
    plain = HookedTransformer.from_pretrained(folder, device="cpu")
    tokens = torch.randint(0, plain.cfg.d_vocab, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(split(tokens), plain(tokens))
    assert {p.compute.type for p in split.placements.values()} == {"cpu"}


def test_processed_cpu_offload_matches_processed(llama) -> None:
    folder, _ = llama
    placed = HookedTransformer.from_pretrained(folder, device="cpu", device_map={"blocks": "cpu"})
    plain = HookedTransformer.from_pretrained(folder, device="cpu")
    tokens = torch.randint(0, plain.cfg.d_vocab, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(placed(tokens), plain(tokens))


def test_split_device_map_follows_transformerlens() -> None:
    # TransformerLens: block i on base + i * n_devices // n_layers (62 layers over 8 devices).
    split = split_device_map(62, 8, "cuda:0")
    assert [split[f"blocks.{i}"] for i in (0, 7, 8, 61)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:7"]
    assert split["embed"] == "cuda:0" and split["unembed"] == split["ln_final"] == "cuda:7"
    assert split_device_map(3, 2, "cuda:2")["blocks.2"] == "cuda:3"


def test_placements_stream_cpu_and_disk_parts_to_the_accelerator(llama) -> None:
    _, model = llama
    plan = placements(model, {"blocks": "cpu", "blocks.1": "disk"}, torch.device("cuda"))
    assert plan["blocks.0"].home == "cpu" and plan["blocks.0"].compute == torch.device("cuda")
    assert plan["blocks.0"].streamed and plan["blocks.1"].home == "disk"
    assert plan["embed"].home == "cuda" and not plan["embed"].streamed
    # Positions are read outside pos_embed's forward: never streamed.
    plan = placements(model, {"pos_embed": "disk", "embed": "disk"}, torch.device("cuda"))
    assert not plan["pos_embed"].streamed and plan["embed"].streamed


def test_bad_device_maps_are_refused(llama) -> None:
    folder, model = llama
    with pytest.raises(InputValidationError, match="names no part"):
        placements(model, {"decoder": "cpu"}, torch.device("cpu"))
    with pytest.raises(InputValidationError, match="not a device"):
        placements(model, {"blocks": "floppy"}, torch.device("cpu"))
    with pytest.raises(UnsupportedConfigError, match="cannot be processed"):
        HookedTransformer.from_pretrained(folder, device="cpu", device_map={"blocks": "disk"})
    with pytest.raises(InputValidationError, match="not both"):
        HookedTransformer.from_pretrained(folder, device="cpu", n_devices=2, device_map={})


# A fresh process: the peak RSS it reports is the disk-offloaded load and forward alone.
_MEASURE = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    import transformers  # noqa: F401 - imports are not the model's memory
    from tlcore.model import HookedTransformer

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    folder = sys.argv[1]
    tokens = torch.randint(0, 8000, (2, 32), generator=torch.Generator().manual_seed(0))
    disk = {"embed": "disk", "blocks": "disk", "ln_final": "disk", "unembed": "disk"}

    def run():
        model = HookedTransformer.from_pretrained_no_processing(folder, device="cpu",
                                                                device_map=disk)
        with torch.no_grad():
            return model(tokens)

    run()  # first call: one-time costs (config classes, the spec registry), not the model's
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    before = status("VmRSS")
    offloaded = run()
    peak = status("VmHWM") - before
    full = HookedTransformer.from_pretrained_no_processing(folder, device="cpu")
    with torch.no_grad():
        resident = full(tokens)
    print(json.dumps({"peak_delta_mb": peak, "equal": bool(torch.equal(offloaded, resident))}))
    """
)


def test_disk_offload_runs_in_a_fraction_of_the_weights(tmp_path: Path) -> None:
    """A ~170 MB checkpoint on "disk": the forward's peak RSS growth stays under 60% of it."""
    size_mb = write_random_llama(tmp_path)
    root = str(Path(__file__).resolve().parents[2])  # this checkout's tlcore
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert size_mb > 150
    assert result["equal"]
    assert result["peak_delta_mb"] < 0.6 * size_mb, (result, size_mb)

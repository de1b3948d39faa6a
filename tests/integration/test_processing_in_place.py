"""Weight processing at the weights' footprint: in place, slice by slice, same values.

``from_pretrained`` rewrites each parameter in its own memory (its checkpoint map's pages become
private one at a time), so a processed load peaks near one copy of the weights. The values must be
those of the out-of-place path (``process_weights_`` on an unprocessed model), whatever the slice
size, and memory the loader does not own (an ``hf_model=``'s tensors) is never written.
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
from torch import nn

from tlcore import processing_tensors
from tlcore.model import HookedTransformer
from tlcore.processing_tensors import exclusive_parameters
from tlcore.testing.random_checkpoint import write_random_llama


def _state(model: HookedTransformer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("spec", ["gpt2", "llama"])
def test_in_place_equals_out_of_place(tiny_checkpoint, spec: str) -> None:
    folder, _ = tiny_checkpoint(spec)
    in_place = HookedTransformer.from_pretrained(str(folder), device="cpu")
    out_of_place = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    out_of_place.process_weights_()
    a, b = _state(in_place), _state(out_of_place)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_slice_size_does_not_change_values(tiny_checkpoint, monkeypatch) -> None:
    folder, _ = tiny_checkpoint("gpt2")
    whole = _state(HookedTransformer.from_pretrained(str(folder), device="cpu"))
    monkeypatch.setattr(processing_tensors, "CHUNK_ELEMENTS", 7)  # many ragged slices
    sliced = _state(HookedTransformer.from_pretrained(str(folder), device="cpu"))
    assert all(torch.equal(whole[k], sliced[k]) for k in whole)


def test_hf_model_tensors_are_not_written(tiny_checkpoint) -> None:
    folder, hf_model = tiny_checkpoint("gpt2")
    before = {k: v.clone() for k, v in hf_model.state_dict().items()}
    processed = HookedTransformer.from_pretrained("gpt2", hf_model=hf_model, device="cpu")
    assert processed.cfg.fold_ln
    after = hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_exclusive_parameters() -> None:
    module = nn.Module()
    base = torch.zeros(10)
    module.a = nn.Parameter(base[:4])
    module.b = nn.Parameter(base[4:])  # disjoint view of the same storage: exclusive
    module.c = nn.Parameter(base[2:6])  # overlaps a and b
    module.d = nn.Parameter(torch.zeros(3))
    module.inner = nn.Module()
    module.inner.d = module.d  # registered twice: tied
    module.e = nn.Parameter(torch.zeros(2))
    found = exclusive_parameters(module)
    assert id(module.e) in found
    assert id(module.a) not in found and id(module.b) not in found  # both overlap c
    assert id(module.c) not in found and id(module.d) not in found
    del module.c
    assert {id(module.a), id(module.b)} <= exclusive_parameters(module)


_LOAD = textwrap.dedent(
    """
    import gc, json, sys, torch
    from pathlib import Path
    import transformers  # noqa: F401
    from tlcore.model import HookedTransformer

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    def peak(load):
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
        before = status("VmRSS")
        model = load(sys.argv[1], device="cpu")
        with torch.no_grad():
            model(torch.zeros(1, 16, dtype=torch.long))
        return status("VmHWM") - before

    raw = HookedTransformer.from_pretrained_no_processing
    raw(sys.argv[1], device="cpu")  # one-time costs (configs, the spec registry) first
    print(json.dumps({"raw": peak(raw), "processed": peak(HookedTransformer.from_pretrained)}))
    """
)


def test_processed_load_peaks_at_one_copy(tmp_path: Path) -> None:
    """Processing a ~70 MB checkpoint adds under 10% to the unprocessed load's peak (it was 2x)."""
    size = write_random_llama(tmp_path, layers=4)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    assert peaks["raw"] > 0.8 * size  # the first forward reads every weight
    assert peaks["processed"] < 1.1 * peaks["raw"], (peaks, size)

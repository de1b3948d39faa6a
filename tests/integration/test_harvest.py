"""tlcore.harvest in-process: rows = run_with_cache bit for bit, resume, sources, SAELens format.

A tiny GPT-2 checkpoint with GPT-2's real tokenizer saved beside it (built offline from
openai-whisper's copy), so text datasets are tokenised as they would be for gpt2-small.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tlcore.errors import HookNameError
from tlcore.harvest import HarvestStateError, harvest
from tlcore.harvest import store as harvest_store
from tlcore.harvest.packing import token_rows
from tlcore.model import HookedTransformer
from tlcore.registry import get_registry
from tlcore.testing.tiny import save_tiny_checkpoint

datasets = pytest.importorskip("datasets")

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
CTX, BATCH = 16, 4
SETTINGS = {"context_size": CTX, "batch_size": BATCH, "rows_per_shard": 8, "progress": False}
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex".split()


def texts(n: int = 60) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"Doc {i}: " + " ".join(rng.choice(WORDS, size=2 + i % 9)) for i in range(n)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from tlcore_offline_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    folder, _ = save_tiny_checkpoint(
        get_registry().get_spec("gpt2"),
        tmp_path_factory.mktemp("harvest-ckpt"),
        vocab_size=50257,
        n_layer=3,
    )
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(ckpt):
    return HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(texts()) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(ckpt, corpus, tmp_path_factory):
    """One uninterrupted in-process harvest (the others compare against it)."""
    out = tmp_path_factory.mktemp("harvest") / "ref"
    result = harvest(str(ckpt), corpus, HOOKS, out, tokens=CTX * 36, **SETTINGS)
    return result


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.arrow"))}


def test_rows_equal_run_with_cache_bit_for_bit(reference, model):
    ds = datasets.load_from_disk(str(reference.path))
    assert ds.column_names == [*HOOKS, "token_ids"]
    assert len(ds) == reference.rows == 36 and reference.tokens == 36 * CTX
    assert reference.shards == 5  # 8 rows per shard, the last has 4
    ds.set_format("torch")
    tokens = ds[:]["token_ids"].long()
    for lo in range(0, len(ds), BATCH):
        batch = tokens[lo : lo + BATCH]
        _, cache = model.run_with_cache(batch, names_filter=HOOKS)  # the whole model, no stop
        for hook in HOOKS:
            expected = cache[hook].reshape(*batch.shape, -1)
            assert torch.equal(ds[lo : lo + BATCH][hook], expected), (hook, lo)
    assert ds.features[HOOKS[1]].shape == (CTX, model.cfg.n_heads * model.cfg.d_head)


def test_token_rows_are_packed_like_saelens(reference, model, corpus):
    """BOS starts each row, documents are separated by BOS, and long ones continue."""
    bos = model.tokenizer.bos_token_id
    ds = datasets.load_from_disk(str(reference.path))
    rows = np.asarray(ds["token_ids"])
    stream = []
    for text in corpus.read_text().splitlines():
        stream.extend([bos, *model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    expected, position = [], 0
    while len(expected) < len(rows):
        if stream[position] == bos:  # a row that starts a document: its BOS is the row's
            expected.append(stream[position : position + CTX])
            position += CTX
        else:  # a document continued from the last row: BOS first
            expected.append([bos, *stream[position : position + CTX - 1]])
            position += CTX - 1
    assert rows.tolist() == expected
    assert (rows[:, 0] == bos).all()


def split_ids(texts, add_special_tokens):
    return {"input_ids": [[int(t) for t in text.split()] for text in texts]}


def test_packing_rules_on_ids():
    rows = list(token_rows(["5 6 7", "8 9", "1 2 3 4 5 6"], split_ids, 4, 0, 99))
    # A separator that fills a row ends it; the next document starts the next row after BOS.
    assert rows == [[0, 5, 6, 7], [0, 8, 9, 99], [0, 1, 2, 3], [0, 4, 5, 6]]
    rows = list(token_rows(["0 5 6", "99 7"], split_ids, 3, 0, 99))  # no double BOS/separator
    assert rows == [[0, 5, 6], [0, 99, 7]]
    assert list(token_rows([[1, 2, 3, 4, 5]], None, 4, 0, 99)) == [[1, 2, 3, 4]]  # pre-tokenised
    with pytest.raises(ValueError, match="fewer than the context size"):
        list(token_rows([[1, 2]], None, 4, 0, 99))


def test_stops_after_the_last_hooked_block(ckpt, corpus, tmp_path):
    """Nothing after blocks.1 runs: run_with_cache(stop_at_layer=2) stops early."""
    model = HookedTransformer.from_pretrained_no_processing(str(ckpt), device="cpu")
    assert model.cfg.n_layers > 2
    fired = []
    with model.hooks(fwd_hooks=[(lambda name: True, lambda x, hook: fired.append(hook.name))]):
        harvest(model, corpus, HOOKS, tmp_path / "out", tokens=CTX * 4, **SETTINGS)
    assert "blocks.1.hook_resid_post" in fired
    later = [n for n in fired if n.startswith(("blocks.2.", "ln_final", "unembed"))]
    assert not later, later[:5]


def test_interrupted_run_resumes_to_identical_shards(
    reference, ckpt, corpus, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    real_write = harvest_store.write_shard
    calls = []

    def crash_on_third(out_dir, index, *args, **kwargs):
        calls.append(index)
        if index == 2:  # the data file lands, the commit record never does
            real_write(out_dir, index, *args, **kwargs)
            (out_dir / f"{harvest_store.shard_name(index)}.json").unlink()
            raise KeyboardInterrupt
        return real_write(out_dir, index, *args, **kwargs)

    monkeypatch.setattr(harvest_store, "write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        harvest(str(ckpt), corpus, HOOKS, out, tokens=CTX * 36, **SETTINGS)
    assert sorted(harvest_store.done_shards(out)) == [0, 1]
    assert not (out / "state.json").exists()  # not loadable until complete
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    monkeypatch.setattr(harvest_store, "write_shard", real_write)
    resumed = harvest(str(ckpt), corpus, HOOKS, out, tokens=CTX * 36, **SETTINGS)
    assert resumed.resumed_shards == 2 and resumed.computed_tokens == 20 * CTX
    assert shard_bytes(out) == shard_bytes(reference.path)
    assert (out / "state.json").read_text() == (reference.path / "state.json").read_text()
    again = harvest(str(ckpt), corpus, HOOKS, out, tokens=CTX * 36, **SETTINGS)
    assert again.resumed_shards == 5 and again.computed_tokens == 0


def test_resume_refuses_other_settings_or_data(reference, ckpt, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference.path, out)
    with pytest.raises(HarvestStateError, match="context_size"):
        harvest(str(ckpt), corpus, HOOKS, out, tokens=CTX * 36, **{**SETTINGS, "context_size": 8})
    changed = tmp_path / "docs.txt"
    changed.write_text("\n".join(reversed(texts())) + "\n")
    moved = tmp_path / "moved"
    shutil.copytree(reference.path, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["settings"]["dataset"] = str(changed.resolve())
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HarvestStateError, match="other tokens"):
        harvest(str(ckpt), changed, HOOKS, moved, tokens=CTX * 36, **SETTINGS)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(HarvestStateError, match="not a tlcore harvest"):
        harvest(str(ckpt), corpus, HOOKS, tmp_path / "junk", tokens=CTX * 4, **SETTINGS)


def test_every_source_kind_gives_the_same_rows(reference, ckpt, tmp_path):
    docs = texts()
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(docs)))
    parquet = tmp_path / "docs.parquet"
    dataset = datasets.Dataset.from_dict({"body": docs})
    dataset.to_parquet(str(parquet))
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(saved))
    want = np.asarray(datasets.load_from_disk(str(reference.path))["token_ids"])
    for i, source in enumerate([jsonl, parquet, saved, dataset]):
        out = tmp_path / f"out{i}"
        harvest(str(ckpt), source, HOOKS[:1], out, tokens=CTX * 36, text_column="body", **SETTINGS)
        got = np.asarray(datasets.load_from_disk(str(out))["token_ids"])
        assert np.array_equal(got, want), source


def test_pretokenized_rows_and_seeded_shuffle(ckpt, tmp_path):
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, 50257, CTX + 3).tolist() for _ in range(12)]
    dataset = datasets.Dataset.from_dict({"input_ids": rows})
    runs = {}
    for name, kwargs in {
        "plain": {},
        "s1": {"seed": 1},
        "s1b": {"seed": 1},
        "s2": {"seed": 2},
    }.items():
        out = tmp_path / name
        shuffle = bool(kwargs)
        harvest(str(ckpt), dataset, HOOKS[:1], out, shuffle=shuffle, **kwargs, **SETTINGS)
        runs[name] = np.asarray(datasets.load_from_disk(str(out))["token_ids"])
    assert runs["plain"].tolist() == [r[:CTX] for r in rows]  # one row each, cut, no BOS added
    assert np.array_equal(runs["s1"], runs["s1b"])
    assert shard_bytes(tmp_path / "s1") == shard_bytes(tmp_path / "s1b")
    assert not np.array_equal(runs["s1"], runs["s2"])
    assert sorted(map(tuple, runs["s1"])) == sorted(map(tuple, runs["plain"]))


def test_bad_hooks_are_refused_before_anything_is_written(ckpt, corpus, tmp_path):
    with pytest.raises(HookNameError, match="hook_resid_post"):
        harvest(str(ckpt), corpus, ["blocks.0.hook_resid_pots"], tmp_path / "a", **SETTINGS)
    with pytest.raises(HookNameError, match="per token"):
        harvest(str(ckpt), corpus, ["blocks.0.attn.hook_pattern"], tmp_path / "b", **SETTINGS)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_manifest_records_the_run(reference):
    manifest = json.loads((reference.path / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["settings"]["hooks"] == HOOKS and manifest["settings"]["seed"] == 0
    assert manifest["tokens"] == 36 * CTX and len(manifest["shards"]) == 5
    assert {"tlcore", "torch", "transformers", "datasets"} <= set(manifest["versions"])
    assert manifest["sae_lens"]["columns"] == [*HOOKS, "token_ids"]


def test_cli(ckpt, corpus, tmp_path, capsys):
    from tlcore.cli import main

    out = tmp_path / "cli"
    args = ["harvest", str(ckpt), str(corpus), "--out", str(out), "--hook", HOOKS[0]]
    args += ["--context-size", str(CTX), "--tokens", str(CTX * 8), "--quiet", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 8 and summary["tokens"] == 8 * CTX
    assert len(datasets.load_from_disk(str(out))) == 8
    assert main([*args[:-2], "--context-size", "8", "--quiet"]) == 1  # other settings: refused
    assert "other settings" in capsys.readouterr().err


SAELENS_READ = """
import json, sys
import numpy as np, torch
try:
    import transformer_lens  # noqa: F401  (a side venv with SAELens's own dependency)
except ImportError:  # the project venv: SAELens without TransformerLens, on tlcore
    import tlcore.compat
    tlcore.compat.as_transformer_lens()
from sae_lens.training.activations_store import ActivationsStore
path, hook, ctx, d_in, batch, out = sys.argv[1:7]
store = ActivationsStore(
    model=None, dataset=None, streaming=False, hook_name=hook, hook_head_index=None,
    context_size=int(ctx), d_in=int(d_in), n_batches_in_buffer=2, total_training_tokens=10**6,
    store_batch_size_prompts=int(batch), train_batch_size_tokens=int(ctx), prepend_bos=True,
    normalize_activations="none", device=torch.device("cpu"), dtype="float32",
    cached_activations_path=path)
acts, tokens = store.get_raw_llm_batch()
np.savez(out, acts=acts.numpy(), tokens=tokens.numpy())
"""


def test_saelens_own_loader_reads_the_output(reference, tmp_path):
    """SAELens's ActivationsStore reads the harvest (in this venv, or TLCORE_SAELENS_PYTHON's)."""
    python = os.environ.get("TLCORE_SAELENS_PYTHON", sys.executable)
    d_in = datasets.load_from_disk(str(reference.path)).features[HOOKS[1]].shape[1]
    out = tmp_path / "read.npz"
    script = tmp_path / "read.py"
    script.write_text(SAELENS_READ)
    subprocess.run(
        [python, str(script), str(reference.path), HOOKS[1], str(CTX), str(d_in), "4", str(out)],
        check=True,
        capture_output=True,
    )
    read = np.load(out)
    ds = datasets.load_from_disk(str(reference.path)).with_format("numpy")
    assert np.array_equal(read["acts"], ds[0:4][HOOKS[1]].reshape(4 * CTX, d_in))
    assert np.array_equal(read["tokens"], ds[0:4]["token_ids"].reshape(-1))

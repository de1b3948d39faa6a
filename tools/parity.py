"""The parity tool for contributors: every spec against HuggingFace, snapshots, model table.

Usage::

    python tools/parity.py                 # every spec and test variant vs HF
    python tools/parity.py --check         # ... plus the stored snapshots (what CI runs)
    python tools/parity.py --update        # rewrite the snapshots of passing cases
    python tools/parity.py --spec llama --spec gpt2 --json
    python tools/parity.py --table         # docs/model_table.jsonl + docs/model_table.html
    python tools/parity.py --model path/to/checkpoint_or.gguf   # real weights: a markdown row

The same options are available as ``tlcore parity``; both call :mod:`tlcore.parity`.
"""

from __future__ import annotations

import sys

from tlcore.parity.cli import main

if __name__ == "__main__":
    sys.exit(main())

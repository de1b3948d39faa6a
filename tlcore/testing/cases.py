"""One tiny checkpoint and one HF comparison per (spec, variant), shared by a whole test session.

The snapshot check, the family parity tests and the sensitivity tests all start from the same
case: the spec's tiny seeded checkpoint, compared once with HF. :class:`ParityCases` builds each
checkpoint once and runs each comparison once, and hands the results to every test that asks;
tlcore's own suite keeps one in a session fixture (``parity_cases``), and a plugin's suite can do
the same::

    @pytest.fixture(scope="session")
    def parity_cases(tmp_path_factory):
        return ParityCases(tmp_path_factory.mktemp("parity"))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from tlcore.model import HookedTransformer
from tlcore.parity.compare import CaseRun, run_case
from tlcore.parity.result import case_label, parity_tokens
from tlcore.registry import get_registry
from tlcore.spec.schema import ArchitectureSpec
from tlcore.testing.tiny import DEFAULT_SEED, save_tiny_checkpoint

_Key = tuple[str, str, str | None, int]


class ParityCases:
    """Tiny checkpoints and HF comparisons, each made once per (spec, variant, seed).

    Args:
        directory: Where checkpoints are written (one folder per case).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._checkpoints: dict[_Key, tuple[Path, Any]] = {}
        self._runs: dict[_Key, tuple[CaseRun, bool, bool]] = {}
        self._errors: dict[_Key, Exception] = {}
        self.built: Counter[str] = Counter()
        """Checkpoints built per case label (``spec`` or ``spec/variant``; each once)."""
        self.compared: Counter[str] = Counter()
        """HF comparisons attempted per case label (once, unless asked for more than before; a
        case that raised raises again without running)."""

    @staticmethod
    def _spec(spec: ArchitectureSpec | str) -> ArchitectureSpec:
        if isinstance(spec, str) and spec not in get_registry().specs:
            from tlcore.encoder_specs import encoder_specs

            if spec in encoder_specs():
                return encoder_specs()[spec]
        return get_registry().get_spec(spec) if isinstance(spec, str) else spec

    def _key(self, spec: ArchitectureSpec, variant: str | None, seed: int | None) -> _Key:
        return (spec.name, spec.content_hash(), variant, DEFAULT_SEED if seed is None else seed)

    def checkpoint(
        self, spec: ArchitectureSpec | str, variant: str | None = None, seed: int | None = None
    ) -> tuple[Path, Any]:
        """The case's checkpoint folder and the HF model it was saved from (fp32, eval mode).

        Args:
            spec: A spec or a registered name.
            variant: A test variant.
            seed: Weight-fill seed (default :data:`~tlcore.testing.tiny.DEFAULT_SEED`).

        Returns:
            ``(folder, hf_model)``; do not modify the HF model (other tests share it).
        """
        spec = self._spec(spec)
        key = self._key(spec, variant, seed)
        if key not in self._checkpoints:
            folder = self.directory / "__".join(str(k) for k in (key[0], key[2], key[1], key[3]))
            folder.mkdir(parents=True, exist_ok=True)
            self._checkpoints[key] = save_tiny_checkpoint(
                spec, folder, variant, key[3], attn_implementation=spec.parity.attn_for(variant)
            )
            self.built[case_label(spec.name, variant)] += 1
        return self._checkpoints[key]

    def run(
        self,
        spec: ArchitectureSpec | str,
        variant: str | None = None,
        *,
        hf: bool = True,
        processed: bool = True,
        seed: int | None = None,
        tokens: torch.Tensor | None = None,
        inspect: Any = None,
    ) -> CaseRun:
        """The case's run (:func:`~tlcore.parity.compare.run_case`), made once and then reused.

        A stored run serves any request that asks for no more (HF, processed) on the same
        tokens; ``inspect`` (model-table facts) always runs afresh.

        Args:
            spec: A spec or a registered name.
            variant: A test variant.
            hf: Compare with HF.
            processed: Also compare the processed model's log-probs.
            seed: Weight-fill seed.
            tokens: Token batch (default: :func:`~tlcore.parity.result.parity_tokens`).
            inspect: As for ``run_case``.

        Returns:
            The run; do not modify it.
        """
        spec = self._spec(spec)
        key = self._key(spec, variant, seed)
        if key in self._errors:  # a case that cannot run fails the same way every time
            raise self._errors[key]
        stored = self._runs.get(key)
        if (
            inspect is None
            and stored is not None
            and (stored[1] or not hf)
            and (stored[2] or not processed)
            and (tokens is None or _same(tokens, stored[0].tokens))
        ):
            return stored[0]
        if hf:
            self.compared[case_label(spec.name, variant)] += 1
        try:
            run = run_case(
                spec,
                variant,
                hf=hf,
                processed=processed,
                seed=key[3],
                tokens=tokens,
                inspect=inspect,
                checkpoint=self.checkpoint(spec, variant, seed),
            )
        except Exception as exc:
            self._errors[key] = exc
            raise
        if inspect is None and (tokens is None or stored is None):
            self._runs[key] = (run, hf, hf and processed)
        return run

    def load(
        self, spec: ArchitectureSpec | str, variant: str | None = None
    ) -> tuple[HookedTransformer, Any, torch.Tensor]:
        """A fresh unprocessed tlcore model of the case (a test may break it), the HF model, tokens.

        Args:
            spec: A spec or a registered name.
            variant: A test variant.

        Returns:
            ``(model, hf_model, parity_tokens)``.
        """
        folder, hf_model = self.checkpoint(spec, variant)
        model = HookedTransformer.from_pretrained_no_processing(str(folder), device="cpu")
        return model, hf_model, parity_tokens(model.cfg.d_vocab)


def _same(tokens: torch.Tensor, stored: torch.Tensor | None) -> bool:
    return stored is not None and tokens.shape == stored.shape and bool((tokens == stored).all())

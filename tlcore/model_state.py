"""Weights in and out, as TransformerLens: its state dicts, its processing steps one by one, export.

- :meth:`StateDictMixin.load_state_dict` accepts a TransformerLens state dict: its buffers
  (``attn.mask``, ``attn.IGNORE``, ``attn.rotary_sin``/``rotary_cos``) and the ``pos_embed.W_pos``
  TransformerLens 2.x keeps unused on ALiBi models are dropped (tlcore computes masks and rotary
  tables on the fly), after checking that the buffers hold what tlcore computes.
- ``fold_layer_norm``, ``center_writing_weights``, ``center_unembed``, ``fold_value_biases`` and
  ``refactor_factored_attn_matrices`` take a state dict and return the processed one, as in
  TransformerLens (they run tlcore's in-place step on a scratch copy of the model);
  :meth:`~StateDictMixin.load_and_process_state_dict` loads and processes in place.
- :meth:`~StateDictMixin.save_pretrained_hf` writes an HF checkpoint folder (:mod:`tlcore.export`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tlcore import processing

logger = logging.getLogger(__name__)

TRANSFORMER_LENS_BUFFERS = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")
"""Suffixes of the buffers in TransformerLens's state dicts (recomputed by tlcore, not stored)."""


def _check_buffer(key: str, value: torch.Tensor, cfg: Any) -> None:
    if key.endswith(".attn.IGNORE") and not (value.numel() == 1 and float(value) < -1e4):
        raise ValueError(f"{key}: TransformerLens's IGNORE is a large negative number, got {value}")
    if key.endswith(".attn.mask"):
        # TransformerLens keeps a causal mask even where it does not apply it (bidirectional);
        # local-attention layers keep the causal band of their window.
        causal = torch.tril(torch.ones(value.shape, dtype=torch.bool))
        allowed = [causal]
        if cfg.use_local_attn and cfg.window_size:
            allowed.append(torch.triu(causal, 1 - cfg.window_size))
        if not any(torch.equal(value.to(torch.bool), m) for m in allowed):
            raise ValueError(f"{key}: not the attention mask this model computes")


class StateDictMixin:
    """TransformerLens's state-dict methods for ``HookedTransformer``."""

    cfg: Any

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``, also for TransformerLens's state dicts (buffers dropped).

        Args:
            state_dict: tlcore's or TransformerLens's state dict.
            strict: Every parameter must be given, and nothing else (TransformerLens's buffers
                excepted).
            assign: Assign the tensors instead of copying into the parameters.

        Returns:
            torch's missing/unexpected keys.

        Raises:
            ValueError: If a TransformerLens buffer does not hold what this model computes.
        """
        own = {name for name, _ in self.named_parameters()}  # type: ignore[attr-defined]
        own |= set(self.state_dict())  # type: ignore[attr-defined]
        clean = {}
        for key, value in state_dict.items():
            if key.endswith(TRANSFORMER_LENS_BUFFERS) and key not in own:
                _check_buffer(key, value, self.cfg)
                continue
            if key == "pos_embed.W_pos" and key not in own:
                continue  # TransformerLens 2.x's unused W_pos of ALiBi models
            clean[key] = value
        return super().load_state_dict(clean, strict=strict, assign=assign)  # type: ignore[misc]

    def fill_missing_keys(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the model's current value for every parameter ``state_dict`` lacks (as TL).

        Args:
            state_dict: A partial state dict.

        Returns:
            A complete one; a missing weight other than a norm's is logged.
        """
        out = dict(state_dict)
        for key, value in super().state_dict().items():  # type: ignore[misc]
            if key not in out:
                if key.rpartition(".")[2] not in ("w", "b") and not key.endswith(".b_O"):
                    logger.warning("%s missing from the state dict: keeping the model's", key)
                out[key] = value
        return out

    def load_and_process_state_dict(
        self,
        state_dict: Mapping[str, torch.Tensor],
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        refactor_factored_attn_matrices: bool = False,
    ) -> None:
        """Load an unprocessed state dict (tlcore's or TransformerLens's), then process in place.

        Args:
            state_dict: The parameters, as the model has them before processing.
            fold_ln: Fold norms into the next linear maps.
            center_writing_weights: Centre the weights writing to the residual stream.
            center_unembed: Centre the unembedding.
            fold_value_biases: Fold value biases into ``b_O``.
            refactor_factored_attn_matrices: Refactor ``W_Q/W_K`` and ``W_V/W_O``.
        """
        self.load_state_dict(state_dict, strict=False)
        self.process_weights_(  # type: ignore[attr-defined]
            fold_ln=fold_ln,
            center_writing_weights=center_writing_weights,
            center_unembed=center_unembed,
            fold_value_biases=fold_value_biases,
            refactor_factored_attn_matrices=refactor_factored_attn_matrices,
        )

    def _processed(
        self, state_dict: Mapping[str, torch.Tensor], step: Callable[..., Any], *args: Any
    ) -> dict[str, torch.Tensor]:
        tokenizer = getattr(self, "tokenizer", None)
        scratch: Any = copy.deepcopy(self, {id(tokenizer): tokenizer})
        missing = set(scratch.state_dict()) - set(state_dict)
        if missing and all(k.rpartition(".")[2] in ("w", "b") for k in missing):
            # A state dict whose norms were folded already (the output of fold_layer_norm): give
            # the scratch model parameter-free norms too, then load over the folded weights.
            processing.fold_layer_norm(scratch)
        scratch.load_state_dict(state_dict)
        step(scratch, *args)
        return dict(scratch.state_dict())

    def fold_layer_norm(
        self,
        state_dict: Mapping[str, torch.Tensor],
        fold_biases: bool = True,
        center_weights: bool = True,
    ) -> dict[str, torch.Tensor]:
        """TransformerLens's ``fold_layer_norm``: the state dict with the norms folded.

        The norms' parameters are gone from the result (the model's norms must be parameter-free
        to load it: :meth:`process_weights_` does both). See
        :func:`tlcore.processing.fold_layer_norm`.

        Args:
            state_dict: This model's state dict (tlcore's or TransformerLens's).
            fold_biases: Fold LayerNorm biases into the readers' biases.
            center_weights: Centre the reading weights (LayerNorm).

        Returns:
            The processed state dict.
        """
        return self._processed(state_dict, processing.fold_layer_norm, fold_biases, center_weights)

    def center_writing_weights(
        self, state_dict: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """TransformerLens's ``center_writing_weights`` on a state dict (see :mod:`processing`).

        Returns:
            The processed state dict.
        """
        return self._processed(state_dict, processing.center_writing_weights)

    def center_unembed(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TransformerLens's ``center_unembed`` on a state dict (see :mod:`processing`).

        Returns:
            The processed state dict.
        """
        return self._processed(state_dict, processing.center_unembed)

    def fold_value_biases(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TransformerLens's ``fold_value_biases`` on a state dict (see :mod:`processing`).

        Returns:
            The processed state dict.
        """
        return self._processed(state_dict, processing.fold_value_biases)

    def refactor_factored_attn_matrices(
        self, state_dict: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """TransformerLens's ``refactor_factored_attn_matrices`` on a state dict.

        Returns:
            The processed state dict.
        """
        return self._processed(state_dict, processing.refactor_factored_attn_matrices)

    @property
    def n_params_total(self) -> int:
        """Every parameter's element count (embeddings, biases, norms included), as TL 3.

        ``cfg.n_params`` counts only the hidden weights (attention and MLP matrices).
        """
        return sum(p.numel() for p in self.parameters())  # type: ignore[attr-defined]

    def save_pretrained_hf(self, path: str | Path, save_tokenizer: bool = True) -> Path:
        """Write this model as an HF checkpoint folder (``config.json`` + safetensors).

        Runs the spec's weight map in reverse (:mod:`tlcore.export`); ``transformers`` loads the
        folder and gives this model's logits. Processed models export to the equivalent
        checkpoint where that is exact.

        Args:
            path: The folder.
            save_tokenizer: Save the tokenizer there too.

        Returns:
            The folder.

        Raises:
            ExportError: When there is no exact HF checkpoint of this model.
        """
        from tlcore.export import save_pretrained_hf

        return save_pretrained_hf(self, path, save_tokenizer)

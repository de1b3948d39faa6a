"""``tlcore harvest``: store hook activations over a text dataset (SAELens's cached format)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def run(args: argparse.Namespace) -> int:
    """Run :func:`tlcore.harvest.harvest` with the parsed arguments.

    Args:
        args: Parsed arguments.

    Returns:
        0 on success, 1 on a bad input or a folder holding another harvest.
    """
    from tlcore.errors import HookNameError
    from tlcore.harvest import HarvestStateError, harvest

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ray: bool | str = args.ray_address or bool(args.ray)
    try:
        result = harvest(
            args.model,
            args.dataset,
            args.hook,
            args.out,
            context_size=args.context_size,
            tokens=args.tokens,
            batch_size=args.batch_size,
            dtype=args.dtype,
            store_dtype=args.store_dtype,
            seed=args.seed,
            shuffle=args.shuffle,
            text_column=args.text_column,
            prepend_bos=args.prepend_bos,
            separator=None if args.separator == "none" else args.separator,
            rows_per_shard=args.rows_per_shard,
            processing=args.processing,
            device=args.device,
            ray=ray,
            num_workers=args.workers,
            worker_cpus=args.worker_cpus,
            worker_gpus=args.worker_gpus,
            progress=not args.quiet,
        )
    except (HookNameError, HarvestStateError, FileNotFoundError, ValueError) as exc:
        print(f"tlcore harvest: error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "path": str(result.path),
        "rows": result.rows,
        "tokens": result.tokens,
        "shards": result.shards,
        "resumed_shards": result.resumed_shards,
        "seconds": round(result.seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "workers": result.workers,
    }
    print(json.dumps(summary) if args.json else _format(summary))
    return 0


def _format(summary: dict[str, Any]) -> str:
    resumed = f" ({summary['resumed_shards']} resumed)" if summary["resumed_shards"] else ""
    return (
        f"wrote {summary['rows']} rows ({summary['tokens']} tokens) in {summary['shards']} "
        f"shards{resumed} to {summary['path']}\n"
        f"{summary['seconds']} s, {summary['tokens_per_second']} tokens/s "
        f"on {summary['workers']} worker(s)"
    )


def add_command(subparsers: Any) -> None:
    """Register ``tlcore harvest``.

    Args:
        subparsers: The CLI's sub-parsers.
    """
    parser = subparsers.add_parser(
        "harvest",
        help="store hook activations over a text dataset, in SAELens's cached-activations format",
        description=(
            "Run a model over a text dataset and store the activations of the named hooks as a "
            "datasets Arrow dataset (a column per hook plus token_ids) that SAELens trains from "
            "with use_cached_activations=True. Rerunning with the same arguments resumes. "
            "In-process by default; --ray runs on a Ray cluster, one model per worker."
        ),
    )
    parser.add_argument("model", help="alias, checkpoint folder, .gguf file or hub id")
    parser.add_argument(
        "dataset",
        nargs="+",
        help=".txt (a document per line) / .jsonl / .parquet file(s) or folder, or a "
        "save_to_disk folder",
    )
    parser.add_argument(
        "--hook",
        action="append",
        required=True,
        help="hook name to store (repeat for several), e.g. blocks.6.hook_resid_post",
    )
    parser.add_argument("--out", required=True, help="output folder (new, or one to resume)")
    parser.add_argument("--context-size", type=int, default=128, help="tokens per row")
    parser.add_argument(
        "--tokens", type=int, default=None, help="token budget (default: the whole dataset)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16, ...)")
    parser.add_argument(
        "--store-dtype",
        default=None,
        choices=["float32", "float16", "float64"],
        help="activation dtype on disk (default: the model's; bfloat16 is stored as float32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (shuffling, torch)")
    parser.add_argument("--shuffle", action="store_true", help="shuffle documents by the seed")
    parser.add_argument("--text-column", default="text", help="text column of jsonl/parquet")
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start each row with BOS (default: yes, as SAELens)",
    )
    parser.add_argument(
        "--separator",
        default="bos",
        choices=["bos", "eos", "none"],
        help="token between packed documents (default: bos, as SAELens)",
    )
    parser.add_argument("--rows-per-shard", type=int, default=None, help="rows per shard file")
    parser.add_argument(
        "--processing",
        action="store_true",
        help="load with from_pretrained's weight processing (default: none, as SAELens)",
    )
    parser.add_argument("--device", default=None, help="device (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--ray", action="store_true", help="run on Ray (local if no cluster)")
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster address (implies --ray), e.g. auto"
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray workers, one model each")
    parser.add_argument("--worker-cpus", type=float, default=1, help="CPUs per Ray worker")
    parser.add_argument("--worker-gpus", type=float, default=0, help="GPUs per Ray worker")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)

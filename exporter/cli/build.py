"""``exporter build``: export the planned models and publish a Triton model repository (atomically)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .. import objectstore
from ..build import BuildResult, build_repository
from ..errors import ExportError
from ..triton.config import DEFAULT_BATCH_TOKENS, ServingOptions
from .context import add_model_arguments, load_context, print_table
from .export import add_export_arguments, export_options

DEFAULT_REPOSITORY = "model_repository"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    defaults = ServingOptions()
    parser.add_argument("--repository", default=DEFAULT_REPOSITORY, metavar="DIR",
                        help=f"repository to (re)publish (default ./{DEFAULT_REPOSITORY}), or an object-store root "
                        "(s3://, gs://, as://bucket/prefix): uploaded as a new immutable build, then made current")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, metavar="N",
                        help=f"Triton max_batch_size of every model (default {defaults.max_batch_size})")
    parser.add_argument("--queue-delay-us", type=int, default=defaults.queue_delay_us, metavar="US",
                        help="dynamic batching: longest wait for more requests, microseconds "
                             f"(default {defaults.queue_delay_us})")
    parser.add_argument("--max-texts-per-request", type=int, metavar="N",
                        help="texts per request the tokenizer accepts (default: --max-batch-size)")
    parser.add_argument("--max-text-bytes", type=int, default=defaults.max_text_bytes, metavar="B",
                        help=f"UTF-8 bytes per text the tokenizer accepts (default {defaults.max_text_bytes})")
    parser.add_argument("--encoder-threads", type=int, default=defaults.encoder_threads, metavar="N",
                        help="ONNX Runtime intra-op threads per encoder instance (default 0: one per core)")
    parser.add_argument("--max-batch-tokens", type=int, default=defaults.max_batch_tokens, metavar="N",
                        help="python-backend encoders: padded tokens per runtime call; a dynamic batch is run in "
                             "length buckets within it (default 0: "
                             + ", ".join(f"{k} {v}" for k, v in DEFAULT_BATCH_TOKENS.items()) + ")")
    parser.add_argument("--tensorrt", action="store_true",
                        help="GPU targets: add the TensorRT execution accelerator (FP16) to ONNX encoders")
    add_export_arguments(parser)


def serving_options(args: argparse.Namespace) -> ServingOptions:
    return ServingOptions(
        max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us, tensorrt=args.tensorrt,
        max_texts_per_request=args.max_texts_per_request or args.max_batch_size,
        max_text_bytes=args.max_text_bytes, encoder_threads=args.encoder_threads,
        max_batch_tokens=args.max_batch_tokens)


def _build_and_upload(ctx, store: objectstore.Store, options: ServingOptions, exporting) -> BuildResult:
    """Build into a local temporary repository (validated by the build), then upload it as a new build."""
    with tempfile.TemporaryDirectory(prefix="emb-provider-build-") as tmp:
        local = build_repository(ctx.plans, ctx.model_dirs, Path(tmp) / "repository", options,
                                 export_options=exporting)
        build = objectstore.upload(local.repository, store, local.manifest)
    return BuildResult(store.build_url(build.build_id), local.manifest, local.seconds)


def run(args: argparse.Namespace) -> int:
    options = serving_options(args)  # bad flags fail before any export work
    exporting = export_options(args)
    # a bad URL or a missing backend fails before any export
    store = objectstore.open_store(args.repository) if objectstore.is_remote(args.repository) else None
    ctx = load_context(args)
    try:
        if store is not None:
            result = _build_and_upload(ctx, store, options, exporting)
        else:
            result = build_repository(ctx.plans, ctx.model_dirs, Path(args.repository), options,
                                      export_options=exporting)
    except ExportError as exc:  # includes a failed quality gate
        exc.note(f"nothing was published; {args.repository} is unchanged")
        raise
    if args.json:
        print(json.dumps({"repository": str(result.repository), "seconds": round(result.seconds, 2),
                          **result.manifest}, indent=2))
        return 0
    print(f"published {result.repository} in {result.seconds:.1f} s")
    rows = [("MODEL (ensemble)", "PRECISION", "ROUTE", "DIM", "SOURCE")]
    rows += [(m["name"], m["precision"], m["route"], str(m["dim"]), m["model"]) for m in result.manifest["models"]]
    print_table(rows)
    print("serve it with: python -m exporter serve --repository", args.repository)
    if store is not None:
        print(f"  Triton with cloud storage (NGC image): --model-repository={result.repository}")
    return 0

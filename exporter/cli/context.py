"""Shared CLI plumbing: the options every command takes (models, device, log level, ``--json``), logging set-up,
turning options into plans, and the column tables the commands print for humans."""

from __future__ import annotations

import argparse
import logging

from ..config import LOG_LEVELS, PRECISION_CHOICES, Config
from ..devices import DEVICE_FORMS
from ..plan import PlanSet, make_plans

log = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """--model/--models-file/--device/--precision/--log-level/--json, shared by plan, export and build."""
    parser.add_argument("--model", action="append", metavar="ID_OR_DIR",
                        help="hub id or local model directory (repeatable; default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--models-file", metavar="F", help="YAML list of models (model, name, group, max_length, "
                        "precision, pooling, prompts, truncate_dim, trust_remote_code; README 'Models file')")
    parser.add_argument("--device", metavar="D", help=f"serving target: {DEVICE_FORMS} "
                        "(overrides EMB_PROVIDER_DEVICE)")
    if precision:
        parser.add_argument("--precision", choices=PRECISION_CHOICES,
                            help="global precision for this run (overrides EMB_PROVIDER_MODEL_PRECISION)")
    add_output_arguments(parser)


def add_output_arguments(parser: argparse.ArgumentParser,
                         json_help: str = "machine-readable output on stdout") -> None:
    """--log-level and --json, which every command takes."""
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="overrides EMB_PROVIDER_LOG_LEVEL")
    parser.add_argument("--json", action="store_true", help=json_help)


def configure_logging(args: argparse.Namespace) -> Config:
    """The environment's config with ``--log-level`` applied, logging configured from it."""
    config = Config.from_env().with_overrides(log_level=args.log_level)
    config.configure_logging()
    return config


def print_table(rows: list[tuple[str, ...]]) -> None:
    """``rows`` (the header first) as columns padded to their widest cell, for humans (``--json`` is for machines)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def load_context(args: argparse.Namespace, *, weights: bool = True) -> PlanSet:
    """Config from env + flags (logging configured), then :func:`exporter.plan.make_plans` for the models given
    (``weights=False``: hub models' config files only, what ``plan`` reads)."""
    config = Config.from_env().with_overrides(
        model_precision=getattr(args, "precision", None), log_level=args.log_level, device=args.device)
    config.configure_logging()
    return make_plans(args.model, models_file=args.models_file, config=config, weights=weights)

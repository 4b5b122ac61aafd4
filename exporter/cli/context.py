"""Shared CLI plumbing: the model/config/device options every command takes, and turning them into plans."""

from __future__ import annotations

import argparse
import logging

from ..config import PRECISION_CHOICES, Config
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
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="overrides EMB_PROVIDER_LOG_LEVEL")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def load_context(args: argparse.Namespace, *, weights: bool = True) -> PlanSet:
    """Config from env + flags (logging configured), then :func:`exporter.plan.make_plans` for the models given
    (``weights=False``: hub models' config files only, what ``plan`` reads)."""
    config = Config.from_env().with_overrides(
        model_precision=getattr(args, "precision", None), log_level=args.log_level, device=args.device)
    config.configure_logging()
    return make_plans(args.model, models_file=args.models_file, config=config, weights=weights)

"""Shared CLI plumbing: the model/config/device options every command takes, and turning them into plans."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from ..config import PRECISION_CHOICES, Config
from ..devices import DEVICE_FORMS, Device, resolve_device
from ..errors import ModelError
from ..models import ModelSpec, native_dtype, resolve_model_dir, specs_from_args
from ..plan import Plan, resolve_all

log = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """--model/--models-file/--device/--precision/--log-level/--json, shared by plan, export and build."""
    parser.add_argument("--model", action="append", metavar="ID_OR_DIR",
                        help="hub id or local model directory (repeatable; default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--models-file", metavar="F", help="YAML list of models (model, name, group, max_length, "
                        "precision)")
    parser.add_argument("--device", metavar="D", help=f"serving target: {DEVICE_FORMS} "
                        "(overrides EMB_PROVIDER_DEVICE)")
    if precision:
        parser.add_argument("--precision", choices=PRECISION_CHOICES,
                            help="global precision for this run (overrides EMB_PROVIDER_MODEL_PRECISION)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="overrides EMB_PROVIDER_LOG_LEVEL")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


@dataclass(frozen=True)
class Context:
    """Everything a command needs after parsing: config, target device, models, their dirs and plans."""

    config: Config
    device: Device
    specs: list[ModelSpec]
    model_dirs: dict[str, object]  # model id -> Path, or the ModelError saying why it is unavailable
    plans: list[Plan]


def load_context(args: argparse.Namespace) -> Context:
    """Config from env + flags, the target device, the model list, and one plan per model."""
    config = Config.from_env().with_overrides(
        model_precision=getattr(args, "precision", None), log_level=args.log_level, device=args.device)
    config.configure_logging()
    device = resolve_device(config.device)
    specs = specs_from_args(args.model, args.models_file)
    dirs: dict[str, object] = {}
    for spec in specs:
        try:
            dirs[spec.model] = resolve_model_dir(spec.model)
        except ModelError as exc:
            dirs[spec.model] = exc
    natives = {m: native_dtype(d) if not isinstance(d, ModelError) else None for m, d in dirs.items()}
    return Context(config, device, specs, dirs, resolve_all(specs, config, device, natives))

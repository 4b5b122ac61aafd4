"""``exporter plan``: show what would be built, per model, and why — before anything is built."""

from __future__ import annotations

import argparse
import json
import logging

from ..cpu import INT8_KERNELS, cpu_info
from ..errors import ModelError
from ..precisions import get
from .context import add_model_arguments, load_context, print_table

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--why", action="store_true", help="print the full reason chain under each model")


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args, weights=False)  # a hub model's config files, never its weights
    for model, where in ctx.model_dirs.items():
        if isinstance(where, ModelError):
            log.warning("native dtype unknown for %s: %s", model, where)
    if args.json:
        print(json.dumps([p.to_dict() for p in ctx.plans], indent=2))
        return 0
    print(f"target device: {ctx.device.describe()}")
    rows = [("MODEL", "NAME", "PRECISION", "ROUTE", "DECIDED BY")]
    rows += [(p.model, p.name, p.precision, p.route, _decider(p)) for p in ctx.plans]
    print_table(rows)
    for plan in ctx.plans:
        if args.why or plan.remote_code or any("fallback" in r for r in plan.reasons):
            print(f"\n{plan.name}:")
            for reason in plan.reasons:
                print(f"  {reason}")
            if args.why and get(plan.precision).cpu_int8_kernels and plan.device == "cpu":
                print("\n".join(_int8_cpu_expectations()))
    return 0


def _int8_cpu_expectations() -> list[str]:
    """What an int8 plan on a CPU target will be worth depends on the CPU that serves it, not on the plan:
    ONNX Runtime picks its int8 kernel by CPUID at run time. So list every kind, and mark this host's."""
    host = cpu_info()
    width = max(len(kind) for kind in INT8_KERNELS)
    lines = ["  int8 speed by CPU kind (ONNX Runtime picks the kernel at run time):"]
    for kind, kernel in INT8_KERNELS.items():
        mark = f" (this host: {host.describe()})" if kind == host.int8_kind else ""
        lines.append(f"    {kind.ljust(width)}  {kernel}{mark}")
    return lines


def _decider(plan) -> str:
    fallback = any("fallback" in r for r in plan.reasons)
    return f"{plan.decided_by} (fallback from {plan.requested})" if fallback else plan.decided_by

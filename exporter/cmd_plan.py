"""``exporter plan``: show what would be built, per model, and why — before anything is built."""

from __future__ import annotations

import argparse
import json
import logging

from .context import add_model_arguments, load_context
from .errors import ModelError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--why", action="store_true", help="print the full reason chain under each model")


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    for model, where in ctx.model_dirs.items():
        if isinstance(where, ModelError):
            log.warning("native dtype unknown for %s: %s", model, where)
    if args.json:
        print(json.dumps([p.to_dict() for p in ctx.plans], indent=2))
        return 0
    print(f"target device: {ctx.device.describe()}")
    rows = [("MODEL", "NAME", "PRECISION", "ROUTE", "DECIDED BY")]
    rows += [(p.model, p.name, p.precision, p.route, _decider(p)) for p in ctx.plans]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for plan in ctx.plans:
        if args.why or any("fallback" in r for r in plan.reasons):
            print(f"\n{plan.name}:")
            for reason in plan.reasons:
                print(f"  {reason}")
    return 0


def _decider(plan) -> str:
    fallback = any("fallback" in r for r in plan.reasons)
    return f"{plan.decided_by} (fallback from {plan.requested})" if fallback else plan.decided_by

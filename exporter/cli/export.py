"""``exporter export``: build, gate and publish one artefact directory per planned model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportError
from ..options import P1, ExportOptions
from ..precisions import NAMES
from .context import add_model_arguments, load_context

DEFAULT_OUT = "artefacts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where artefact directories are published (default ./{DEFAULT_OUT})")
    add_export_arguments(parser)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Gate and trust flags, shared by ``export`` and ``build`` (which exports every model first)."""
    parser.add_argument("--accept-degraded", action="store_true",
                        help="publish even when the quality gate fails (recorded in report.json)")
    parser.add_argument("--min-cosine", action="append", default=[], metavar="P=V",
                        help="gate threshold override, e.g. int8=0.985, or a 1st-percentile floor, e.g. "
                             "int4:p1=0.93 (repeatable)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow models whose architecture is custom code from their repository")
    parser.add_argument("--verification-limit", type=int, metavar="N",
                        help="gate on N sentences of the verification set (default: all)")


def export_options(args: argparse.Namespace) -> ExportOptions:
    """The :class:`~exporter.options.ExportOptions` of :func:`add_export_arguments`' flags (validated), without
    importing the export stack, so ``build`` can still check its options before torch loads."""
    limit = args.verification_limit
    if limit is not None and limit < 1:
        raise ConfigError(f"--verification-limit={limit}: expected a positive number of sentences")
    return ExportOptions(thresholds=parse_thresholds(args.min_cosine), accept_degraded=args.accept_degraded,
                         trust_remote_code=args.trust_remote_code, verification_limit=limit)


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """``["int8=0.985", "int4:p1=0.93"]`` -> ``{"int8": 0.985, "int4:p1": 0.93}``; bad entries raise ConfigError
    naming them."""
    thresholds = {}
    for item in items:
        key, sep, value = item.partition("=")
        precision, colon, statistic = key.partition(":")
        if not sep or precision not in NAMES or (colon and statistic != P1):
            raise ConfigError(f"--min-cosine {item!r}: expected PRECISION=VALUE or PRECISION:{P1}=VALUE with "
                              f"PRECISION one of {', '.join(NAMES)}")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not -1.0 <= number <= 1.0:
            raise ConfigError(f"--min-cosine {item!r}: VALUE must be a cosine between -1 and 1")
        thresholds[key] = number
    return thresholds


def summary_line(report: dict[str, Any], path: Path) -> str:
    """One human line per artefact: precision, size, ratio, gate numbers, time."""
    from ..verify import gate_checks

    gate = report["gate"]
    checks = gate_checks(gate)
    verdict = "passed" if gate["passed"] else ("FAILED, accepted (--accept-degraded)" if gate["accepted_degraded"]
                                               else "FAILED")
    ratio = report.get("size_ratio_vs_fp32") or 0.0
    fallback = report.get("route_details", {}).get("fallback")
    note = f" [ONNX export failed, torch fallback: {fallback['reason']}]" if fallback else ""
    return (f"{report['name']}: {report['precision']} ({report['route']}) {report['weights_bytes'] / 1e6:.1f} MB "
            f"= {ratio:.1%} of fp32; gate {' and '.join(f'{what} {got:.6f} >= {floor}' for what, got, floor in checks)}"
            f"? {verdict} (min {gate['min_cosine']:.6f}, "
            f"mean {gate['mean_cosine']:.6f}, p1 {gate['p1']:.6f}); {report['timings']['total']:.1f} s "
            f"-> {path}{note}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..artefact import export_artefact

    options = export_options(args)
    ctx = load_context(args)
    for model in ctx.model_dirs:
        ctx.model_dir(model)  # an unavailable model fails the command before any export
    reports, failures = [], []
    started = time.perf_counter()
    for plan in tqdm(ctx.plans, desc="export", unit="model", file=sys.stderr, disable=len(ctx.plans) < 2):
        try:
            artefact = export_artefact(plan, ctx.model_dir(plan.model), Path(args.out), options)
        except ExportError as exc:  # includes a failed gate; the previous artefact (if any) is untouched
            failures.append({"name": plan.name, "precision": plan.precision, "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
            continue
        reports.append((artefact.report, artefact.path))
        if not args.json:
            print(summary_line(artefact.report, artefact.path))
    if args.json:
        print(json.dumps({"artefacts": [dict(r, path=str(p)) for r, p in reports], "failures": failures,
                          "seconds": round(time.perf_counter() - started, 2)}, indent=2))
    return ExportError.exit_code if failures else 0

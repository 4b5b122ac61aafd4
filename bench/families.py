"""Quality per architecture family: every tiny family model (:mod:`bench.tiny_families`) exported at every precision,
its gate numbers (cosine to sentence-transformers fp32 on the same weights, the project's verification set).

``python -m bench.families [--limit N] [--precisions fp32,fp16,...] [--out docs/benchmarks]`` writes
``families-<date>.json`` and ``.md``. fp16 and bf16 are planned for an Ampere GPU target (``cuda:8.0``); their gate
runs on this host's CPU, as ``exporter export`` does. Random tiny models say whether a family's graph, pooling
and tokenizer are right, not how a trained model of that family degrades: for that, see docs/quality.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import machine, today
from bench.tiny_families import FAMILIES
from exporter import ExporterError, ExportOptions, export_artefact, make_plans
from exporter.models import ModelSpec

log = logging.getLogger("exporter.bench.families")

PRECISIONS = ("fp32", "fp16", "int8", "bf16", "int4")
GPU_ONLY = {"fp16": "cuda:8.0", "bf16": "cuda:8.0"}  # planned for this target; gated on the CPU here


def measure(family: str, precision: str, work: Path, limit: int | None) -> dict[str, Any]:
    """One export: route, runtime, gate statistics, or the error that stopped it."""
    model = work / family / "st"
    if not (model / "modules.json").is_file():
        FAMILIES[family](work / family)
    plans = make_plans([ModelSpec(str(model), f"{family}-{precision}", precision=precision)],
                       device=GPU_ONLY.get(precision, "cpu"))
    (plan,) = plans.plans
    try:
        report = export_artefact(plan, model, work / "out", ExportOptions(verification_limit=limit)).report
    except ExporterError as exc:
        return {"family": family, "precision": precision, "error": str(exc).splitlines()[0]}
    gate = report["gate"]
    optimizer = report["route_details"].get("optimizer")
    return {"family": family, "precision": precision, "route": report["route"], "runtime": report["runtime"],
            "fused": not (isinstance(optimizer, str) and optimizer.startswith("none")) if optimizer else None,
            "passed": gate["passed"], "statistic": gate["statistic"], "threshold": gate["threshold"],
            "min_cosine": gate["min_cosine"], "mean_cosine": gate["mean_cosine"], "sentences": gate["sentences"]}


def markdown(result: dict[str, Any]) -> str:
    """A family x precision table of min cosines (mean for the precision whose gate is a mean)."""
    precisions = result["precisions"]
    cells: dict[tuple[str, str], str] = {}
    for row in result["rows"]:
        if "error" in row:
            cell = "error"
        else:
            cell = f"{row['min_cosine']:.6f}" + ("" if row["passed"] else " ✗")
            if row["statistic"] != "min_cosine":
                cell += f" (mean {row['mean_cosine']:.6f})"
        cells[row["family"], row["precision"]] = cell
    host = result["machine"]
    lines = [f"Min cosine to sentence-transformers fp32, {result['sentences']} verification sentences; "
             f"CPU: {host['cpu']} ({host['int8_kind']}), {result['date']}.", "",
             "| family | " + " | ".join(precisions) + " |", "|---" * (len(precisions) + 1) + "|"]
    for family in result["families"]:
        lines.append(f"| {family} | " + " | ".join(cells.get((family, p), "–") for p in precisions) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="verification sentences per export (default 64)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    precisions = args.precisions.split(",")
    families = args.families.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="families-") as tmp:
        for family in families:
            for precision in precisions:
                rows.append(measure(family, precision, Path(tmp), args.limit))
                print(json.dumps(rows[-1]), flush=True)
    result = {"date": today(), "machine": machine(), "sentences": args.limit, "families": families,
              "precisions": precisions, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"families-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0 if all(row.get("passed") for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

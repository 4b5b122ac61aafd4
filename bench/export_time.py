"""Benchmark: wall time to export fp32 + fp16 + int8 of a model, quality gate included, in one process.

The issue's target is <= 30 s for the bundled all-MiniLM-L6-v2 on the 2-core build machine. This is a figure
for the report, not a test: run ``python -m bench.export_time [--model ID_OR_DIR] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.export_time", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--precision", action="append", help="default: fp32, fp16, int8")
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    from exporter.artefact import export_artefact
    from exporter.config import Config
    from exporter.devices import resolve_device
    from exporter.models import ModelSpec, derive_name, resolve_model_dir
    from exporter.plan import resolve

    imported = time.perf_counter() - started
    model_dir = resolve_model_dir(args.model)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as out:
        for precision in args.precision or ["fp32", "fp16", "int8"]:
            config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": precision, "EMB_PROVIDER_DEVICE": "cuda:8.0"})
            spec = ModelSpec(args.model, f"{derive_name(args.model)}-{precision}")
            plan = resolve(spec, config, resolve_device(config.device))
            report = export_artefact(plan, model_dir, Path(out)).report
            runs.append({"precision": precision, "timings": report["timings"],
                         "size_ratio_vs_fp32": report["size_ratio_vs_fp32"],
                         "gate": {k: report["gate"][k] for k in ("statistic", "min_cosine", "mean_cosine", "passed")}})
    total = time.perf_counter() - started
    result = {"model": args.model, "total_s": round(total, 1), "imports_s": round(imported, 1), "runs": runs,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

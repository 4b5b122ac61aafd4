"""``python -m bench.cpu`` for a GPU target, as ``scripts/gpu.sh`` (``make gpu-bench``) runs it: every precision
asked for is built for the cuda target, run in-process and served by the real local Triton on the GPU, against
sentence-transformers fp16 in-process on the same card. Writes ``<out>/gpu-<date>-served.{json,md,png}``.

It expects the environment ``scripts/gpu.sh`` makes (bench/gpu_env.py): Triton's python stub runs this
interpreter's environment, so the launcher's own stub check applies unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys

from bench import cpu
from bench.machine import today


def report_stem(name: str = "served") -> str:
    return f"gpu-{today()}-{name}"


# one pass over the STS-B batches: each new shape pays for CUDA kernel selection (H200: 95% window spread with 1)
WARMUP_REQUESTS = 16


def main(argv: list[str] | None = None) -> int:
    """bench.cpu's CLI; ``--warmup`` defaults to :data:`WARMUP_REQUESTS` (a later ``--warmup`` wins), and
    ``--report-name NAME`` names the report ``gpu-<date>-NAME`` (default ``served``), so runs of several models
    on one day keep their own files."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--report-name", default="served", type=_report_name)
    known, rest = parser.parse_known_args(argv)
    return cpu.main(["--warmup", str(WARMUP_REQUESTS), *rest], stem=report_stem(known.report_name),
                    command="python -m bench.gpu_served" + (f" --report-name {known.report_name}"
                                                            if known.report_name != "served" else ""))


def _report_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r}: allowed: letters, digits, '.', '_' and '-'")
    return value


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.cpu`` for a GPU target, as ``scripts/gpu.sh`` (``make gpu-bench``) runs it: every precision
asked for is built for the cuda target, run in-process and served by the real local Triton on the GPU, against
sentence-transformers fp16 in-process on the same card. Writes ``<out>/gpu-<date>-served.{json,md,png}``.

It expects the environment ``scripts/gpu.sh`` makes (bench/gpu_env.py): Triton's python stub runs this
interpreter's environment, so the launcher's own stub check applies unchanged.
"""

from __future__ import annotations

import sys

from bench import cpu
from bench.machine import today


def report_stem() -> str:
    return f"gpu-{today()}-served"


# one pass over the STS-B batches: each new shape pays for CUDA kernel selection (H200: 95% window spread with 1)
WARMUP_REQUESTS = 16


def main(argv: list[str] | None = None) -> int:
    """bench.cpu's CLI; ``--warmup`` defaults to :data:`WARMUP_REQUESTS` (a later ``--warmup`` wins)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return cpu.main(["--warmup", str(WARMUP_REQUESTS), *argv], stem=report_stem(), command="python -m bench.gpu_served")


if __name__ == "__main__":
    sys.exit(main())

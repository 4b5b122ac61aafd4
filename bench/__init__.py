"""emb-provider's benchmarks: what the exporter's artefacts cost and give, measured against the unconverted model.

Entry points (``pip install -e '.[bench]'``, run from the repository root so the default paths resolve):

- ``python -m bench.cpu``: every precision the host supports, in-process and served by a real local Triton,
  against sentence-transformers; writes ``docs/benchmarks/<host>-<date>.{json,md,png}`` (docs/benchmarks/).
- ``python -m bench.gpu``: torch against the ONNX routes on ONNX Runtime CUDA, one lever at a time
  (docs/benchmarks/gpu.md).
- ``python -m bench.load``: a load test of a served repository: nothing lost, nothing mixed up
  (docs/reliability.md).
- ``python -m bench.export_time``, ``python -m bench.int8_portability``, ``python -m bench.fusion_probe``: the
  export wall time, int8 vectors and speed across CPUs, and which exports let ONNX Runtime fuse attention.

The CPU benchmark's pieces, in the order a run uses them: :mod:`bench.machine` (host facts, RSS probes),
:mod:`bench.workloads` (texts and batches), :mod:`bench.measure` (the one timing loop), :mod:`bench.inprocess`
(runners in their own process), :mod:`bench.quality` (STS-B next to speed), :mod:`bench.served` (Triton + client),
:mod:`bench.run` (the steps in order) and :mod:`bench.report` (JSON, Markdown, plot). The GPU benchmark's are
:mod:`bench.gpu_workers` (one variant per process) and :mod:`bench.gpu_report`.

The package uses the exporter's public names only. This module imports nothing heavy: the in-process runners
import it before measuring their own resident memory.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The checkout this package sits in (the default report and data paths are relative to it)."""

DEFAULT_STSB = REPO.parent / "shared" / "data" / "stsb" / "sts-dev.csv"
"""The STS-B dev split beside the checkout (``../shared``, as in CI)."""

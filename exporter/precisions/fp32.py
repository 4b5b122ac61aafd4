"""fp32: the exported graph after ONNX Runtime's offline transformer fusions (same numbers, fewer nodes).

Every target serves it; ``auto`` picks it on CPU targets (the precision guide: fp32 recommended on CPU).
"""

from __future__ import annotations

from pathlib import Path

from .base import BuildJob, GuideRow, Precision, RouteResult, everywhere


def build(job: BuildJob, work: Path) -> RouteResult:
    from ._onnx import build_optimized

    return build_optimized(job, work)


def build_torch(job: BuildJob, work: Path) -> RouteResult:
    """fp32 weights and compute in the torch runtime: models with remote code (which never go to ONNX) and models
    ONNX export cannot express."""
    from ._torch import build_cast

    return build_cast(job, work, "float32", {"cpu": "float32", "cuda": "float32"})


PRECISION = Precision(
    name="fp32", route="onnx-fp32", runtime="onnx",
    description="ONNX, ONNX Runtime offline graph optimization",
    guide=GuideRow(memory="100%", speed="baseline", loss="none"),
    gate_threshold=0.99999, spearman_tolerance=0.001,
    build=build, supported_on=everywhere, torch_route=("torch-fp32", build_torch),
)

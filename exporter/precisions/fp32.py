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
    """The fallback for models ONNX export cannot express: fp32 weights, fp32 torch compute."""
    from ._torch import cast_build

    return cast_build("float32", {"cpu": "float32", "cuda": "float32"})(job, work)


PRECISION = Precision(
    name="fp32", route="onnx-fp32", runtime="onnx",
    description="ONNX, ONNX Runtime offline graph optimization",
    guide=GuideRow(memory="100%", speed="baseline", loss="none"),
    gate_threshold=0.99999, spearman_tolerance=0.001,
    build=build, supported_on=everywhere, torch_fallback=build_torch,
)

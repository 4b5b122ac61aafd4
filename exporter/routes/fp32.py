"""fp32 route: the exported graph after ONNX Runtime's offline transformer fusions (same numbers, fewer nodes)."""

from __future__ import annotations

from pathlib import Path

from .base import BuildJob, RouteResult
from .onnx_common import MODEL_FILE, export_fp32, optimize


def build(job: BuildJob, work: Path) -> RouteResult:
    result = RouteResult(files=[MODEL_FILE], fp32_bytes=0)
    raw = export_fp32(job, work / "raw.onnx", result)
    model = optimize(job, raw, result)
    model.save_model_to_file(str(work / MODEL_FILE))
    raw.unlink()
    return result

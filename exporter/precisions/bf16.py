"""bf16 (torch): ONNX Runtime's CPU and CUDA providers lack bf16 kernels for most of these ops, so the
python-backend model runs the encoder in torch, bf16 weights and compute.

Served on NVIDIA compute capability 8.0+ (Ampere and later) only; the plan turns bf16 into fp16/fp32 for other
targets (CPU targets are not offered bf16). The gate runs it on the build host's CPU, where torch has bf16 too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import BuildJob, GuideRow, Precision, RouteResult, not_on

if TYPE_CHECKING:
    from ..devices import Device


def supported_on(device: Device) -> str | None:
    capability = device.cuda_capability
    return None if capability is not None and capability >= (8, 0) else not_on(device, "bf16")


def build(job: BuildJob, work: Path) -> RouteResult:
    from ._torch import build_cast

    return build_cast(job, work, "bfloat16", {"cpu": "bfloat16", "cuda": "bfloat16"})


PRECISION = Precision(
    name="bf16", route="torch-bf16", runtime="torch",
    description="torch bf16 in a python-backend model (Ampere+)",
    guide=GuideRow(memory="50%", speed="2-3x", loss="slight"),
    gate_threshold=0.999, spearman_tolerance=0.002,
    build=build, supported_on=supported_on,
    native_dtypes=("bfloat16",),
)

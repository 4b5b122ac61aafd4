"""bf16 route (torch): ONNX Runtime's CPU and CUDA providers lack bf16 kernels for most of these ops, so the
python-backend model runs the encoder in torch, bf16 weights and compute (Ampere+; the plan already turned bf16
into fp16/fp32 for targets without it). The gate runs it on the build host's CPU, where torch has bf16 too."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import BuildJob, RouteResult
from .torch_common import load_fp32, save


def build(job: BuildJob, work: Path) -> RouteResult:
    result = RouteResult(files=[], fp32_bytes=0)
    encoder = load_fp32(job, result)
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    save(job, work, tensors, {"cpu": "bfloat16", "cuda": "bfloat16"}, result)
    return result

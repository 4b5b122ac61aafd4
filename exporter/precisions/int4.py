"""int4 (torch): bitsandbytes NF4 ``Linear4bit`` for every transformer linear layer.

bitsandbytes leaves embeddings alone, and in small models the word-embedding table is about half the weights,
so the table (every ``nn.Embedding``) is stored int8 row-wise (one fp16 scale per row) and dequantized at load;
NF4 statistics are double-quantized (``compress_statistics``). Everything else is stored fp16. Compute: fp16 on
GPU, fp32 on CPU (``encoder.json`` "compute_dtype"); bitsandbytes 0.50 runs NF4 on CPU, so CI gates this
precision. Served on CPU targets and NVIDIA compute capability 7.0+; not on ROCm.

Its gate compares the **mean** cosine (4-bit weights shift every vector a little; docs/quality.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import BuildJob, GuideRow, Precision, RouteResult, not_on

if TYPE_CHECKING:
    import torch

    from ..devices import Device

BLOCK_SIZE = 32


def supported_on(device: Device) -> str | None:
    capability = device.cuda_capability
    if device.kind == "cpu" or (capability is not None and capability >= (7, 0)):
        return None
    return not_on(device, "int4")


def _nf4(weight: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """bitsandbytes NF4 packing, keyed exactly as ``Linear4bit`` saves itself (``<name>`` = "<module>.weight")."""
    import bitsandbytes.functional as bnbf

    packed, state = bnbf.quantize_4bit(weight.float(), blocksize=BLOCK_SIZE, quant_type="nf4",
                                       compress_statistics=True)
    return {name: packed, **{f"{name}.{k}": v for k, v in state.as_dict(packed=True).items()}}


def _int8_rows(weight: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Symmetric int8 per row: ``weight ≈ int8 * scale[row]``."""
    import torch

    from ..triton.runtime.torch_encoder import INT8_SUFFIX, SCALE_SUFFIX

    scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(weight / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return {name + INT8_SUFFIX: q, name + SCALE_SUFFIX: scale.half()}


def build(job: BuildJob, work: Path) -> RouteResult:
    from torch import nn

    from ._torch import load_fp32, save

    result = RouteResult(files=[], fp32_bytes=0)
    encoder = load_fp32(job, result)
    tensors: dict[str, torch.Tensor] = {}
    quantized: set[str] = set()
    with result.timed("quantize"):
        for name, module in encoder.named_modules():
            key = f"{name}.weight"
            if isinstance(module, nn.Linear) and name.startswith("transformer."):
                tensors.update(_nf4(module.weight.data, key))
            elif isinstance(module, nn.Embedding):
                tensors.update(_int8_rows(module.weight.data, key))
            else:
                continue
            quantized.add(key)
        for key, value in encoder.state_dict().items():
            if key not in quantized:
                tensors[key] = value.half() if value.is_floating_point() else value
    save(job, work, tensors, {"cpu": "float32", "cuda": "float16"}, result,
         quantization={"linear": f"bitsandbytes nf4 blocksize {BLOCK_SIZE}, double-quantized statistics",
                       "embeddings": "int8 per row, fp16 scales", "other": "float16"})
    result.details["int4"] = {"linear": "nf4", "embeddings": "int8 rows"}
    return result


PRECISION = Precision(
    name="int4", route="torch-bnb-nf4", runtime="torch",
    description="bitsandbytes NF4 Linear4bit, torch python-backend model",
    guide=GuideRow(memory="12.5%", speed="4-5x", loss="significant"),
    gate_threshold=0.96, gate_statistic="mean_cosine", gate_p1=0.88, spearman_tolerance=0.015,
    build=build, supported_on=supported_on,
    quantization_scheme="bitsandbytes NF4 (Linear4bit), embeddings in 8 bits", quantization_method=True,
)

"""fp16 route: ONNX Runtime's transformer optimizer for the model type, then float16 with fp32 inputs/outputs.

A naive cast of the exported graph fails to load (Cast type mismatch, ../shared/notes/precision.md); the
optimizer's fused graph converts cleanly. The final L2 normalisation runs in fp32 (blocked from the cast) so the
unit vectors keep full precision. fp16 is a GPU route: on CPU it saves memory, not time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

from .base import BuildJob, RouteResult
from .onnx_common import MODEL_FILE, export_fp32, optimize

log = logging.getLogger(__name__)

# ops whose reductions lose precision in fp16; ONNX Runtime's converter keeps them (and their I/O) in fp32
FP32_OPS = DEFAULT_OP_BLOCK_LIST + ["ReduceL2", "ReduceSum", "ReduceMean", "Div", "Sqrt", "Pow"]


def build(job: BuildJob, work: Path) -> RouteResult:
    result = RouteResult(files=[MODEL_FILE], fp32_bytes=0)
    raw = export_fp32(job, work / "raw.onnx", result)
    model = optimize(job, raw, result)
    with result.timed("fp16"):
        model.convert_float_to_float16(keep_io_types=True, op_block_list=FP32_OPS)
    result.details["fp32_ops"] = FP32_OPS[len(DEFAULT_OP_BLOCK_LIST):]
    model.save_model_to_file(str(work / MODEL_FILE))
    raw.unlink()
    return result

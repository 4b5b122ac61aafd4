"""int8 route: int8 weights everywhere, int8 matrix products with fine-grained activation scales.

Recipe (measured in docs/quality.md): the word-embedding ``Gather`` table is quantized by ONNX Runtime's dynamic
quantizer (int8 per channel); every weight ``MatMul`` becomes an ONNX Runtime ``MatMulNBits`` node with 8-bit
symmetric weights in blocks of 128 along K and ``accuracy_level=4`` (int8 compute; activations are quantized per
row and block at run time). Plain ``quantize_dynamic`` quantizes each activation tensor with *one* scale, which
costs the very short inputs most (min cosine 0.959 on the verification set); per-block activation scales keep
the minimum above 0.99 at the same ~25.6% of the fp32 size.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .base import BuildJob, RouteResult
from .onnx_common import MODEL_FILE, export_fp32

BITS, BLOCK_SIZE, ACCURACY_LEVEL = 8, 128, 4


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """ONNX Runtime's quantizers configure the *root* logger (``logging.basicConfig(level=INFO)`` when
    ``matmul_nbits_quantizer`` is imported; module-level ``logging.info`` calls in ``quantize_dynamic``, which
    install a default handler). Either makes every log line of the application print twice, so the root logger
    is put back as it was; the nbits quantizer's own per-node INFO lines are silenced."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def build(job: BuildJob, work: Path) -> RouteResult:
    import onnx

    result = RouteResult(files=[MODEL_FILE], fp32_bytes=0)
    raw = export_fp32(job, work / "raw.onnx", result)
    gathered = work / "gather-int8.onnx"
    with result.timed("quantize"), _root_logger_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantize_dynamic(raw, gathered, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"])
        quantizer = MatMulNBitsQuantizer(onnx.load(str(gathered)), bits=BITS, block_size=BLOCK_SIZE,
                                         is_symmetric=True, accuracy_level=ACCURACY_LEVEL,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(work / MODEL_FILE))
    raw.unlink()
    gathered.unlink()
    result.details["int8"] = {"embeddings": "dynamic int8 per channel (Gather)",
                              "matmul": f"MatMulNBits bits={BITS} block_size={BLOCK_SIZE} symmetric "
                                        f"accuracy_level={ACCURACY_LEVEL}"}
    return result

"""int8: smoothed per-token int8 matrix products, int8 embedding table (:mod:`exporter.precisions.smoothquant`).

Recipe (measured in docs/quality.md): ONNX Runtime's optimizer fuses attention into ``MultiHeadAttention`` and
leaves the Q/K/V projections as ``MatMul`` nodes; every weight ``MatMul`` then becomes a per-token int8 product
with SmoothQuant scales calibrated on ``data/calibration.txt``; the word-embedding ``Gather`` table is quantized
by ONNX Runtime's dynamic quantizer (int8 per channel). Weights are scaled so that no pair of them can saturate
the 16-bit sums of AVX2 CPUs, so the integer sums are exact on every CPU (the build refuses a graph where that does
not hold). Size, quality and speed by CPU kind, and the recipes it was chosen over (8-bit ``MatMulNBits``: as
accurate, slower; plain ``quantize_dynamic``: faster, misses the gate): docs/quality.md.

Served on CPU targets only: the graph needs kernels only ONNX Runtime's CPU provider has, so a GPU target would
run its matrix products on the host. GPU int8 routes whose GEMMs run on the GPU (int8 and FP8, torch) were
measured on an H200 and none beat the fp16 route, so a GPU plan falls back to fp16 and its reason says both
(docs/benchmarks/gpu.md, "int8 on the GPU"; ``python -m bench.gpu --variants torch-w8a8-compiled,...``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .base import BuildJob, GuideRow, Precision, RouteResult, not_on

if TYPE_CHECKING:
    import numpy as np

    from ..devices import Device

_GPU_PROVIDERS = {"cuda": "CUDA", "rocm": "ROCm"}  # device kind -> ONNX Runtime execution provider


def supported_on(device: Device) -> str | None:
    if device.kind == "cpu":
        return None
    provider = _GPU_PROVIDERS.get(device.kind)
    if provider is None:
        return not_on(device, "int8")
    reason = (f"ONNX Runtime's {provider} provider has no dynamic-int8 kernels (MatMulIntegerToFloat, "
              "DynamicQuantizeLinear): the int8 graph would run its matrix products on the host CPU")
    return reason + _GPU_MEASURED.get(device.kind, "")


# Why no GPU int8 route is offered instead (docs/benchmarks/gpu.md, "int8 on the GPU"): on an H200, per-token
# int8 GEMMs (torch._int_mm) and FP8 (torch._scaled_mm), even under torch.compile, were measured against the fp16
# route in the same runs; none beat it, and FP8 also fell below int8's gate (min cosine 0.990 < 0.99 on bge-large).
_GPU_MEASURED = {"cuda": "; no GPU int8 route measured beats the fp16 route (H200: int8 GEMMs 0.30-0.71x, FP8 "
                         "0.39-1.01x its throughput; docs/benchmarks/gpu.md)"}


CALIBRATION_BATCH = 16


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """ONNX Runtime's ``quantize_dynamic`` logs through module-level ``logging`` calls, which install a default
    handler on the *root* logger and make every later log line of the application print twice; the root logger
    is put back as it was. Meanwhile it stays at ERROR: the quantizer's "model is already quantized" WARNING is
    expected here (the matrix products are int8 already; only the embedding table is left to it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def calibration_texts() -> list[str]:
    """The project's calibration corpus: 240 inputs from one character to a paragraph, 19 languages, code, noise.
    Written for this purpose and disjoint from the gate's verification set, so the gate stays an independent
    check."""
    text = resources.files("exporter").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def calibration_batches(job: BuildJob, texts: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Token id batches of ``texts``, tokenized as the server will (the model's own tokenizer, truncation at
    ``max_seq_length``)."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(job.spec.transformer_dir))
    for start in range(0, len(texts), CALIBRATION_BATCH):
        feeds = tokenizer(texts[start:start + CALIBRATION_BATCH], padding=True, truncation=True,
                          max_length=job.spec.max_seq_length, return_tensors="np")
        yield {name: np.asarray(value, dtype=np.int64) for name, value in feeds.items()}


def _refuse_cpu_dependent(path: Path) -> None:
    """Fail the build if any integer GEMM of the final graph could saturate on an x86 CPU without VNNI: its
    vectors would then depend on the serving CPU, and the gate's numbers would hold only where it ran."""
    import onnx

    from ..errors import ExportError
    from . import smoothquant

    found = smoothquant.saturating_gemms(onnx.load(str(path)))
    if found:
        raise ExportError(f"int8 graph would give other vectors on AVX2-only CPUs than on VNNI ones "
                          f"({len(found)} integer GEMMs can overflow int16 pair sums): " + "; ".join(found[:3]))


def build(job: BuildJob, work: Path) -> RouteResult:
    import onnx
    from onnx import TensorProto

    from . import smoothquant
    from ._onnx import MODEL_FILE, export_fp32, optimize

    result = RouteResult(files=[MODEL_FILE], fp32_bytes=0)
    raw = export_fp32(job, work / "raw.onnx", result)
    graph = optimize(job, raw, result, keep_projections=True).model
    texts = calibration_texts()
    with result.timed("calibrate"):
        ranges = smoothquant.activation_ranges(graph, calibration_batches(job, texts))
    smoothed = work / "per-token.onnx"
    with result.timed("quantize"), _root_logger_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        onnx.save(smoothquant.quantize_per_token(graph, ranges), str(smoothed))
        # the contrib ops above defeat ONNX shape inference: tensors it cannot type are float
        quantize_dynamic(smoothed, work / MODEL_FILE, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Gather"], extra_options={"DefaultTensorType": TensorProto.FLOAT})
    raw.unlink()
    smoothed.unlink()
    _refuse_cpu_dependent(work / MODEL_FILE)
    result.details["int8"] = {"matmul": f"per-token int8 (MatMulIntegerToFloat), SmoothQuant alpha "
                                        f"{smoothquant.ALPHA}, weights int8 per column with adjacent pairs "
                                        f"|w_2i|+|w_2i+1| <= {smoothquant.PAIR_BUDGET}",
                              "saturating_gemms": 0,
                              "calibration": f"{len(texts)} texts (data/calibration.txt)",
                              "embeddings": "dynamic int8 per channel (Gather)"}
    return result


PRECISION = Precision(
    name="int8", route="onnx-int8-dynamic", runtime="onnx",
    description="int8 embeddings + smoothed per-token int8 MatMuls, ORT",
    guide=GuideRow(memory="25%", speed="3-4x", loss="medium"),
    gate_threshold=0.99, spearman_tolerance=0.005,
    build=build, supported_on=supported_on,
    quantization_scheme=("int8 embedding table + per-token int8 matrix products with SmoothQuant scales, "
                         "ONNX Runtime"),
    quantization_method=True,
    cpu_int8_kernels=True,
)

"""fp16: ONNX Runtime's transformer optimizer for the model type, then float16 with fp32 inputs/outputs.

A naive cast of the exported graph fails to load (Cast type mismatch, ../shared/notes/precision.md); the
optimizer's fused graph converts cleanly. The final L2 normalisation runs in fp32 (blocked from the cast) so the
unit vectors keep full precision. fp16 is a GPU precision: on CPU it saves memory, not time. Every target serves
it; ``auto`` picks it on GPU targets, and for models stored in float16.
"""

from __future__ import annotations

from pathlib import Path

from .base import BuildJob, GuideRow, Precision, RouteResult, everywhere

# ops whose reductions lose precision in fp16, kept in fp32 (with their I/O) on top of ONNX Runtime's own list
EXTRA_FP32_OPS = ["ReduceL2", "ReduceSum", "ReduceMean", "Div", "Sqrt", "Pow"]


def fp32_ops() -> list[str]:
    """Every op the float16 conversion keeps in fp32: ONNX Runtime's ``DEFAULT_OP_BLOCK_LIST`` + ours."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return DEFAULT_OP_BLOCK_LIST + EXTRA_FP32_OPS


def build(job: BuildJob, work: Path) -> RouteResult:
    from ._onnx import build_optimized

    return build_optimized(job, work, finish=_to_float16)


def build_torch(job: BuildJob, work: Path) -> RouteResult:
    """float16 weights in the torch runtime (models with remote code, or that ONNX export cannot express): fp16
    compute on GPU; on CPU, where torch's float16 kernels are slow, fp32 compute over the fp16-rounded weights."""
    from ._torch import build_cast

    return build_cast(job, work, "float16", {"cpu": "float32", "cuda": "float16"})


def _to_float16(model, result: RouteResult) -> None:
    with result.timed("fp16"):
        model.convert_float_to_float16(keep_io_types=True, op_block_list=fp32_ops())
        removed = drop_duplicate_nodes(model.model.graph)
    result.details["fp32_ops"] = list(EXTRA_FP32_OPS)
    if removed:
        result.details["duplicate_casts_removed"] = removed


def drop_duplicate_nodes(graph) -> int:
    """Keep the first of byte-identical nodes (and value_info entries) of ``graph``; returns how many were dropped.

    ONNX Runtime's float16 converter before 1.32 (e.g. onnxruntime-gpu 1.31.1, the newest GPU build on PyPI) adds
    one ``<tensor>_cast_to_fp32_node`` Cast per consumer of a tensor that an fp32-kept op reads: identical nodes
    with one name and one output, which ONNX Runtime refuses to load ("two nodes with same node name"). 1.32
    shares one Cast, which is what this leaves. Identical nodes compute the same tensor, so dropping the later
    copies changes nothing else; the first copy precedes every consumer in a topologically sorted graph."""
    def dedupe(items) -> int:
        seen: set[bytes] = set()
        keep = []
        for item in items:
            key = item.SerializeToString(deterministic=True)
            if key not in seen:
                seen.add(key)
                keep.append(item)
        dropped = len(items) - len(keep)
        if dropped:
            del items[:]
            items.extend(keep)
        return dropped

    removed = dedupe(graph.node)
    dedupe(graph.value_info)
    return removed


PRECISION = Precision(
    name="fp16", route="onnx-fp16", runtime="onnx",
    description="ORT transformers optimizer + float16 conversion, fp32 I/O",
    guide=GuideRow(memory="50%", speed="2-3x", loss="slight"),
    gate_threshold=0.999, spearman_tolerance=0.002,
    build=build, supported_on=everywhere, torch_route=("torch-fp16", build_torch),
    native_dtypes=("float16", "half"),
)

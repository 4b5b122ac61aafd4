"""The precision vocabulary and the route table: the one place that says which route builds which precision.

A *route* is how an artefact of a given precision is produced and run (ONNX Runtime graph or a torch fallback
loaded by a python-backend model). Plan resolution picks the precision; this table maps it to its route, the
default quality-gate threshold and the runtime kind, so no other module branches on precision names.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int4")
"""Concrete precisions, in order of decreasing fidelity."""

QUANTIZED: frozenset[str] = frozenset({"int8", "int4"})
"""Precisions that are quantization methods (EMB_PROVIDER_ENABLE_QUANTIZATION / QUANTIZATION_METHOD apply)."""


@dataclass(frozen=True)
class Route:
    """How one precision is built and served."""

    name: str
    precision: str
    runtime: str  # "onnx": ONNX Runtime graph; "torch": safetensors + torch loader in a python-backend model
    min_cosine: float  # default quality gate vs the fp32 reference (configurable per build)
    description: str


ROUTES: dict[str, Route] = {
    r.precision: r
    for r in (
        Route("onnx-fp32", "fp32", "onnx", 0.99999, "ONNX, ONNX Runtime offline graph optimization"),
        Route("onnx-fp16", "fp16", "onnx", 0.999, "ORT transformers optimizer + float16 conversion, fp32 I/O"),
        Route("torch-bf16", "bf16", "torch", 0.999, "torch bf16 in a python-backend model (Ampere+)"),
        Route("onnx-int8-dynamic", "int8", "onnx", 0.99, "int8 embeddings + smoothed per-token int8 MatMuls, ORT"),
        Route("torch-bnb-nf4", "int4", "torch", 0.96, "bitsandbytes NF4 Linear4bit, torch python-backend model"),
    )
}


def route_for(precision: str) -> Route:
    """The route that builds ``precision`` (a member of :data:`PRECISIONS`)."""
    return ROUTES[precision]

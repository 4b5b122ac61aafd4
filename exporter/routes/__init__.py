"""One build function per route, registered in :data:`ROUTE_BUILDERS` under the route names of
:data:`exporter.precisions.ROUTES`. Adding a route = one module here + one line below."""

from __future__ import annotations

from . import bf16, fp16, fp32, int4_bnb, int8
from .base import BuildJob, RouteBuilder, RouteResult

ROUTE_BUILDERS: dict[str, RouteBuilder] = {
    "onnx-fp32": fp32.build,
    "onnx-fp16": fp16.build,
    "onnx-int8-dynamic": int8.build,
    "torch-bnb-nf4": int4_bnb.build,
    "torch-bf16": bf16.build,
}

__all__ = ["ROUTE_BUILDERS", "BuildJob", "RouteBuilder", "RouteResult"]

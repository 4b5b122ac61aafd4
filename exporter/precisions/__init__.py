"""The precisions this exporter builds: :data:`PRECISIONS` is the only registry.

Each module of this package defines one precision (``fp32.py``, ``fp16.py``, ``bf16.py``, ``int8.py``,
``int4.py``) as a frozen :class:`~exporter.precisions.base.Precision`: its route and runtime, quality gate,
STS-B tolerance, quantization scheme, where it runs (``supported_on``) and its ``build``. Plan resolution, device
capability, the gate, eval, the repository and the benchmarks all read it here, so no other module branches on
precision names. Adding a precision = one module + one line below (CONTRIBUTING.md).
"""

from __future__ import annotations

from ..errors import ConfigError
from . import bf16, fp16, fp32, int4, int8
from .base import BuildJob, GuideRow, Precision, RouteBuilder, RouteResult

PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    fp32.PRECISION,
    fp16.PRECISION,
    bf16.PRECISION,
    int8.PRECISION,
    int4.PRECISION,
)}
"""Every precision, in order of decreasing fidelity (the order of ``Device.supported`` and of the CLI choices)."""

NAMES: tuple[str, ...] = tuple(PRECISIONS)
QUANTIZATION_METHODS: tuple[str, ...] = tuple(n for n, p in PRECISIONS.items() if p.quantization_method)
"""Precisions that are quantization methods (EMB_PROVIDER_ENABLE_QUANTIZATION / QUANTIZATION_METHOD apply)."""
TORCH_FALLBACK: dict[str, tuple[str, RouteBuilder]] = {n: p.torch_route for n, p in PRECISIONS.items() if p.torch_route}
"""ONNX-runtime precision -> (route, build) of its torch-runtime equivalent (for models with remote code)."""


def get(name: str) -> Precision:
    """The precision called ``name``; :class:`~exporter.errors.ConfigError` naming the allowed values otherwise."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ConfigError(f"unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}") from None


def for_native_dtype(dtype: str | None) -> str | None:
    """The precision a model stored in ``dtype`` (config.json ``torch_dtype``) resolves to, if any: only half
    precision storage decides; float32 is just the storage default."""
    return next((p.name for p in PRECISIONS.values() if dtype in p.native_dtypes), None)


__all__ = ["NAMES", "PRECISIONS", "QUANTIZATION_METHODS", "TORCH_FALLBACK", "BuildJob", "GuideRow", "Precision",
           "RouteBuilder", "RouteResult", "for_native_dtype", "get", "route_builders"]


def route_builders() -> dict[str, RouteBuilder]:
    """route name -> build, for every route a plan can name (each precision's own and its torch equivalent)."""
    builders = {p.route: p.build for p in PRECISIONS.values()}
    builders.update(dict(TORCH_FALLBACK.values()))
    return builders

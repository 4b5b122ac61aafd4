"""emb-provider exporter: plan -> export (build, quality gate) -> Triton repository -> serve.

The library API, in pipeline order::

    from exporter import make_plans, build_repository, TritonServer, ServerSettings

    plans = make_plans(["sentence-transformers/all-MiniLM-L6-v2"], device="cpu", precision="int8")
    result = build_repository(plans.plans, plans.model_dirs, Path("model_repository"))   # -> BuildResult
    with TritonServer(ServerSettings(result.repository, http_port=0)) as server:
        ...

:func:`export_artefact` builds one artefact directory (returns an :class:`Artefact`: path and report). Every error
is an :class:`ExporterError` (see :mod:`exporter.errors` for the tree and each class's CLI exit code).

Names are loaded on first use, so ``import exporter`` stays light: the export stack (torch, onnxruntime) is only
imported by what needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError, ExporterError, ExportError, GateError, ModelError, ServeError
from .provenance import versions

__version__ = "0.1.0"

_LAZY = {  # public name -> the module that defines it
    "Config": "exporter.config",
    "Plan": "exporter.plan",
    "PlanSet": "exporter.plan",
    "make_plans": "exporter.plan",
    "ExportOptions": "exporter.options",
    "export_artefact": "exporter.artefact",
    "Artefact": "exporter.records",
    "FORMAT_VERSION": "exporter.records",
    "read_report": "exporter.records",
    "ServingOptions": "exporter.triton.config",
    "BuildResult": "exporter.build",
    "build_repository": "exporter.build",
    "ServerSettings": "exporter.serve",
    "TritonServer": "exporter.serve",
}

__all__ = [
    "FORMAT_VERSION", "Artefact", "BuildResult", "Config", "ConfigError", "ExportError", "ExportOptions",
    "ExporterError", "GateError", "ModelError", "Plan", "PlanSet", "ServeError", "ServerSettings", "ServingOptions",
    "TritonServer", "__version__", "build_repository", "export_artefact", "make_plans", "read_report", "versions",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The exporter's one error tree; each class carries the exit code the CLI returns for it.

::

    ExporterError (exit 1)
     ├── ConfigError (exit 2)    invalid configuration, flag or repository: fixable by the user
     │    └── SchemaError        a config.pbtxt Triton's schema rejects (exporter.triton.schema)
     ├── ModelError (exit 2)     a model id or directory that cannot be used
     ├── ExportError (exit 1)    an artefact could not be built; nothing was published
     │    └── GateError          the quality gate failed; ``gate`` holds the numbers
     └── ServeError (exit 1)     tritonserver did not become ready, or died

``ConfigError`` and ``ModelError`` are also ``ValueError``s and ``ServeError`` a ``RuntimeError``, as before the
tree existed. :func:`exporter.cli.main` is the only place that turns an error into an exit code.
"""

from __future__ import annotations

from typing import Any


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1
    notes: tuple[str, ...] = ()

    def note(self, text: str) -> "ExporterError":
        """Add a line the CLI prints under the message (e.g. what was left unchanged); returns the error."""
        self.notes = (*self.notes, text)
        return self


class ConfigError(ExporterError, ValueError):
    """Invalid configuration: the message names the variable (or flag), the bad value and what is allowed."""

    exit_code = 2


class ModelError(ExporterError, ValueError):
    """A model id or directory that cannot be used: the message says which file or cache entry is missing."""

    exit_code = 2


class ExportError(ExporterError):
    """An artefact could not be built; nothing was published."""

    exit_code = 1


class OnnxExportError(ExportError):
    """``torch.onnx.export`` cannot express this model (an operator or control flow the tracer does not support);
    the artefact writer then builds the precision's torch route, where the precision has one."""


class GateError(ExportError):
    """The artefact's vectors are further from the fp32 reference than the gate allows (nothing published).
    ``gate`` holds the numbers (a :class:`exporter.verify.GateResult`)."""

    def __init__(self, message: str, gate: Any):
        super().__init__(message)
        self.gate = gate


class ServeError(ExporterError, RuntimeError):
    """The server did not become ready (or died): the message names the failing model and the log tail."""

    exit_code = 1


__all__ = ["ConfigError", "ExportError", "ExporterError", "GateError", "ModelError", "ServeError"]

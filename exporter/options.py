"""``ExportOptions``: how to build an artefact (gate thresholds, degraded builds, remote code, gate size).

A module of its own, importing only the precision registry, so the CLI can turn and check flags into options
before the export stack (torch, transformers, onnxruntime) is imported: a bad flag or a plan that cannot be served
(e.g. ``build --tensorrt`` on a CPU target) then fails in well under a second instead of after the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from .precisions import get

P1 = "p1"  # the suffix of a 1st-percentile floor override: ``--min-cosine int4:p1=0.93``


@dataclass(frozen=True)
class ExportOptions:
    """How to build: per-precision gate threshold overrides (precision -> threshold of its gate statistic;
    ``"<precision>:p1"`` -> its 1st-percentile floor), whether a failing gate
    is accepted (recorded in the report), whether model code from the hub may run, and how many verification
    sentences to use (``None``: the whole set)."""

    thresholds: dict[str, float] | None = None
    accept_degraded: bool = False
    trust_remote_code: bool = False
    verification_limit: int | None = None

    def threshold(self, precision: str) -> float:
        """The gate threshold for ``precision``: the override if given, else the precision's default."""
        if self.thresholds and precision in self.thresholds:
            return float(self.thresholds[precision])
        return get(precision).gate_threshold

    def p1_floor(self, precision: str) -> float | None:
        """The gate's 1st-percentile floor for ``precision`` (None: not gated on p1): override, else default."""
        key = f"{precision}:{P1}"
        if self.thresholds and key in self.thresholds:
            return float(self.thresholds[key])
        return get(precision).gate_p1

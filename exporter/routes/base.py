"""What every route receives and returns. A route is one function ``build(job, work) -> RouteResult`` that
writes its model files into ``work`` (the artefact's temporary directory); the artefact writer does the rest
(tokenizer, gate, report, atomic publish), so publishing is not repeated per route."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..export import EncoderSpec
from ..plan import Plan


@dataclass(frozen=True)
class BuildJob:
    """The inputs of one route build."""

    plan: Plan
    spec: EncoderSpec
    trust_remote_code: bool = False


@dataclass
class RouteResult:
    """What a route wrote and measured: model files (relative paths), the size of the fp32 equivalent it is
    compared with, recipe details for the report, and seconds per step."""

    files: list[str]
    fp32_bytes: int
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the wall time of a step under ``timings[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round(time.perf_counter() - start, 3)


RouteBuilder = Callable[[BuildJob, Path], RouteResult]

"""What a precision is (:class:`Precision`) and what its build receives and returns.

A precision's build is one function ``build(job, work) -> RouteResult`` that writes its model files into ``work``
(the artefact's temporary directory); the artefact writer does the rest (tokenizer, gate, report, atomic
publish), so publishing is not repeated per precision.

This module and the precision modules import no heavy library at import time (the CLI reads the registry before
it decides whether torch or ONNX Runtime is needed): a build function imports what it uses when it runs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, NamedTuple, get_args

if TYPE_CHECKING:
    from ..devices import Device
    from ..export import EncoderSpec
    from ..plan import Plan

Runtime = Literal["onnx", "torch"]
RUNTIME_KINDS: tuple[str, ...] = get_args(Runtime)


@dataclass(frozen=True)
class BuildJob:
    """The inputs of one build."""

    plan: Plan
    spec: EncoderSpec
    trust_remote_code: bool = False


@dataclass
class RouteResult:
    """What a build wrote and measured: model files (relative paths), the size of the fp32 equivalent it is
    compared with, recipe details for the report, and seconds per step."""

    files: list[str]
    fp32_bytes: int
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    runtime: Runtime | None = None  # set when the build took another runtime than the plan's (torch fallback)
    route: str | None = None  # likewise the route actually built

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the wall time of a step under ``timings[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round(time.perf_counter() - start, 3)


RouteBuilder = Callable[[BuildJob, Path], RouteResult]
SupportCheck = Callable[["Device"], "str | None"]


class GuideRow(NamedTuple):
    """The precision guide's promise for a precision, printed next to what the benchmarks measure."""

    memory: str
    speed: str
    loss: str


@dataclass(frozen=True)
class Precision:
    """Everything the exporter knows about one precision; one instance per module of this package.

    ``supported_on(device)`` returns ``None`` when ``device`` can serve this precision with this toolchain, else
    the reason it cannot (quoted by the plan's fallback line and WARNING). ``build(job, work)`` writes the
    artefact's model files (see the module docstring).
    """

    name: str  # the user-facing value: EMB_PROVIDER_MODEL_PRECISION, --precision, report.json "precision"
    route: str  # how it is built and run, recorded in plans and reports (e.g. "onnx-int8-dynamic")
    runtime: Runtime  # "onnx": ONNX Runtime graph; "torch": safetensors + torch loader in a python-backend model
    description: str  # the route in one line
    guide: GuideRow
    gate_threshold: float  # default quality gate vs the fp32 reference (``--min-cosine P=V`` overrides it)
    spearman_tolerance: float  # STS-B Spearman this precision may lose against the fp32 reference (eval)
    build: RouteBuilder = field(repr=False, compare=False)
    supported_on: SupportCheck = field(repr=False, compare=False)
    gate_statistic: str = "min_cosine"  # which statistic of the per-sentence cosines the gate compares
    # a second floor, on the 1st percentile of the cosines: for a precision gated on the mean, which alone would
    # pass a build whose worst 1% of inputs fell apart (``--min-cosine P:p1=V`` overrides it)
    gate_p1: float | None = None
    quantization_scheme: str | None = None  # the plan's ``quantization.scheme``
    quantization_method: bool = False  # a value of EMB_PROVIDER_QUANTIZATION_METHOD
    native_dtypes: tuple[str, ...] = ()  # config.json ``torch_dtype`` values that make ``auto`` pick it
    cpu_int8_kernels: bool = False  # its CPU speed and numerics depend on the CPU's int8 GEMM (plan --why lists them)
    torch_route: tuple[str, RouteBuilder] | None = field(default=None, repr=False, compare=False)
    """(route, build) serving this ONNX-runtime precision through the torch runtime instead, with the same contract:
    for models the ONNX route must not take (remote code: chosen by the plan) and for models ``torch.onnx.export``
    cannot express (chosen by the artefact writer when the export fails); ``None``: no such route (the plan falls
    back to fp32, the writer refuses)."""

    @property
    def torch_equivalent(self) -> tuple[str, RouteBuilder] | None:
        """(route, build) running this precision in the torch runtime: its own route for a torch precision, else
        :attr:`torch_route` (None: ONNX only)."""
        return (self.route, self.build) if self.runtime == "torch" else self.torch_route

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_KINDS:
            raise ValueError(f"precision {self.name}: runtime {self.runtime!r} is not one of {RUNTIME_KINDS}")
        if not 0 < self.gate_threshold <= 1:
            raise ValueError(f"precision {self.name}: gate threshold {self.gate_threshold} is not in (0, 1]")
        if self.gate_p1 is not None and not 0 < self.gate_p1 <= 1:
            raise ValueError(f"precision {self.name}: gate p1 floor {self.gate_p1} is not in (0, 1]")
        if self.quantization_method and not self.quantization_scheme:
            raise ValueError(f"precision {self.name}: a quantization method needs its quantization scheme")


def not_on(device: Device, precision: str) -> str:
    """The reason for a precision a target lacks when no more specific cause is known."""
    return f"target {device.label} has no {precision}"


def everywhere(device: Device) -> str | None:
    """``supported_on`` of a precision every target serves."""
    return None

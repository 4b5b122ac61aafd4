"""Which CPU a figure came from, and what that means for int8.

ONNX Runtime picks its int8 GEMM kernel (MLAS) by CPUID at run time, with no switch to force one. Both the
numerics and the speed of an int8 artefact therefore depend on the CPU it runs on: the same model is about twice
as fast as fp32 on a VNNI CPU and barely faster on an AVX2-only one. So every report names the CPU model and its
int8 features, and ``INT8_KERNELS`` (what ``exporter plan --why`` prints; measured in docs/quality.md) says in one
line what to expect on each kind of CPU.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Any, Iterable, Literal

Int8Kind = Literal["amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64_i8mm", "arm64_dotprod", "arm64",
                   "other"]

# Names as Linux spells them in /proc/cpuinfo: x86 'flags' and ARM 'Features'.
X86_INT8_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
ARM_INT8_FEATURES = ("asimddp", "i8mm")
ARM_MACHINES = ("aarch64", "arm64")

_VNNI = ("VNNI vpdpbusd, exact; int8 served ~2x sentence-transformers fp32 (measured 1.75-2.26x, median 2.0x, "
         "on a 2-core AVX-512 VNNI EPYC)")
_NO_VNNI = ("vpmaddubsw, 16-bit pair sums; our int8 graphs keep every pair within int16 so results are exact, but "
            "the GEMMs gain little: expect ~1.1-1.3x fp32 in-process (measured 1.19-1.32x on an AVX2-only EPYC)")
_ARM = "SDOT/UDOT or I8MM (or NEON widening), exact int32 sums; speed not measured here"

# Best first, as ``exporter plan --why`` lists them.
INT8_KERNELS: dict[Int8Kind, str] = {
    "amx": ("AMX tdpbusd, exact int32 sums; int8 in-process 2.6x sentence-transformers fp32 at 2 threads, 1.55x at "
            "16 (measured on a Xeon with AMX)"),
    "avx512_vnni": _VNNI,
    "avx_vnni": _VNNI,
    "avx512": _NO_VNNI,
    "avx2": _NO_VNNI,
    "arm64_i8mm": _ARM,
    "arm64_dotprod": _ARM,
    "arm64": _ARM,
    "other": "no int8 kernel identified for this CPU; speed not measured here",
}


def int8_expectation(kind: Int8Kind) -> str:
    """One line: which int8 GEMM ONNX Runtime runs on ``kind`` and what int8 speed to expect vs fp32."""
    return INT8_KERNELS[kind]


def int8_summary(features: Iterable[str], kind: Int8Kind) -> str:
    """``int8: avx2 avx512f avx512bw -> avx512``: the features and the kind they give, as reports print them."""
    return f"int8: {' '.join(features) or 'none'} -> {kind}"


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as far as int8 inference cares: its name, architecture, logical cores and int8 features."""

    model: str
    machine: str
    cores: int
    int8_features: tuple[str, ...]
    int8_kind: Int8Kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (features as a list, so the dict survives a JSON round trip unchanged)."""
        return {"model": self.model, "machine": self.machine, "cores": self.cores,
                "int8_features": list(self.int8_features), "int8_kind": self.int8_kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CpuInfo":
        """The inverse of :meth:`to_dict` (reports store the CPU as JSON)."""
        return cls(**{**data, "int8_features": tuple(data["int8_features"])})

    def describe(self) -> str:
        """One line for logs and report headers, e.g. ``AMD EPYC (x86_64, 2 cores; int8: avx2 ... -> avx2)``."""
        int8 = int8_summary(self.int8_features, self.int8_kind)
        return f"{self.model} ({self.machine}, {self.cores} cores; {int8})"


# The feature each kind needs, best first. "avx512" needs avx512bw, not just avx512f: MLAS's AVX-512 int8 kernel
# uses byte/word instructions, so a CPU with avx512f alone runs the AVX2 kernel.
_KIND_NEEDS: tuple[tuple[Int8Kind, str], ...] = (
    ("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"), ("avx512", "avx512bw"),
    ("avx2", "avx2"), ("arm64_i8mm", "i8mm"), ("arm64_dotprod", "asimddp"))


def _kind(features: tuple[str, ...], machine: str) -> Int8Kind:
    """The best int8 kernel family the features allow; a plain ARM64 CPU still has NEON widening kernels."""
    for kind, needs in _KIND_NEEDS:
        if needs in features:
            return kind
    return "arm64" if machine.lower() in ARM_MACHINES else "other"


def _fields(cpuinfo_text: str) -> tuple[dict[str, str], int]:
    """The first processor's ``key : value`` fields, and how many processors the text lists."""
    fields: dict[str, str] = {}
    processors = 0
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "processor":
            processors += 1
        fields.setdefault(key, value.strip())
    return fields, processors


def _model_name(fields: dict[str, str]) -> str:
    """x86 and some ARM kernels give 'model name'; most ARM servers give only implementer and part codes
    (e.g. Graviton3: 0x41/0xd40), which still identify the core."""
    if fields.get("model name"):
        return fields["model name"]
    if "CPU implementer" in fields and "CPU part" in fields:
        return f"ARM implementer {fields['CPU implementer']} part {fields['CPU part']}"
    return platform.processor() or "unknown"


def cpu_info(cpuinfo_text: str | None = None, machine: str | None = None) -> CpuInfo:
    """Parse /proc/cpuinfo text; None means this host's (read once, then cached). ``machine`` is the architecture
    the text came from (default ``platform.machine()``); it only tells ARM from other CPUs when no int8 feature is
    listed. Empty text (unreadable /proc/cpuinfo: macOS, a sandbox) gives the model from ``platform.processor()``
    and no features."""
    if cpuinfo_text is None:
        return _host_cpu_info()
    machine = machine or platform.machine()
    fields, processors = _fields(cpuinfo_text)
    flags = set(f"{fields.get('flags', '')} {fields.get('Features', '')}".split())
    features = tuple(f for f in X86_INT8_FEATURES + ARM_INT8_FEATURES if f in flags)
    return CpuInfo(model=_model_name(fields), machine=machine, cores=processors or os.cpu_count() or 1,
                   int8_features=features, int8_kind=_kind(features, machine))


@functools.cache
def _host_cpu_info() -> CpuInfo:
    """This host's CPU; cached because it cannot change while the process runs."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        text = ""
    return cpu_info(text)

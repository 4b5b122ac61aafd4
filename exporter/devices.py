"""Serving targets: parsing, host detection, and what each can run.

The target is usually *not* this host (building on a CPU box for a GPU server is the normal case), so a target is
parsed from ``EMB_PROVIDER_DEVICE`` / ``--device`` (``cpu``, ``cuda``, ``cuda:8.0``, ``rocm``) and detected from the
host only for ``auto``. Detection never requires a GPU library: it asks ``nvidia-smi`` / ``rocm-smi`` if present,
then torch if importable, and falls back to CPU.

Which precisions a target runs is declared by each precision (``supported_on`` in :mod:`exporter.precisions`,
the precision guide's capability table plus this toolchain's extras, with the specific reason where a target
lacks one); :attr:`Device.supported` and :meth:`Device.lacks` ask the registry.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

from .errors import ConfigError
from .precisions import PRECISIONS
from .precisions.base import not_on

log = logging.getLogger(__name__)

DEVICE_FORMS = "auto, cpu, cuda, cuda:<major>.<minor> (e.g. cuda:8.0), rocm"
_DEFAULT_CUDA_CAPABILITY = (8, 0)  # plain "cuda" means a current (Ampere+) NVIDIA GPU


@dataclass(frozen=True)
class Device:
    """A serving target: kind (cpu/cuda/rocm), NVIDIA compute capability, and a human name."""

    kind: str
    capability: tuple[int, int] | None = None
    name: str = ""

    @property
    def label(self) -> str:
        """Canonical spelling, e.g. ``cuda:8.0``; parse_device(label) round-trips."""
        if self.kind == "cuda" and self.capability:
            return f"cuda:{self.capability[0]}.{self.capability[1]}"
        return self.kind

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "rocm")

    @property
    def cuda_capability(self) -> tuple[int, int] | None:
        """The NVIDIA compute capability (plain ``cuda`` means a current, Ampere+ GPU); None for other kinds."""
        return (self.capability or _DEFAULT_CUDA_CAPABILITY) if self.kind == "cuda" else None

    @property
    def supported(self) -> tuple[str, ...]:
        """Precisions this target can serve with this toolchain, best first (each precision's ``supported_on``)."""
        return tuple(name for name, p in PRECISIONS.items() if p.supported_on(self) is None)

    def lacks(self, precision: str) -> str:
        """Why this target cannot serve ``precision`` (the specific cause where one is known), for plan fallbacks."""
        known = PRECISIONS.get(precision)
        return (known.supported_on(self) if known else None) or not_on(self, precision)

    @property
    def recommended(self) -> str:
        """The device step's choice and every fallback's destination: fp16 on GPUs, fp32 on CPU."""
        return "fp16" if self.is_gpu else "fp32"

    def describe(self) -> str:
        """One line for logs: name, capability and supported precisions."""
        name = f" ({self.name})" if self.name else ""
        return f"{self.label}{name}: supports {', '.join(self.supported)}; recommended {self.recommended}"


_CUDA_RE = re.compile(r"^cuda(?::(\d+)\.(\d+))?$")


def parse_device(value: str, *, source: str = "--device") -> Device:
    """Parse an explicit target spelling; ``auto`` is handled by :func:`resolve_device`."""
    text = value.strip().lower()
    if text == "cpu":
        return Device("cpu", name="CPU")
    if text == "rocm":
        return Device("rocm", name="AMD ROCm GPU")
    match = _CUDA_RE.match(text)
    if match:
        if match.group(1) is None:
            return Device("cuda", _DEFAULT_CUDA_CAPABILITY, "NVIDIA GPU (assumed Ampere+)")
        capability = (int(match.group(1)), int(match.group(2)))
        if not 3 <= capability[0] <= 20:
            raise ConfigError(f"{source}={value!r}: compute capability {capability[0]}.{capability[1]} is not a "
                              "real NVIDIA capability (expected e.g. 6.1, 7.5, 8.0, 9.0)")
        return Device("cuda", capability, f"NVIDIA GPU sm_{capability[0]}{capability[1]}")
    raise ConfigError(f"{source}={value!r} is not a device; allowed: {DEVICE_FORMS}")


def resolve_device(setting: str) -> Device:
    """The serving target for a config/CLI setting: explicit spelling, or this host for ``auto``."""
    return detect_host() if setting.strip().lower() == "auto" else parse_device(setting)


def detect_host() -> Device:
    """This machine's best accelerator, without importing GPU libraries unless they are installed."""
    for probe in (_nvidia_smi, _torch_cuda, _rocm_smi):
        device = probe()
        if device is not None:
            log.debug("detected host device: %s", device.describe())
            return device
    log.debug("no GPU detected; host device is CPU")
    return Device("cpu", name="CPU")


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _nvidia_smi() -> Device | None:
    out = _run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if not out:
        return None
    name, _, cap = out.splitlines()[0].rpartition(",")
    major, _, minor = cap.strip().partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return Device("cuda", (int(major), int(minor)), name.strip())


def _torch_cuda() -> Device | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    if getattr(torch.version, "hip", None):
        return Device("rocm", name=torch.cuda.get_device_name(0))
    return Device("cuda", tuple(torch.cuda.get_device_capability(0)), torch.cuda.get_device_name(0))


def _rocm_smi() -> Device | None:
    out = _run(["rocm-smi", "--showproductname"])
    return Device("rocm", name="AMD ROCm GPU") if out else None

"""What the numbers were measured on: CPU and its int8 features, cores, RAM, load, library versions; and
resident-memory probes.

The load average is recorded at the start and the end of a run because on a shared machine it explains more
of the spread than anything else.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import shutil
import subprocess
from typing import Any, Iterable

import psutil

from exporter import versions
from exporter.cpu import cpu_info

MIB = 1024 * 1024


def machine() -> dict[str, Any]:
    """Host facts for the report header. The int8 features say which int8 kernel ONNX Runtime ran (see
    exporter.cpu): without them an int8 figure cannot be compared with one from another CPU."""
    cpu = cpu_info()
    return {
        "host": platform.node(),
        "cpu": cpu.model,
        "int8_features": list(cpu.int8_features),
        "int8_kind": cpu.int8_kind,
        "cores": cpu.cores,
        "ram_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "libraries": versions(),
        "gpus": gpu_info(),
    }


GPU_QUERY = "name,memory.total,driver_version"


def parse_gpu_query(csv: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits`` lines as records."""
    gpus = []
    for line in csv.strip().splitlines():
        name, memory, driver = (field.strip() for field in line.rsplit(",", 2))
        gpus.append({"name": name, "memory_mib": int(float(memory)), "driver": driver})
    return gpus


def gpu_info() -> list[dict[str, Any]]:
    """The host's NVIDIA GPUs ([] without nvidia-smi or a GPU): a GPU figure is meaningless without the card."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_query(out.stdout) if out.returncode == 0 else []


@functools.cache
def _nvml_gpu0() -> Any:
    """NVML initialised once per process and GPU 0's handle, or None without a GPU / driver / pynvml (the memory
    samplers read it every quarter second)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no GPU, no driver, or no pynvml: the figure is simply not available
        return None


def nvml_used_mib() -> float | None:
    """Memory in use on GPU 0 (NVML), or None without a GPU / pynvml. Device-wide, so a process's figure is a
    difference taken while it is the only one working on the card (processes in a container are not listed)."""
    handle = _nvml_gpu0()
    if handle is None:
        return None
    import pynvml

    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
    except pynvml.NVMLError:
        return None


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def self_rss_mb() -> float:
    """This process's resident set size now."""
    return psutil.Process().memory_info().rss / MIB


def self_peak_rss_mb() -> float:
    """This process's peak resident set size so far: VmHWM of /proc/self/status. Not ``ru_maxrss``, which Linux
    carries over from the parent across fork+exec and so reports the (large) benchmark parent's size."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line: peak RSS needs Linux")


def tree_rss_mb(pid: int) -> dict[str, float]:
    """RSS of a process and all its descendants, keyed by ``"<pid> <cmdline>"`` (processes that vanish skipped)."""
    try:
        root = psutil.Process(pid)
        processes: Iterable[psutil.Process] = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for proc in processes:
        try:
            found[f"{proc.pid} {' '.join(proc.cmdline())}"] = proc.memory_info().rss / MIB
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found

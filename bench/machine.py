"""What the numbers were measured on: CPU and its int8 features, cores, RAM, load, library versions; and
resident-memory probes.

The load average is recorded at the start and the end of a run because on a shared machine it explains more
of the spread than anything else.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
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
    }


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

"""The one timing loop of the benchmark, shared by the in-process and the served runs, and its statistics.

A measurement is: warm-up requests (not timed, one at a time), then ``repeats`` windows of about ``window_s``
seconds each, in which ``concurrency`` threads send one batch per request, cycling over the workload's batches.
Windows are
time-bounded rather than count-bounded so a slow precision (int4 on CPU) cannot stretch the run without bound
while a fast one still gets many requests. Throughput is reported per window (median, min, max and the relative
spread), latency per request pooled over all windows (p50/p95/p99).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

Call = Callable[[list[str]], Any]
"""Embeds one batch of texts (one request); what it returns is ignored."""


@dataclass(frozen=True)
class Batches:
    """A workload cut into request-sized batches, with the number of tokens the model sees in each."""

    name: str
    texts: tuple[tuple[str, ...], ...]
    tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.texts or len(self.texts) != len(self.tokens):
            raise ValueError(f"workload {self.name!r}: {len(self.texts)} batches but {len(self.tokens)} token "
                             "counts; need at least one batch and one count per batch")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "texts": [list(b) for b in self.texts], "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Batches":
        return cls(data["name"], tuple(tuple(b) for b in data["texts"]), tuple(data["tokens"]))


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    repeats: int = 3
    window_s: float = 3.0
    warmup_requests: int = 2

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.window_s <= 0 or self.warmup_requests < 0:
            raise ValueError(f"repeats={self.repeats} (>= 1), window_s={self.window_s} (> 0) and "
                             f"warmup_requests={self.warmup_requests} (>= 0) are out of range")


@dataclass
class Window:
    """What one timed window did."""

    seconds: float = 0.0
    texts: int = 0
    tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    median = float(np.median(arr))
    return {"median": median, "min": float(arr.min()), "max": float(arr.max()),
            "spread": float((arr.max() - arr.min()) / median) if median > 0 else 0.0}


def summarize(windows: Sequence[Window]) -> dict[str, Any]:
    """Throughput per window (median/min/max/spread) and pooled per-request latency percentiles in ms."""
    latencies = np.asarray([x for w in windows for x in w.latencies_s], dtype=float) * 1000.0
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "texts_per_s": _spread([w.texts / w.seconds for w in windows]),
        "tokens_per_s": _spread([w.tokens / w.seconds for w in windows]),
        "latency_ms": {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(latencies.mean())},
        "requests": int(latencies.size),
        "windows": len(windows),
        "seconds": float(sum(w.seconds for w in windows)),
    }


def _run_window(calls: Sequence[Call], batches: Batches, order: itertools.count, lock: threading.Lock,
                window_s: float | None, one_each: bool) -> Window:
    """Run ``len(calls)`` threads until the deadline (or one request each when ``one_each``)."""
    window = Window()
    errors: list[BaseException] = []

    def worker(call: Call) -> None:
        while not errors:
            with lock:
                index = next(order) % len(batches.texts)
            batch = list(batches.texts[index])
            start = time.perf_counter()
            try:
                call(batch)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                return
            elapsed = time.perf_counter() - start
            with lock:
                window.latencies_s.append(elapsed)
                window.texts += len(batch)
                window.tokens += batches.tokens[index]
            if one_each or time.perf_counter() >= deadline:
                return

    start = time.perf_counter()
    deadline = start + (window_s or 0.0)
    threads = [threading.Thread(target=worker, args=(call,), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    window.seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return window


def measure(calls: Sequence[Call], batches: Batches, settings: Settings,
            on_window: Callable[[], None] | None = None) -> dict[str, Any]:
    """Warm up, then time ``settings.repeats`` windows; one thread per element of ``calls`` (the concurrency).

    Each thread gets its own callable so a served run can give every thread its own client connection.
    """
    order, lock = itertools.count(), threading.Lock()
    for _ in range(settings.warmup_requests):  # one thread: a round of 16 concurrent requests would cost minutes
        _run_window(calls[:1], batches, order, lock, None, one_each=True)
    windows = []
    for _ in range(settings.repeats):
        windows.append(_run_window(calls, batches, order, lock, settings.window_s, one_each=False))
        if on_window is not None:
            on_window()
    return {"workload": batches.name, "concurrency": len(calls), **summarize(windows)}

"""Served runs: one real local Triton per repository (``exporter.serve.TritonServer``), driven through the
project's client (``client.EmbeddingClient``), one client per concurrent thread, one batch per request.

The server's resident memory is sampled over its whole process group (tritonserver + python-backend stubs) while
it serves, so the figure includes the tokenizer model and the ONNX Runtime / torch stub that a deployment pays; on
a GPU host, the card's memory in use above what it held before the server started. :func:`measure_server` is the
loop the peers (bench/peers.py) go through too.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.machine import nvml_used_mib, tree_rss_mb
from bench.measure import Batches, Call, Settings, measure

log = logging.getLogger("exporter.bench.served")

REQUEST_TIMEOUT_S = 600.0  # int4 on CPU at concurrency 16 queues minutes of work: slow is a figure, not an error


class MemorySampler:
    """What a server holds while it serves, sampled every ``interval_s`` in a background thread: the summed RSS
    of its process tree, and the GPU's memory in use above ``gpu_before_mib`` (the card's figure read before the
    server started; the server is the only one on the card in these runs, and a container lists no GPU
    processes, so a device-wide difference is the figure that works everywhere). The idle RSS is taken at start,
    the peaks since the last :meth:`take_peak` (one per served run)."""

    def __init__(self, pid: int, gpu_before_mib: float | None, interval_s: float = 0.25):
        self.pid, self.interval_s, self.gpu_before_mib = pid, interval_s, gpu_before_mib
        self.idle_mb = self._rss()
        self._peak_mb, self._peak_gpu = self.idle_mb, self._gpu()
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return sum(tree_rss_mb(self.pid).values())

    def _gpu(self) -> float | None:
        used = nvml_used_mib() if self.gpu_before_mib is not None else None
        return None if used is None else used - self.gpu_before_mib

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        rss, gpu = self._rss(), self._gpu()
        with self._lock:  # take_peak's reset must not be overwritten by a sample taken before it
            self._peak_mb = max(self._peak_mb, rss)
            if gpu is not None:
                self._peak_gpu = max(self._peak_gpu or 0.0, gpu)

    def take_peak(self) -> dict[str, float | None]:
        """The peaks since the previous call (or the start), including a sample taken now, as report fields."""
        self._sample()
        with self._lock:
            peaks = {"server_rss_mb": self._peak_mb, "server_idle_rss_mb": self.idle_mb,
                     "server_gpu_mib": self._peak_gpu}
            self._peak_mb, self._peak_gpu = 0.0, None
        return peaks

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


MakeCalls = Callable[[int, int, ExitStack], list[Call]]
"""``(concurrency, batch_size, stack) -> one call per thread``, each with its own connection, closed by ``stack``."""


def measure_server(pid: int, gpu_before_mib: float | None, make_calls: MakeCalls, runs: list[tuple[Batches, int]],
                   settings: Settings, label: str, on_window: Callable[[], None]) -> list[dict[str, Any]]:
    """Every ``(workload, concurrency)`` against a running server (process ``pid``), with its memory: the one
    served loop for Triton and for the peers, so their figures mean the same."""
    results = []
    with MemorySampler(pid, gpu_before_mib) as memory:
        for batches, concurrency in runs:
            batch_size = max(len(b) for b in batches.texts)
            with ExitStack() as stack:
                result = measure(make_calls(concurrency, batch_size, stack), batches, settings, on_window)
            results.append({"runner": label, **result, **memory.take_peak()})
    return results


def serve_and_measure(repository: Path, model: str, runs: list[tuple[Batches, int]], settings: Settings,
                      label: str, on_window: Callable[[], None],
                      server_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Start Triton on ``repository``, measure ``model`` for every ``(workload, concurrency)``, stop it.
    ``server_options``: extra :class:`~exporter.serve.ServerSettings` fields (ports are always picked free)."""
    from client import EmbeddingClient, Timeouts
    from exporter.serve import ServerSettings, TritonServer

    timeouts = Timeouts(request=REQUEST_TIMEOUT_S)

    def make_calls(concurrency: int, batch_size: int, stack: ExitStack) -> list[Call]:
        return [stack.enter_context(EmbeddingClient(server.http_url, model=model, batch_size=batch_size,
                                                    max_concurrency=1, timeouts=timeouts)).embed
                for _ in range(concurrency)]

    gpu_before = nvml_used_mib()
    server = TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0,
                                         **(server_options or {})))
    with server:
        return measure_server(server.process.pid, gpu_before, make_calls, runs, settings, label, on_window)

"""Served runs: one real local Triton per repository (``exporter.serve.TritonServer``), driven through the
project's client (``client.EmbeddingClient``), one client per concurrent thread, one batch per request.

The server's resident memory is sampled over its whole process group (tritonserver + python-backend stubs) while
it serves, so the figure includes the tokenizer model and the ONNX Runtime / torch stub that a deployment pays.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.machine import tree_rss_mb
from bench.measure import Batches, Settings, measure

log = logging.getLogger("exporter.bench.served")

REQUEST_TIMEOUT_S = 600.0  # int4 on CPU at concurrency 16 queues minutes of work: slow is a figure, not an error


class RssSampler:
    """Summed RSS of a process tree, sampled every ``interval_s`` in a background thread: the idle figure at
    start, and the peak since the last :meth:`take_peak` (one per served run)."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        self.pid, self.interval_s = pid, interval_s
        self.idle_mb = self._total()
        self._peak_mb = self.idle_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> float:
        return sum(tree_rss_mb(self.pid).values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_mb = max(self._peak_mb, self._total())

    def take_peak(self) -> float:
        """The peak since the previous call (or the start), including a sample taken now."""
        peak, self._peak_mb = max(self._peak_mb, self._total()), 0.0
        return peak

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def serve_and_measure(repository: Path, model: str, runs: list[tuple[Batches, int]], settings: Settings,
                      label: str, on_window: Callable[[], None],
                      server_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Start Triton on ``repository``, measure ``model`` for every ``(workload, concurrency)``, stop it.
    ``server_options``: extra :class:`~exporter.serve.ServerSettings` fields (ports are always picked free)."""
    from client import EmbeddingClient, Timeouts
    from exporter.serve import ServerSettings, TritonServer

    timeouts = Timeouts(request=REQUEST_TIMEOUT_S)
    results = []
    server = TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0,
                                         **(server_options or {})))
    with server, RssSampler(server.process.pid) as rss:
        for batches, concurrency in runs:
            batch_size = max(len(b) for b in batches.texts)
            with ExitStack() as stack:
                clients = [stack.enter_context(EmbeddingClient(server.http_url, model=model, batch_size=batch_size,
                                                               max_concurrency=1, timeouts=timeouts))
                           for _ in range(concurrency)]
                result = measure([c.embed for c in clients], batches, settings, on_window)
            results.append({"runner": label, **result, "server_rss_mb": rss.take_peak(),
                            "server_idle_rss_mb": rss.idle_mb})
    return results

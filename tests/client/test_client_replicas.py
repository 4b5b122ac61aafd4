"""Several replicas, no request lost: two real Triton servers, clients under load, one replica SIGKILLed mid-load and
restarted (the scale-out issue's acceptance test)."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from client import AsyncEmbeddingClient, EmbeddingClient, Retry
from exporter.serve import ServerSettings, TritonServer

CLIENTS, REQUESTS = 4, 200
KILL_AFTER = 150  # requests completed (all clients together) before replica B is killed
TEXTS = [f"replica test sentence number {i} about {topic}" for i, topic in
         enumerate(["cats", "the weather", "databases", "music", "rivers", "trains", "tea", "chess"] * 4)]


def _successes(server: TritonServer, model: str) -> float:
    """Triton's own count of successful requests of ``model`` (its Prometheus endpoint)."""
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    pattern = rf'^nv_inference_request_success{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


@pytest.fixture
def two_replicas(fp32_repository):
    servers = [TritonServer(ServerSettings(fp32_repository, http_port=0, grpc_port=0, metrics_port=0))
               for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def test_a_killed_replica_loses_no_request_and_traffic_returns_after_restart(two_replicas, served_models):
    a, b = two_replicas
    model = served_models["fp32"]
    urls = [a.http_url, b.http_url]
    with EmbeddingClient(a.http_url, model=model) as reference_client:
        reference = reference_client.embed(TEXTS)
    done, lock = [0], threading.Lock()
    lost: list[str] = []
    mismatched: list[int] = []
    latencies: list[tuple[float, float]] = []  # (finish time, seconds)
    killed_at: list[float] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with EmbeddingClient(urls, model=model, retry=Retry(attempts=4, backoff=0.05)) as client:
            for _ in range(REQUESTS):
                rows = rng.choice(len(TEXTS), size=int(rng.integers(1, 5)), replace=False)
                start = time.monotonic()
                try:
                    vectors = client.embed([TEXTS[i] for i in rows])
                except Exception as exc:  # noqa: BLE001 - every failure is a lost request here
                    lost.append(repr(exc))
                    continue
                finish = time.monotonic()
                if not np.allclose(vectors, reference[rows], atol=1e-5):
                    mismatched.append(int(rows[0]))
                with lock:
                    latencies.append((finish, finish - start))
                    done[0] += 1
                    if done[0] == KILL_AFTER:
                        killed_at.append(finish)
                        b.stop(signal.SIGKILL)  # the whole process group, without warning

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert killed_at, "the kill never happened"
    assert lost == [] and mismatched == []
    assert done[0] == CLIENTS * REQUESTS
    before = sorted(s for t, s in latencies if t < killed_at[0])
    after = sorted(s for t, s in latencies if t >= killed_at[0])
    # bounded extra latency: a request that hit the dead replica moved to the live one at once (no request
    # timeout, no backoff); 2 s is far above a failover (milliseconds) and far below the 60 s request timeout
    assert max(after) < max(before) + 2.0, (max(before), max(after))

    b.start()  # same ports: the clients' URLs are valid again
    served_by_b = _successes(b, model)
    with EmbeddingClient(urls, model=model) as client:
        deadline = time.monotonic() + 60  # longer than the longest cooldown (30 s) a probe can be waiting out
        while _successes(b, model) <= served_by_b and time.monotonic() < deadline:
            assert np.allclose(client.embed(TEXTS[:2]), reference[:2], atol=1e-5)
        assert _successes(b, model) > served_by_b, "traffic never returned to the restarted replica"
        assert client._replicas.states() == {a.http_url: True, b.http_url: True}


async def test_async_client_fails_over_to_the_live_replica(two_replicas, served_models):
    a, b = two_replicas
    model = served_models["fp32"]
    b.stop(signal.SIGKILL)
    async with AsyncEmbeddingClient([b.http_url, a.http_url], model=model, retry=Retry(attempts=1)) as client:
        vectors = [await client.embed(TEXTS[:3]) for _ in range(4)]  # the first request hits b first
        assert await client.is_ready()
    with EmbeddingClient(a.http_url, model=model) as direct:
        expected = direct.embed(TEXTS[:3])
    for got in vectors:
        assert np.allclose(got, expected, atol=1e-5)

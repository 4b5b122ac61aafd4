"""The client against a real Triton (tests/conftest.py fixtures: the bundled all-MiniLM-L6-v2 built by the exporter,
served by the tritonserver binary): order, batching, concurrency, threads, the async twin, errors and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from client import AsyncEmbeddingClient, EmbeddingClient, InvalidInput, ModelNotFound, Retry, ServerUnavailable

pytestmark = pytest.mark.slow

STSB = Path(__file__).resolve().parents[3] / "shared" / "data" / "stsb" / "sts-dev.csv"
# Batching pads each request to its longest text, so a text's vector may move in the last float32 bits.
ATOL = 1e-5


def sentences(n: int) -> list[str]:
    """``n`` distinct STS-B dev sentences (tab-separated file, sentences in columns 6-7; see SOURCE.md)."""
    seen: dict[str, None] = {}
    for line in STSB.read_text(encoding="utf-8").splitlines():
        seen.update(dict.fromkeys(line.split("\t")[5:7]))
        if len(seen) >= n:
            break
    return list(seen)[:n]


@pytest.fixture(scope="module")
def fp32(served_model) -> str:
    return served_model("fp32")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sentences(1000)


@pytest.fixture(scope="module")
def client(triton_server, fp32):
    with EmbeddingClient(triton_server.http_url, model=fp32, batch_size=16, max_concurrency=4) as c:
        yield c


@pytest.fixture(scope="module")
def vectors(client, texts) -> np.ndarray:
    """1,000 texts in one call: 63 requests of <= 16 texts, 4 in flight."""
    return client.embed(texts)


def request_counts(triton_http, model: str) -> tuple[int, int]:
    """(requests the model's tokenizer executed, requests the ensemble completed), from Triton's own statistics.

    The tokenizer sees every request that reaches the server, also those it rejects with a 400 (the python backend
    counts an error response as an executed request)."""
    tokenizer = triton_http.get_inference_statistics(f"{model}_tokenizer")["model_stats"][0]["inference_stats"]
    ensemble = triton_http.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return tokenizer["success"]["count"] + tokenizer["fail"]["count"], ensemble["success"]["count"]


def settled_counts(triton_http, model: str, settle: float = 0.5, limit: float = 10.0) -> tuple[int, int]:
    """:func:`request_counts` once they stop changing: Triton records a request's statistics after its response
    is sent, so a read right after the client returns can miss the last (failed) request. A retry would only
    raise the counts, so waiting for them to settle cannot hide one."""
    deadline = time.monotonic() + limit
    counts = request_counts(triton_http, model)
    while time.monotonic() < deadline:
        time.sleep(settle)
        latest = request_counts(triton_http, model)
        if latest == counts:
            return counts
        counts = latest
    return counts


def test_thousand_texts_in_one_call_are_normalized_rows_in_input_order(vectors, texts, client):
    assert vectors.shape == (1000, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order: each row is that text's own vector (single-text calls), checked across batch boundaries.
    for i in (0, 1, 15, 16, 17, 500, 998, 999):
        np.testing.assert_allclose(client.embed(texts[i]), vectors[i], atol=ATOL)
    assert np.abs(vectors[:-1] - vectors[1:]).max() > 0.1  # distinct texts, distinct vectors: a swap would show


def test_other_batching_and_concurrency_give_the_same_rows(triton_server, fp32, texts, vectors):
    picked = texts[::-7][:150]  # reversed, strided: different batch neighbours than the 16-text run
    expected = vectors[::-7][:150]
    for batch_size, concurrency in [(1, 8), (7, 3), (64, 1)]:
        with EmbeddingClient(triton_server.http_url, model=fp32, batch_size=batch_size,
                             max_concurrency=concurrency) as c:
            np.testing.assert_allclose(c.embed(picked), expected, atol=ATOL)


def test_single_text_and_empty_list_shapes(client):
    assert client.embed("a single text").shape == (384,)
    empty = client.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_async_twin_gives_the_same_vectors(triton_server, fp32, texts, vectors):
    async def run():
        async with AsyncEmbeddingClient(triton_server.http_url, model=fp32, batch_size=16, max_concurrency=4) as c:
            together = await c.embed(texts[:300])
            one, empty = await c.embed(texts[7]), await c.embed([])
            concurrent = await asyncio.gather(*(c.embed(texts[k:k + 50]) for k in range(0, 300, 50)))
            return together, one, empty, concurrent, await c.models()

    together, one, empty, concurrent, models = asyncio.run(run())
    np.testing.assert_allclose(together, vectors[:300], atol=ATOL)
    np.testing.assert_allclose(one, vectors[7], atol=ATOL)
    assert empty.shape == (0, 384)
    np.testing.assert_allclose(np.concatenate(concurrent), vectors[:300], atol=ATOL)
    assert fp32 in [m.name for m in models]


def test_one_client_shared_by_threads(client, texts, vectors):
    def work(k: int) -> tuple[int, np.ndarray]:
        start = (k * 37) % 900
        return start, client.embed(texts[start:start + 40 + k])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    for start, got in results:
        np.testing.assert_allclose(got, vectors[start:start + len(got)], atol=ATOL)


def test_models_lists_each_served_model_with_dim_precision_and_route(client, built_repository):
    manifest = json.loads((built_repository / "manifest.json").read_text())["models"]
    listed = {m.name: m for m in client.models()}
    assert set(listed) == {m["name"] for m in manifest}  # tokenizer/encoder models are not listed
    for entry in manifest:
        info = listed[entry["name"]]
        assert (info.dim, info.precision, info.route) == (384, entry["precision"], entry["route"])
        assert info.source == "sentence-transformers/all-MiniLM-L6-v2" and info.max_batch_size > 0
        assert info.max_seq_length == 256


def test_unknown_or_ambiguous_model_raises_model_not_found_listing_models(triton_server, served_models):
    names = sorted(served_models.values())
    with EmbeddingClient(triton_server.http_url, model="no-such-model") as c, \
            pytest.raises(ModelNotFound, match="'no-such-model' is not served") as caught:
        c.embed("x")
    assert caught.value.available == names and all(n in str(caught.value) for n in names)
    with EmbeddingClient(triton_server.http_url, model=f"{names[0]}_tokenizer") as c, \
            pytest.raises(ModelNotFound, match="not an embedding model"):
        c.embed("x")
    if len(names) > 1:  # several served and none named: the client must not guess
        with EmbeddingClient(triton_server.http_url, model=None) as c, \
                pytest.raises(ModelNotFound, match="embedding models are served: pass model="):
            c.embed("x")


def test_readiness_is_per_named_model(triton_server, fp32):
    with EmbeddingClient(triton_server.http_url, model=fp32) as c:
        assert c.is_ready()
        c.wait_until_ready(timeout=5)
    with EmbeddingClient(triton_server.http_url, model="no-such-model") as c:
        assert not c.is_ready()
        with pytest.raises(ServerUnavailable, match="not ready after 1s .model 'no-such-model'."):
            c.wait_until_ready(timeout=1, interval=0.2)

    async def run() -> tuple[bool, bool]:
        async with AsyncEmbeddingClient(triton_server.http_url, model=fp32) as ready, \
                AsyncEmbeddingClient(triton_server.http_url, model="no-such-model") as missing:
            return await ready.is_ready(), await missing.is_ready()

    assert asyncio.run(run()) == (True, False)


def test_server_400_names_the_text_and_is_not_retried(triton_server, triton_http, fp32):
    too_long = "x" * (65536 + 1)  # over the tokenizer's max_text_bytes default
    batch = ["fine"] * 20 + [too_long] + ["fine"] * 3
    requests_before, completed_before = request_counts(triton_http, fp32)
    with EmbeddingClient(triton_server.http_url, model=fp32, batch_size=16, max_concurrency=1,
                         retry=Retry(attempts=5, backoff=0.01)) as c, pytest.raises(InvalidInput) as caught:
        c.embed(batch)
    requests_after, completed_after = settled_counts(triton_http, fp32)
    assert caught.value.index == 20  # TEXT[4] of the second request -> the caller's index
    assert "65537 bytes" in caught.value.server_message
    # First batch (16 fine texts) once, the bad second batch once: no retry; nothing after the failure.
    assert (requests_after - requests_before, completed_after - completed_before) == (2, 1)


def test_cli_embed_and_models_against_the_server(triton_server, fp32, tmp_path, vectors, texts):
    base = [sys.executable, "-m", "client", "--url", triton_server.http_url, "--model", fp32]
    out = tmp_path / "v.npy"
    run = subprocess.run([*base, "embed", texts[0], texts[1], "--npy", str(out)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(out), vectors[:2], atol=ATOL)
    run = subprocess.run([*base, "models", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and fp32 in [m["name"] for m in json.loads(run.stdout)]
    run = subprocess.run([*base[:-1], "missing", "embed", "x"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 4 and "served embedding models:" in run.stderr


class InFlightProxy:
    """A TCP relay in front of the real server that records the most requests in flight at once: a connection is
    busy from the client's first bytes until the server's first reply bytes (HTTP/1.1, no pipelining)."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.busy: set[int] = set()
        self.most = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(downstream, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        key = id(source if from_client else sink)
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self.lock:
                    if from_client:
                        self.busy.add(key)
                        self.most = max(self.most, len(self.busy))
                    else:
                        self.busy.discard(key)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_requests_in_flight_never_exceed_max_concurrency(triton_server, fp32, texts, vectors, twin):
    proxy = InFlightProxy(triton_server.http_url)
    options = {"model": fp32, "batch_size": 4, "max_concurrency": 3}
    try:
        if twin == "sync":
            with EmbeddingClient(proxy.url, **options) as c:
                got = c.embed(texts[:240])
        else:
            async def run() -> np.ndarray:
                async with AsyncEmbeddingClient(proxy.url, **options) as c:
                    return await c.embed(texts[:240])
            got = asyncio.run(run())
    finally:
        proxy.close()
    np.testing.assert_allclose(got, vectors[:240], atol=ATOL)
    assert 2 <= proxy.most <= 3  # 60 batches: concurrent, and never above the bound

"""Server down and back: the client fails fast with ServerUnavailable, then recovers on the same instance once the
server is restarted. Uses its own TritonServer over the fp32-only repository fixture (never stops the shared
server); with one model served, the client needs no model name."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from client import AsyncEmbeddingClient, EmbeddingClient, Retry, ServerUnavailable, Timeouts

pytestmark = pytest.mark.slow

TIMEOUTS = Timeouts(connect=1.0, request=5.0)
RETRY = Retry(attempts=3, backoff=0.1, max_backoff=0.5)
# Refused connections fail at once: the bound is the backoff (0.1 + 0.2, +50% jitter) plus slack for 2 cores.
DOWN_BOUND_S = 3.0


@pytest.fixture
def own_server(fp32_repository):
    from exporter.serve import ServerSettings, TritonServer

    server = TritonServer(ServerSettings(fp32_repository, http_port=0, grpc_port=0, metrics_port=0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_server_down_then_restarted_same_clients_recover(own_server, served_model):
    model = served_model("fp32")
    texts = ["the server goes away", "and comes back"]
    sync = EmbeddingClient(own_server.http_url, timeouts=TIMEOUTS, retry=RETRY)  # the only model: no name needed
    async_client = AsyncEmbeddingClient(own_server.http_url, timeouts=TIMEOUTS, retry=RETRY)
    loop = asyncio.new_event_loop()
    try:
        before = sync.embed(texts)
        assert sync.model_info().name == model
        np.testing.assert_allclose(loop.run_until_complete(async_client.embed(texts)), before, atol=1e-5)

        own_server.stop()
        for name, call in [("sync", lambda: sync.embed(texts)),
                           ("async", lambda: loop.run_until_complete(async_client.embed(texts)))]:
            start = time.monotonic()
            with pytest.raises(ServerUnavailable, match="cannot reach Triton"):
                call()
            assert time.monotonic() - start < DOWN_BOUND_S, name
        assert not sync.is_ready()

        own_server.start()
        sync.wait_until_ready(timeout=60)
        np.testing.assert_allclose(sync.embed(texts), before, atol=1e-5)
        np.testing.assert_allclose(loop.run_until_complete(async_client.embed(texts)), before, atol=1e-5)
    finally:
        sync.close()
        loop.run_until_complete(async_client.close())
        loop.close()

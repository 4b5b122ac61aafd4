"""The gateway when Triton is not there: 503 with Retry-After while it is down and service again once it is back;
a Triton that accepts connections and never answers gets 504 after the gateway's timeout, never a hang, and the
gateway keeps answering (health, and 429 at once beyond its in-flight limit) meanwhile."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from conftest import openai_client, start_gateway

pytestmark = pytest.mark.slow


def status_of(url: str, timeout: float = 30) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def test_triton_down_is_503_with_retry_after_then_recovers(fp32_repository):
    from exporter.serve import ServerSettings, TritonServer

    server = TritonServer(ServerSettings(fp32_repository, http_port=0, grpc_port=0, metrics_port=0))
    model = server.models[0]
    try:
        server.start()
        with start_gateway(server.http_url) as gateway, openai_client(gateway) as sdk:
            assert len(sdk.embeddings.create(model=model, input=["before"]).data) == 1
            server.stop()
            with pytest.raises(openai.InternalServerError) as error:
                sdk.embeddings.create(model=model, input=["while down"])
            assert error.value.status_code == 503 and error.value.response.headers["retry-after"] == "1"
            assert error.value.body["code"] == "triton_unavailable"
            status, headers = status_of(f"{gateway.root}/ready")
            assert status == 503 and headers["retry-after"] == "1"
            server.start()  # same ports: the gateway's client reconnects by itself
            assert status_of(f"{gateway.root}/ready")[0] == 200
            assert len(sdk.embeddings.create(model=model, input=["after"]).data) == 1
    finally:
        server.stop()


@pytest.fixture
def hung_triton():
    """host:port of a socket that accepts connections and reads, but never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_hung_triton_gives_504_after_the_timeout_and_the_gateway_stays_responsive(hung_triton):
    timeout = 2.0
    with start_gateway(hung_triton, "--timeout", str(timeout), "--max-in-flight", "1") as gateway, \
            openai_client(gateway, timeout=30) as sdk:
        outcome: dict = {}

        def first() -> None:
            started = time.perf_counter()
            try:
                sdk.embeddings.create(model="m", input="x")
            except openai.APIStatusError as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=first)
        thread.start()
        time.sleep(0.5)  # the first request now holds the only in-flight slot, waiting on Triton
        started = time.perf_counter()
        with pytest.raises(openai.RateLimitError) as limited:
            sdk.embeddings.create(model="m", input="y")
        assert time.perf_counter() - started < 1.0 and limited.value.response.headers["retry-after"] == "1"
        assert status_of(f"{gateway.root}/health", timeout=1.0)[0] == 200  # the event loop is not blocked
        thread.join(timeout=timeout + 10)
        assert not thread.is_alive(), "the gateway hung past its timeout"
        error = outcome["error"]
        assert isinstance(error, openai.InternalServerError) and error.status_code == 504
        assert error.body["code"] == "timeout" and error.response.headers["retry-after"] == "1"
        assert timeout <= outcome["seconds"] < timeout + 2.0
        started = time.perf_counter()
        assert status_of(f"{gateway.root}/ready")[0] == 503
        assert time.perf_counter() - started < timeout + 2.0

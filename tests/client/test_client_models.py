"""``models()`` while the server's models change: one unloaded between Triton's repository index and its config
request is left out, and the others are still listed (sync and async).

The server is a real tritonserver (the project's launcher) over the fp32 repository in explicit model-control
mode, so a model can be unloaded through Triton's repository API, with a second ensemble ``<name>-b`` over the same
tokenizer and encoder. The client talks to it through a plain forwarding HTTP proxy that, after relaying the
repository index, unloads the first model and waits until Triton reports it gone: the race made deterministic,
with every answer the client sees coming from Triton itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client import AsyncEmbeddingClient, EmbeddingClient, Retry
from exporter.serve import ServerSettings, TritonServer

pytestmark = pytest.mark.slow


def triton_post(server: TritonServer, path: str) -> bytes:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def ready_names(server: TritonServer) -> set[str]:
    return {m["name"] for m in json.loads(triton_post(server, "/v2/repository/index")) if m.get("state") == "READY"}


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def repository(fp32_repository, served_model, tmp_path_factory) -> tuple[Path, str, str]:
    """(repository, the model the proxy unloads, the second ensemble that stays)."""
    victim = served_model("fp32")
    repo = tmp_path_factory.mktemp("explicit") / "model_repository"
    shutil.copytree(fp32_repository, repo, copy_function=os.link)
    survivor = f"{victim}-b"
    config = (repo / victim / "config.pbtxt").read_text(encoding="utf-8")
    assert f'name: "{victim}"' in config
    (repo / survivor / "1").mkdir(parents=True)
    (repo / survivor / "config.pbtxt").write_text(config.replace(f'name: "{victim}"', f'name: "{survivor}"', 1),
                                                  encoding="utf-8")
    return repo, victim, survivor


@pytest.fixture(scope="module")
def server(repository):
    # The project's launcher: explicit model control with every model of the repository loaded, as always.
    triton = TritonServer(ServerSettings(repository[0], http_port=0, grpc_port=0, metrics_port=0))
    triton.start()
    try:
        yield triton
    finally:
        triton.stop()


@pytest.fixture
def unloading_proxy(server, repository):
    """``(proxy url, log)``: relays to Triton; after relaying the first repository index it unloads the victim and
    waits until Triton no longer lists it as ready. ``log`` gets whether the relayed index listed it as ready."""
    _, victim, _ = repository
    log: list[bool] = []

    class Relay(BaseHTTPRequestHandler):
        def relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            request = urllib.request.Request(
                f"http://{server.http_url}{self.path}", data=self.rfile.read(length) if length else None,
                method=self.command, headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            if self.path == "/v2/repository/index" and not log:
                log.append(any(m["name"] == victim and m.get("state") == "READY" for m in json.loads(body)))
                triton_post(server, f"/v2/repository/models/{victim}/unload")
                wait_for(lambda: victim not in ready_names(server), f"{victim} to unload")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = relay

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{proxy.server_address[1]}", log
    finally:
        proxy.shutdown()
        proxy.server_close()
        triton_post(server, f"/v2/repository/models/{victim}/load")
        wait_for(lambda: victim in ready_names(server), f"{victim} to load again")


def test_sync_models_skip_a_model_unloaded_after_the_index(unloading_proxy, repository):
    url, log = unloading_proxy
    _, victim, survivor = repository
    with EmbeddingClient(url, retry=Retry(attempts=1)) as c:
        infos = c.models()
    assert log == [True], "the index the client read should still list the unloaded model as ready"
    assert [(m.name, m.dim, m.precision) for m in infos] == [(survivor, 384, "fp32")]


def test_async_models_skip_a_model_unloaded_after_the_index(unloading_proxy, repository):
    url, log = unloading_proxy
    _, victim, survivor = repository

    async def listing():
        async with AsyncEmbeddingClient(url, retry=Retry(attempts=1)) as c:
            return await c.models()

    infos = asyncio.run(listing())
    assert log == [True], "the index the client read should still list the unloaded model as ready"
    assert [(m.name, m.dim, m.precision) for m in infos] == [(survivor, 384, "fp32")]

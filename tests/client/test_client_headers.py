"""Extra headers (e.g. ``Authorization`` for an authenticating proxy) reach the wire on every request, sync and async.

The far end is a plain HTTP listener that records request headers and answers Triton's readiness endpoints, i.e.
what an authenticating proxy in front of Triton sees; the client side is the real tritonclient transport.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from client import AsyncEmbeddingClient, EmbeddingClient

HEADERS = {"Authorization": "Bearer s3cret", "X-Tenant": "search"}


@pytest.fixture()
def proxy():
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen.append({k: v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_sync_client_sends_headers_with_every_request(proxy):
    url, seen = proxy
    with EmbeddingClient(url, headers=HEADERS) as c:
        assert c.is_ready()
        c.wait_until_ready(timeout=5)
    assert len(seen) >= 2
    assert all(h.get("Authorization") == "Bearer s3cret" and h.get("X-Tenant") == "search" for h in seen), seen


def test_async_client_sends_headers(proxy):
    url, seen = proxy

    async def go():
        async with AsyncEmbeddingClient(url, headers=HEADERS) as c:
            return await c.is_ready()

    assert asyncio.run(go())
    assert seen and all(h.get("Authorization") == "Bearer s3cret" for h in seen), seen


def test_no_headers_by_default(proxy):
    url, seen = proxy
    with EmbeddingClient(url) as c:
        assert c.is_ready()
    assert seen and all("Authorization" not in h for h in seen)


@pytest.mark.parametrize("bad", [{"": "x"}, {"X-A": 1}, {"X-A": "a\nInjected: yes"}])
def test_bad_headers_are_refused_naming_them(bad):
    with pytest.raises(ValueError, match="header"):
        EmbeddingClient("127.0.0.1:1", headers=bad)


def test_cli_header_flag(proxy, capsys):
    from client.cli import main

    url, seen = proxy
    assert main(["--url", url, "--header", "Authorization: Bearer s3cret", "health"]) == 0
    assert seen and seen[-1].get("Authorization") == "Bearer s3cret"
    assert main(["--url", url, "--header", "no-colon", "health"]) == 2
    assert "expected 'NAME: VALUE'" in capsys.readouterr().err

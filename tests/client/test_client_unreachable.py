"""No Triton needed: a closed port and a socket that accepts but never answers, both real, bound the client's waits;
the CLI's exit codes; and the client package importing without torch or the exporter."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from client import AsyncEmbeddingClient, EmbeddingClient, Retry, ServerUnavailable, Timeouts
from client.cli import main

FAST = {"timeouts": Timeouts(connect=0.5, request=0.5), "retry": Retry(attempts=3, backoff=0.05, max_backoff=0.1)}
BOUND_S = 3 * 0.5 + 2 * 0.1 * 1.5 + 2.0  # attempts x request timeout + backoff + slack for a busy 2-core box


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket is closed


@pytest.fixture
def silent_port():
    """Accepts connections (backlog) and never answers: the case where only a timeout prevents a hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_closed_port_raises_server_unavailable_after_retries(closed_port):
    start = time.monotonic()
    with EmbeddingClient(closed_port, model="m", **FAST) as client, \
            pytest.raises(ServerUnavailable, match="cannot reach Triton.*Connection refused"):
        client.embed(["x"])
    assert time.monotonic() - start < BOUND_S
    assert not EmbeddingClient(closed_port).is_ready()


@pytest.mark.parametrize("make", [EmbeddingClient, AsyncEmbeddingClient], ids=["sync", "async"])
def test_silent_server_times_out_within_the_configured_bound(silent_port, make):
    async def call():
        async with make(silent_port, model="m", **FAST) as client:
            await client.embed("x")

    def call_sync():
        with make(silent_port, model="m", **FAST) as client:
            client.embed("x")

    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="cannot reach Triton"):
        asyncio.run(call()) if make is AsyncEmbeddingClient else call_sync()
    elapsed = time.monotonic() - start
    assert 3 * 0.5 <= elapsed < BOUND_S  # it did wait for each attempt's timeout, and no longer


def test_wait_until_ready_gives_up_after_its_timeout(closed_port):
    start = time.monotonic()
    with EmbeddingClient(closed_port) as client, pytest.raises(ServerUnavailable, match="not ready after 1s"):
        client.wait_until_ready(timeout=1, interval=0.2)
    assert time.monotonic() - start < 2


def test_closed_client_refuses_new_calls(closed_port):
    client = EmbeddingClient(closed_port)
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.models()


@pytest.mark.parametrize("argv, code, words", [
    (["embed"], 2, "nothing to embed"),
    (["embed", "--file", "/nonexistent/texts.txt"], 2, "--file /nonexistent/texts.txt"),
    (["embed", "x"], 3, "cannot reach Triton"),
    (["models"], 3, "cannot reach Triton"),
    (["health"], 1, "not ready"),
])
def test_cli_exit_codes_and_messages(closed_port, capsys, argv, code, words):
    assert main(["--url", closed_port, "--timeout", "0.5", *argv]) == code
    assert words in capsys.readouterr().err


def test_cli_rejects_a_bad_url(capsys):
    assert main(["--url", "http://bad host", "models"]) == 2
    assert "expected host:port" in capsys.readouterr().err


def test_client_imports_without_torch_or_the_exporter():
    code = ("import sys, client; heavy = sorted(m for m in ('torch', 'exporter', 'transformers', 'onnxruntime') "
            "if m in sys.modules); print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

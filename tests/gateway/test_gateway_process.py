"""gateway.process: the child ``python -m gateway`` starts, answers /health without a Triton (and /ready says 503),
stops leaving no listener and no log; a child that cannot start is reported with its own words."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from gateway.process import GatewayProcess, free_port

pytestmark = pytest.mark.e2e  # a real child process (no Triton)


def test_starts_answers_and_stops_cleanly():
    dead_triton = f"127.0.0.1:{free_port()}"
    with GatewayProcess(dead_triton, args=["--timeout", "2"]) as gateway:
        log_path = gateway.log_path
        with urllib.request.urlopen(f"{gateway.root}/health", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{gateway.root}/ready", timeout=10)
        assert error.value.code == 503 and error.value.headers["Retry-After"] == "1"
        assert "not ready yet" in gateway.log_tail()  # the start-up hint in its log
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", gateway.port)) != 0
    assert not log_path.exists() and gateway.process is None
    gateway.stop()  # idempotent


def test_a_gateway_that_cannot_start_is_reported_with_its_message():
    with pytest.raises(RuntimeError) as error:
        GatewayProcess("127.0.0.1:1", args=["--max-texts", "0"]).start()
    assert "gateway exited with 2" in str(error.value) and "max-texts=0" in str(error.value)

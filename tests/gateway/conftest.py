"""Fixtures for the gateway's end-to-end tests: a real ``python -m gateway`` process (uvicorn) in front of the
session's real Triton, and the official openai SDK pointed at it.

The gateway runs with API keys (``KEYS``; tests authenticate with ``KEY``), metrics on, and small limits
(``MAX_TEXTS``, ``MAX_BODY_BYTES``) so the limit tests stay cheap. SDK retries are off (``max_retries=0``) so
every error reaches the test as the SDK's exception instead of being retried.
"""

from __future__ import annotations

import pytest

KEYS = ("test-key-0", "test-key-1")
KEY = KEYS[1]
KEY_ENV = "EMB_PROVIDER_TEST_GATEWAY_KEYS"
MAX_TEXTS = 100
MAX_BODY_BYTES = 100_000


def start_gateway(triton_url: str, *args: str, keys: tuple[str, ...] = KEYS):
    from gateway.process import GatewayProcess

    return GatewayProcess(triton_url, args=["--api-key-env", KEY_ENV, *args],
                          env={KEY_ENV: ",".join(keys)}).start()


def openai_client(gateway, api_key: str = KEY, **options):
    import openai

    return openai.OpenAI(base_url=gateway.url, api_key=api_key, max_retries=0, **options)


@pytest.fixture(scope="module")
def gateway(triton_server):
    process = start_gateway(triton_server.http_url, "--metrics", "--max-texts", str(MAX_TEXTS),
                            "--max-body-bytes", str(MAX_BODY_BYTES))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def sdk(gateway):
    with openai_client(gateway) as client:
        yield client


@pytest.fixture(scope="module")
def reference(triton_server):
    """The project's own client on the same Triton: what the gateway's vectors must equal."""
    from client import EmbeddingClient

    with EmbeddingClient(triton_server.http_url) as client:
        yield client

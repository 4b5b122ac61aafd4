"""bench/peers.py's reader against a real OpenAI-compatible server, our own gateway on the session's real Triton:
what a peer such as Infinity answers must decode to the vectors a direct client gets."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import pytest

from bench.peers import embeddings_call

pytestmark = pytest.mark.slow

TEXTS = ["A man is playing a guitar.", "Someone plays the guitar on stage.", "naïve café 中文"]


def test_the_peer_reader_decodes_an_openai_compatible_servers_vectors(triton_server, served_model):
    from client import EmbeddingClient
    from gateway.process import GatewayProcess

    model = served_model("fp32")
    with GatewayProcess(triton_server.http_url) as gateway, ExitStack() as stack, \
            EmbeddingClient(triton_server.http_url, model=model) as direct:
        vectors = embeddings_call(gateway.port, "/v1/embeddings", model, stack)(TEXTS)
        np.testing.assert_allclose(vectors, direct.embed(TEXTS), atol=1e-6)
    assert vectors.shape == (3, 384)

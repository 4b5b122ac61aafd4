"""bench/peers.py: the harness that serves a peer beside ours and drives it like our Triton. Infinity itself needs
its own environment and a GPU run (scripts/gpu.sh, GPU_SUITE=peers); here the harness runs end to end against a
stand-in OpenAI-style server (tests/fakes/embeddings_server.py), and its reader is checked on bad answers."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bench.measure import Batches, Settings
from bench.peers import Peer, PeerError, decode_embeddings, measure_peer, peer_process

FAKE = Path(__file__).resolve().parent / "fakes" / "embeddings_server.py"
sys.path.insert(0, str(FAKE.parent))
from embeddings_server import DIM, vector  # noqa: E402

FAKE_PEER = Peer("fake", "no-such-distribution", lambda python, d, name, port, gpu: [python, str(FAKE), str(port)],
                 "/embeddings", "/health")


def _answer(vectors: list[np.ndarray]) -> dict:
    return {"data": [{"index": i, "embedding": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()}
                     for i, v in enumerate(vectors)]}


def test_decode_puts_vectors_in_index_order():
    answer = _answer([np.ones(4), np.zeros(4) + 2])
    answer["data"].reverse()
    np.testing.assert_array_equal(decode_embeddings(answer, 2), [[1] * 4, [2] * 4])


@pytest.mark.parametrize("vectors, texts, message", [
    ([np.ones(4)], 2, "asked for 2 vectors, the answer holds 1"),
    ([np.ones(4), np.ones(3)], 2, r"vector widths differ or are empty: \[3, 4\]"),
    ([np.array([1.0, np.nan])], 1, "non-finite"),
])
def test_decode_refuses_answers_that_are_not_one_finite_vector_per_text(vectors, texts, message):
    with pytest.raises(PeerError, match=message):
        decode_embeddings(_answer(vectors), texts)


def test_a_peer_that_exits_at_start_is_an_error_with_its_output():
    peer = Peer("broken", "x", lambda python, *_: [python, "-c", "print('no model at that path'); exit(3)"],
                "/embeddings", "/health")
    server, _ = peer_process(peer, sys.executable, Path("/nowhere"), "m", gpu=False, start_timeout_s=30)
    with pytest.raises(RuntimeError, match=r"broken exited with 3\n(.|\n)*no model at that path"):
        server.start()


def test_the_peer_runs_without_our_pythonpath_and_outside_our_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/our/checkout")
    server, port = peer_process(FAKE_PEER, sys.executable, Path("/unused"), "m", gpu=False, start_timeout_s=30)
    with server, urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as response:
        assert json.load(response) == {"pythonpath": None, "cwd": os.path.realpath(tempfile.gettempdir())}


def test_measure_peer_embeds_the_sentences_in_order_and_times_each_concurrency():
    sentences = [f"sentence {i}" for i in range(7)]
    batches = Batches("stsb", (("a", "b", "c"), ("d", "e")), (3, 2))
    done = measure_peer(FAKE_PEER, sys.executable, Path("/unused"), "m", [(batches, 1), (batches, 2)],
                        Settings(repeats=2, window_s=0.2, warmup_requests=1), lambda: None, sentences,
                        batch_size=3, gpu=False)
    np.testing.assert_allclose(done.vectors, np.stack([vector(s) for s in sentences]))
    assert done.vectors.shape == (7, DIM)
    assert [(r["runner"], r["workload"], r["concurrency"]) for r in done.results] == [("fake", "stsb", 1),
                                                                                      ("fake", "stsb", 2)]
    for result in done.results:
        assert result["texts_per_s"]["median"] > 0 and result["windows"] == 2
        assert result["server_rss_mb"] > 0 and result["server_gpu_mib"] is None  # no GPU here
    assert done.info["version"] == "unknown" and str(FAKE) in done.info["command"]


def test_a_wrong_answer_fails_the_peer_run():
    batches = Batches("stsb", (("a", "wrong-count"),), (2,))
    with pytest.raises(PeerError, match="asked for 2 vectors, the answer holds 1"):
        measure_peer(FAKE_PEER, sys.executable, Path("/unused"), "m", [(batches, 1)], Settings(1, 0.1, 0),
                     lambda: None, ["x"], batch_size=1, gpu=False)

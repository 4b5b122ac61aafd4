"""``python -m bench.load`` (bench/load.py) against the shared served fp32 model, in a bounded configuration.

The command's default is the issue's 4 clients x 500 requests (run it by hand, see docs/reliability.md); here the
same code runs 4 clients x 10 requests of 1-8 texts, so that ``make test`` stays within CI's time on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest

import bench.load as loadtest
from bench.load import LoadSettings, run_load, text_pool

BOUNDED = LoadSettings(clients=4, requests=10, min_batch=1, max_batch=8, pool=48, time_limit=300)


@pytest.mark.slow
def test_bounded_load_loses_nothing_and_mixes_up_nothing(triton_server, fp32_model):
    report = run_load(triton_server.http_url, fp32_model, BOUNDED, server_pgid=triton_server.process.pid)
    assert report.requests_sent == 4 * 10, report.summary()
    assert (report.lost, report.mismatched, report.errors) == (0, 0, {}), report.summary()
    assert report.vectors_ok == report.texts_sent > 4 * 10
    assert report.passed
    rss = report.server_rss_mb
    assert rss["before"] > 0 and rss["after"] > 0
    # The first half grows ONNX Runtime's arena to the largest batch shapes; a leak would keep growing.
    assert rss["second_half_growth"] < 300, report.summary()


def test_the_text_pool_mixes_lengths_and_edge_cases():
    pool = text_pool(64, seed=0)
    assert len(pool) == len(set(pool)) == 64
    assert "" in pool and any(ord(c) > 0x4E00 for text in pool for c in text)
    lengths = sorted(len(text.split()) for text in pool)
    assert lengths[len(lengths) // 2] < 40 and lengths[-1] > 256  # mostly sentences, some over max_seq_length


@pytest.mark.parametrize("changes, message", [
    ({"clients": 0}, "clients=0"),
    ({"min_batch": 8, "max_batch": 4}, "batch sizes 8-4"),
    ({"time_limit": 0}, "time_limit"),
])
def test_load_settings_reject_nonsense(changes, message):
    with pytest.raises(ValueError, match=message):
        LoadSettings(**changes)


def test_load_refuses_a_non_loopback_server():
    with pytest.raises(ValueError, match="loopback only.*'10.0.0.1'"):
        run_load("10.0.0.1:8000", "m", BOUNDED)


class _PlantedFaults:
    """Stands in for EmbeddingClient in the checker test: the reference rows, with one planted fault per call."""

    def __init__(self, pool: list[str], refs: np.ndarray, fault: str):
        self.rows = {text: refs[i] for i, text in enumerate(pool)}
        self.fault = fault

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.fault == "raise":
            raise ConnectionResetError("planted")
        rows = np.stack([self.rows[t] for t in texts])
        if self.fault == "flip":
            rows[0] = -rows[0]
        return rows[:-1] if self.fault == "drop" else rows


@pytest.mark.parametrize("fault, counter", [("flip", "mismatched"), ("drop", "lost"), ("raise", "errors")])
def test_the_checker_counts_every_planted_fault(fault, counter, monkeypatch):
    pool = [f"text {i}" for i in range(8)]
    refs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    monkeypatch.setattr(loadtest, "_client", lambda *_: _PlantedFaults(pool, refs, fault))
    tally = loadtest._Tally()
    loadtest._worker("127.0.0.1:1", "m", pool, refs, LoadSettings(pool=8, max_batch=4), 5, 0, float("inf"), tally)
    counts = {"mismatched": tally.mismatched, "lost": tally.lost, "errors": sum(tally.errors.values())}
    assert counts == {name: (5 if name == counter else 0) for name in counts}
    assert tally.requests == 5

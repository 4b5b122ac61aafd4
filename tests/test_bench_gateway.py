"""bench.gateway's verdicts and plot from given measurements (the measuring itself is ``python -m bench.gateway``)."""

from __future__ import annotations

import pytest

from bench.gateway import render_plot, summarize


def rounds(direct: list[float], gateway: list[float]) -> dict:
    def results(values: list[float]) -> list[dict]:
        return [{"texts_per_s": {"median": v}} for v in values]

    return {"direct": results(direct), "gateway": results(gateway), "gateway-float": results([1.0] * len(direct))}


def times(direct: float, sdk: float) -> dict:
    return {"direct": [direct - 1, direct, direct + 5], "gateway-sdk": [sdk - 1, sdk, sdk + 9],
            "gateway-http": [direct, direct + 1, direct + 2]}


def test_the_ratio_is_taken_within_each_round_so_load_drift_cancels():
    # the machine slowed down 2x between rounds: each round's ratio is 0.95, the ratio of the medians is not
    s = summarize(rounds([100.0, 50.0, 100.0], [95.0, 47.5, 95.0]), times(4.0, 6.5))
    assert s["ratio_per_round"]["gateway"] == pytest.approx([0.95, 0.95, 0.95])
    assert s["targets"]["throughput_ratio"]["value"] == pytest.approx(0.95)
    assert s["targets"]["throughput_ratio"]["passed"]
    assert s["targets"]["added_p50_ms"]["value"] == pytest.approx(2.5) and s["targets"]["added_p50_ms"]["passed"]
    assert s["added_p50_ms_without_sdk"] == pytest.approx(1.0)


def test_targets_fail_below_the_thresholds():
    s = summarize(rounds([100.0, 100.0], [80.0, 85.0]), times(4.0, 7.5))
    assert not s["targets"]["throughput_ratio"]["passed"] and not s["targets"]["added_p50_ms"]["passed"]


def test_plot_is_written(tmp_path):
    report = {"summary": summarize(rounds([100.0], [95.0]), times(4.0, 6.0)), "model": "m", "precision": "fp32",
              "settings": {"batch_size": 64, "concurrency": 4}, "machine": {"cpu": "cpu", "cores": 2}}
    path = render_plot(report, tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

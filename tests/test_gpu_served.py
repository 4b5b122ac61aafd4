"""bench/gpu_served.py (what scripts/gpu.sh runs) and the bench.cpu options it relies on, without a GPU."""

from __future__ import annotations

import re

import pytest

from bench import cpu, gpu_served


def test_the_served_gpu_report_is_named_gpu_date_served():
    assert re.fullmatch(r"gpu-\d{4}-\d{2}-\d{2}-served", gpu_served.report_stem())


def test_warmup_is_an_option_and_keeps_the_profile_default_when_not_given():
    assert cpu.profile_from_args(cpu.parse_args([])).settings.warmup_requests == cpu.FULL.settings.warmup_requests
    settings = cpu.profile_from_args(cpu.parse_args(["--warmup", "16"])).settings
    assert (settings.warmup_requests, settings.repeats, settings.window_s) == (16, 3, 2.0)
    assert cpu.profile_from_args(cpu.parse_args(["--warmup", "0"])).settings.warmup_requests == 0
    with pytest.raises(SystemExit, match="warmup_requests=-1"):
        cpu.profile_from_args(cpu.parse_args(["--warmup", "-1"]))


def test_gpu_served_warms_up_one_pass_of_batches_unless_told_otherwise(monkeypatch):
    seen = {}

    def fake_main(argv, **kwargs):
        seen["args"], seen["kwargs"] = cpu.parse_args(argv), kwargs
        return 0

    monkeypatch.setattr(cpu, "main", fake_main)
    assert gpu_served.main(["--device", "cuda"]) == 0
    assert seen["args"].warmup == gpu_served.WARMUP_REQUESTS and seen["args"].device == "cuda"
    assert seen["kwargs"]["stem"] == gpu_served.report_stem()
    gpu_served.main(["--warmup", "3"])
    assert seen["args"].warmup == 3


def test_nvidia_smi_query_lines_become_gpu_records():
    from bench.machine import parse_gpu_query

    out = "NVIDIA H200, 143771, 580.159.04\nNVIDIA A100-SXM4-80GB, 81920, 550.54.15\n"
    assert parse_gpu_query(out) == [{"name": "NVIDIA H200", "memory_mib": 143771, "driver": "580.159.04"},
                                    {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "driver": "550.54.15"}]
    assert parse_gpu_query("") == []


def test_a_gpu_report_names_the_card_and_the_host_cpu():
    """Rendered from the committed H200 record: the card in the header and the plot title, the CPU beside it."""
    import json
    from pathlib import Path

    from bench.report import render_markdown

    record = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "gpu-2026-12-01-served.json"
    report = json.loads(record.read_text())
    text = render_markdown(report)
    assert "- GPU: NVIDIA H200, 143,771 MiB, driver 580.159.04" in text
    assert "- Machine: Intel(R) Xeon(R) Processor" in text
    assert "sentence-transformers fp16 in-process" in text
    assert {r["runner"] for r in report["served"]} == {"fp16", "bf16", "int4"} and report["errors"] == []


def test_report_name_names_the_file_and_is_checked(monkeypatch):
    seen = {}
    monkeypatch.setattr(cpu, "main", lambda argv, **kwargs: seen.update(argv=argv, **kwargs) or 0)
    assert gpu_served.main(["--report-name", "served-peers-bge-large", "--precisions", "fp16"]) == 0
    assert seen["stem"] == gpu_served.report_stem("served-peers-bge-large") and "--report-name" not in seen["argv"]
    assert seen["command"].endswith("--report-name served-peers-bge-large")
    with pytest.raises(SystemExit):
        gpu_served.main(["--report-name", "../elsewhere"])

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

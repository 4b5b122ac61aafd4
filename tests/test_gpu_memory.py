"""bench.gpu_memory's report: the ratio of the peaks with the setting on and off, per artefact, from the JSON alone
(the figures are GPU records: docs/benchmarks/gpu-2026-12-01-memory.md)."""

from __future__ import annotations

from bench.gpu_memory import SEQUENCE, render_markdown


def test_report_gives_each_artefacts_peak_ratio_and_errors():
    rows = [{"label": "a", "memory_optimization": False, "load_mib": 10.0, "peak_mib": 200.0},
            {"label": "a", "memory_optimization": True, "load_mib": 8.0, "peak_mib": 150.0},
            {"label": "b", "memory_optimization": False, "error": "FileNotFoundError: x"},
            {"label": "b", "memory_optimization": True, "error": "FileNotFoundError: x"}]
    text = render_markdown({"meta": {"gpu": "H", "date": "d", "sequence": SEQUENCE}, "rows": rows})
    assert "| a | off | 10.0 | 200.0 | – |  |" in text
    assert "| a | on | 8.0 | 150.0 | 0.75x |  |" in text
    assert "| b | on | – | – | – | FileNotFoundError: x |" in text

"""``python -m bench.gpu_large`` on the CPU with the tiny Qwen3 shape: every precision loads through its real code
(int4 through the serving runtime's loader), runs, is compared with bf16 and lands in the report; the 8B/4B
figures themselves are GPU records (docs/benchmarks/gpu-2026-12-01-large.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_tiny_shape_runs_every_precision_and_reports(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.gpu_large", "--device", "cpu", "--shapes", "tiny",
                           "--batch", "2", "--seq", "16", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu-large.json").read_text())["rows"]
    assert [(r["shape"], r["precision"], r.get("error")) for r in rows] == [
        ("tiny", p, None) for p in ("bf16", "int4", "w8a8", "fp8")]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[1]["details"]["embeddings"] == "int8 rows (Int8Embedding)"
    assert all(0.9 <= r["min_cos_vs_bf16"] <= 1.0 for r in rows[1:])  # tiny: the numbers still agree
    assert "| tiny | int4 |" in (tmp_path / "gpu-large.md").read_text()
    assert (tmp_path / "gpu-large.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.npy"))  # the vectors were scratch

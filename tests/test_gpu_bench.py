"""``python -m bench.gpu`` on the CPU: the smoke run builds the real fp16 route, times real torch and ONNX Runtime
workers in their own processes and writes a well-formed report; speed targets live in the GPU records, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = "torch-fp32,torch-fp16,ort-fp16-binding,ort-fp16-cudagraph,torch-w8a8,torch-fp8"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bench.gpu", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench")
    done = _run("--device", "cpu", "--quick", "--shapes", "minilm", "--variants", VARIANTS, "--jobs", "1",
                "--out", str(out), "--work", str(out / "work"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "gpu-bench.json").read_text())


@pytest.mark.slow
def test_smoke_report_is_complete(report):
    out, data = report
    shape = data["shapes"]["minilm"]
    assert data["meta"]["baseline"] == "torch-fp16" and data["meta"]["workloads"] == [{"batch": 2, "seq": 16}]
    assert shape["artefacts"]["fp16"]["route"] == "onnx-fp16"
    assert shape["artefacts"]["fp16"]["fused"]["Attention"] == 6  # the fusion the GPU speed depends on
    for name in ("torch-fp32", "torch-fp16", "ort-fp16-binding"):
        timing = shape["results"][name]["workloads"]["2x16"]
        assert timing["repeats"] == 2 and 0 < timing["ms_p10"] <= timing["ms_median"] <= timing["ms_p90"]
        assert timing["tokens_per_s"] == pytest.approx(32 / (timing["ms_median"] / 1000))
    assert shape["results"]["ort-fp16-binding"]["providers"] == ["CPUExecutionProvider"]
    assert shape["results"]["ort-fp16-binding"]["min_cos"] >= 0.999  # fp16 graph vs torch fp32, real weights
    assert "CUDA graphs need the CUDA execution provider" in shape["results"]["ort-fp16-cudagraph"]["error"]
    for name in ("torch-w8a8", "torch-fp8"):  # the GPU int8 candidates (bench/lowbit.py) run, and agree with fp32
        assert shape["results"][name]["workloads"]["2x16"]["tokens_per_s"] > 0
        assert shape["results"][name]["min_cos"] >= 0.95, shape["results"][name]
    markdown = (out / "gpu-bench.md").read_text()
    assert "| ort-fp16-binding |" in markdown and "(baseline)" in markdown
    assert (out / "gpu-bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_rerenders_from_json(report, tmp_path):
    out, data = report
    copy = tmp_path / "h100-test.json"
    copy.write_text(json.dumps(data))
    done = _run("--report", str(copy))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "h100-test.md").read_text() == (out / "gpu-bench.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--workloads", "64by256"], "--workloads '64by256': expected BATCHxSEQ"),
    (["--variants", "ort-fp17"], "unknown variants/shapes ['ort-fp17']"),
])
def test_bad_arguments_name_the_value(tmp_path, args, message):
    done = _run("--out", str(tmp_path), *args)
    assert done.returncode == 2 and message in done.stderr


def test_model_dirs_only_makes_a_sentence_transformers_dir_once_and_prints_it(tmp_path, capsys):
    """What GPU_SUITE=peers serves with both runners: one pooling mode spelled out, since sentence-transformers 3
    (Infinity's) turns mean pooling on when its key is absent and would serve vectors twice as wide."""
    from bench import gpu

    assert gpu.main(["--model-dirs-only", "--quick", "--shapes", "bge-large", "--work", str(tmp_path / "w")]) == 0
    model_dir = Path(capsys.readouterr().out.strip())
    assert model_dir == tmp_path / "w-quick" / "bge-large-random" and (model_dir / "modules.json").is_file()
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert [k for k, v in pooling.items() if v is True] == ["pooling_mode_cls_token"]
    assert {"pooling_mode_mean_tokens", "pooling_mode_max_tokens"} <= set(pooling)
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    gpu.main(["--model-dirs-only", "--quick", "--shapes", "bge-large", "--work", str(tmp_path / "w")])
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not made again

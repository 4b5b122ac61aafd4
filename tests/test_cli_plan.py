"""`python -m exporter plan` as a user runs it: human table, --json, exit code 2 on bad configuration."""

import json
import os
import subprocess
import sys

from exporter.cpu import INT8_KERNELS, cpu_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EMB_PROVIDER_")}
    full_env.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "exporter", "plan", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_plan_json_for_gpu_target():
    out = run_cli("--device", "cuda:8.0", "--json")
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert entry["model"] == "sentence-transformers/all-MiniLM-L6-v2" and entry["name"] == "all-minilm-l6-v2"
    assert (entry["precision"], entry["route"]) == ("fp16", "onnx-fp16")
    assert entry["reasons"][3] == "4 device capability: cuda:8.0 recommends fp16 -> decides"


def test_plan_human_table_shows_fallback_chain():
    out = run_cli("--device", "cuda:7.5", env={"EMB_PROVIDER_MODEL_PRECISION": "bf16"})
    assert out.returncode == 0, out.stderr
    assert "all-minilm-l6-v2" in out.stdout and "fp16" in out.stdout and "fallback from bf16" in out.stdout
    assert "target cuda:7.5 has no bf16 -> fp16" in out.stdout
    assert "WARNING" in out.stderr


def test_int8_for_a_gpu_target_plans_fp16_and_says_why():
    out = run_cli("--device", "cuda:8.0", "--precision", "int8", "--json")
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert (entry["requested"], entry["precision"], entry["route"]) == ("int8", "fp16", "onnx-fp16")
    reason = ("ONNX Runtime's CUDA provider has no dynamic-int8 kernels (MatMulIntegerToFloat, DynamicQuantizeLinear): "
              "the int8 graph would run its matrix products on the host CPU; no GPU int8 route measured beats the "
              "fp16 route (H200: int8 GEMMs 0.30-0.71x, FP8 0.39-1.01x its throughput; docs/benchmarks/gpu.md) "
              "-> fp16")
    assert any(r.endswith(reason) for r in entry["reasons"])
    assert "WARNING" in out.stderr and reason in out.stderr


def test_cli_flag_beats_environment():
    out = run_cli("--precision", "int8", "--json", "--device", "cpu", env={"EMB_PROVIDER_MODEL_PRECISION": "fp16"})
    assert json.loads(out.stdout)[0]["precision"] == "int8"


def test_bad_configuration_exits_2_with_message():
    out = run_cli(env={"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": "{oops"})
    assert out.returncode == 2
    assert "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES is not valid JSON" in out.stderr and out.stdout == ""
    out = run_cli("--device", "quantum")
    assert out.returncode == 2 and "'quantum'" in out.stderr


def test_debug_level_logs_decision():
    out = run_cli("--device", "cpu", "--log-level", "DEBUG")
    assert "chosen precision: fp32" in out.stderr and "native precision:" in out.stderr


def test_why_on_int8_cpu_plan_lists_int8_speed_by_cpu_kind():
    out = run_cli("--why", "--precision", "int8", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    block = out.stdout.split("int8 speed by CPU kind (ONNX Runtime picks the kernel at run time):\n", 1)[1]
    lines = block.splitlines()[:len(INT8_KERNELS)]
    assert [line.split()[0] for line in lines] == list(INT8_KERNELS)
    host = cpu_info()
    [marked] = [line for line in lines if "(this host:" in line]
    assert marked.split()[0] == host.int8_kind and marked.endswith(f"(this host: {host.describe()})")
    assert INT8_KERNELS[host.int8_kind] in marked


def test_why_adds_no_int8_block_to_fp32_or_json():
    assert "int8 speed by CPU kind" not in run_cli("--why", "--device", "cpu").stdout
    out = run_cli("--why", "--json", "--precision", "int8", "--device", "cpu")
    assert "int8 speed by CPU kind" not in out.stdout and json.loads(out.stdout)[0]["precision"] == "int8"

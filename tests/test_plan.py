"""Precision resolution: every precedence step, every fallback, the guide's four examples, DEBUG content."""

import logging

import pytest

from exporter.config import Config
from exporter.devices import parse_device
from exporter.errors import ConfigError
from exporter.models import ModelSpec
from exporter.plan import resolve, resolve_all, resolve_as

MINILM = ModelSpec("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2")


def plan(env=None, device="cpu", native=None, spec=MINILM):
    return resolve(spec, Config.from_env(env or {}), parse_device(device), native)


def test_auto_float32_model_resolves_by_device():
    gpu, cpu = plan(device="cuda:8.0", native="float32"), plan(device="cpu", native="float32")
    assert (gpu.precision, gpu.route, gpu.decided_by) == ("fp16", "onnx-fp16", "device")
    assert (cpu.precision, cpu.route, cpu.decided_by) == ("fp32", "onnx-fp32", "device")
    assert "3 native dtype: float32 is only the storage default and does not decide" in cpu.reasons


def test_every_step_leaves_one_reason_in_order():
    p = plan(device="cpu")
    assert [r[0] for r in p.reasons] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("native,device,expected", [
    ("bfloat16", "cuda:8.0", "bf16"),
    ("float16", "cuda:7.5", "fp16"),
    ("float16", "cpu", "fp16"),
])
def test_native_half_dtype_decides_when_supported(native, device, expected):
    p = plan(device=device, native=native)
    assert (p.precision, p.decided_by) == (expected, "native")


def test_native_bf16_on_target_without_bf16_goes_to_device_step():
    p = plan(device="cuda:7.5", native="bfloat16")
    assert (p.precision, p.decided_by) == ("fp16", "device")
    assert any("has no bf16 -> device step decides" in r for r in p.reasons)


@pytest.mark.parametrize("env, device, instead", [
    ({}, "cuda:7.5", "fp32 avoids it (cuda:7.5 has no bf16)"),  # auto on Turing: the device step gives fp16
    ({"EMB_PROVIDER_MODEL_PRECISION": "fp16"}, "cuda:8.0", "bf16 is available on this target"),
])
def test_fp16_for_a_bf16_stored_model_is_kept_with_a_warning_and_the_alternative(env, device, instead, caplog):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        p = plan(env, device=device, native="bfloat16")
    line = (f"{MINILM.model} is stored in bfloat16 and will run in fp16: activations of a model trained in bf16 can "
            f"exceed fp16's range (inf/NaN vectors); {instead}")
    assert p.precision == "fp16" and f"   note: {line}" in p.reasons
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", line)]


@pytest.mark.parametrize("native, device", [("bfloat16", "cuda:8.0"), ("float16", "cuda:7.5"), (None, "cuda:7.5")])
def test_no_fp16_warning_where_the_model_is_not_bf16_or_not_run_in_fp16(native, device, caplog):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        p = plan(device=device, native=native)
    assert not [r for r in p.reasons if "is stored in bfloat16" in r] and not caplog.records


def test_global_beats_native():
    p = plan({"EMB_PROVIDER_MODEL_PRECISION": "fp32"}, device="cuda:8.0", native="bfloat16")
    assert (p.precision, p.decided_by) == ("fp32", "global")


def test_override_beats_global():
    env = {"EMB_PROVIDER_MODEL_PRECISION": "fp32",
           "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"sentence-transformers/all-MiniLM-L6-v2": "fp16"}'}
    p = plan(env, device="cuda:8.0")
    assert (p.precision, p.decided_by) == ("fp16", "override")
    assert p.reasons[1] == "2 global setting: not consulted (fp32)"


@pytest.mark.parametrize("key", ["sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2", "small-models"])
def test_override_matches_id_name_or_group(key):
    spec = ModelSpec(MINILM.model, MINILM.name, group="small-models")
    p = plan({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": f'{{"{key}": "fp16"}}'}, spec=spec)
    assert (p.precision, p.decided_by) == ("fp16", "override")
    assert repr(key) in p.reasons[0]


def test_override_auto_skips_global():
    env = {"EMB_PROVIDER_MODEL_PRECISION": "int8",
           "EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"all-minilm-l6-v2": "auto"}'}
    p = plan(env, device="cuda:8.0")
    assert (p.precision, p.decided_by) == ("fp16", "device")


def test_models_file_precision_counts_as_override():
    p = plan({"EMB_PROVIDER_MODEL_PRECISION": "fp32"}, spec=ModelSpec("m", "m", precision="int8"))
    assert (p.precision, p.decided_by) == ("int8", "override") and "models file" in p.reasons[0]


@pytest.mark.parametrize("requested,device,expected", [
    ("bf16", "cuda:7.5", "fp16"),
    ("bf16", "cpu", "fp32"),
    ("bf16", "rocm", "fp16"),
    ("int4", "cuda:6.1", "fp16"),
])
def test_fallbacks_are_logged_and_recorded(requested, device, expected, caplog):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        p = plan({"EMB_PROVIDER_MODEL_PRECISION": requested}, device=device)
    assert (p.requested, p.precision) == (requested, expected)
    line = f"{requested} requested by EMB_PROVIDER_MODEL_PRECISION for {MINILM.model}; target {device} has no " \
           f"{requested} -> {expected}"
    assert any(line in r for r in p.reasons)
    assert line in caplog.text


@pytest.mark.parametrize("device,provider", [("cuda:8.0", "CUDA"), ("cuda:9.0", "CUDA"), ("cuda:6.1", "CUDA"),
                                             ("rocm", "ROCm")])
def test_int8_on_gpu_targets_resolves_to_fp16_with_the_kernel_reason(device, provider, caplog):
    # the int8 graph needs kernels only ONNX Runtime's CPU provider has: a GPU target would serve it from the host
    with caplog.at_level(logging.WARNING, logger="exporter"):
        p = plan({"EMB_PROVIDER_MODEL_PRECISION": "int8"}, device=device)
    assert (p.requested, p.precision, p.route) == ("int8", "fp16", "onnx-fp16")
    assert p.quantization == {"enabled": False, "method": None, "scheme": None}
    line = (f"int8 requested by EMB_PROVIDER_MODEL_PRECISION for {MINILM.model}; ONNX Runtime's {provider} provider "
            "has no dynamic-int8 kernels (MatMulIntegerToFloat, DynamicQuantizeLinear): the int8 graph would run its "
            "matrix products on the host CPU" + ("; no GPU int8 route measured beats the fp16 route (H200: int8 "
            "GEMMs 0.30-0.71x, FP8 0.39-1.01x its throughput; docs/benchmarks/gpu.md)" if provider == "CUDA" else "")
            + " -> fp16")
    assert f"   fallback: {line}" in p.reasons
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", line)]


@pytest.mark.parametrize("precision,device", [("bf16", "cuda:8.0"), ("int8", "cpu"), ("int4", "cpu"),
                                              ("int4", "cuda:7.5"), ("int4", "cuda:8.0"), ("int4", "cuda:9.0"),
                                              ("fp16", "cpu")])
def test_supported_requests_are_kept(precision, device):
    p = plan({"EMB_PROVIDER_MODEL_PRECISION": precision}, device=device)
    assert p.precision == precision and not any("fallback" in r for r in p.reasons)


def test_quantization_enabled_without_explicit_precision_uses_method():
    p = plan({"EMB_PROVIDER_ENABLE_QUANTIZATION": "true", "EMB_PROVIDER_QUANTIZATION_METHOD": "int4"})
    assert (p.precision, p.route, p.decided_by) == ("int4", "torch-bnb-nf4", "global")
    assert p.quantization["method"] == "int4"


def test_quantization_method_loses_to_explicit_precision_with_warning(caplog):
    env = {"EMB_PROVIDER_MODEL_PRECISION": "int8", "EMB_PROVIDER_ENABLE_QUANTIZATION": "true",
           "EMB_PROVIDER_QUANTIZATION_METHOD": "int4"}
    with caplog.at_level(logging.WARNING, logger="exporter"):
        p = plan(env)
    assert p.precision == "int8"
    assert "EMB_PROVIDER_QUANTIZATION_METHOD=int4 contradicts int8" in caplog.text


def test_unmatched_override_keys_warn(caplog):
    config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES": '{"typo-model": "fp16"}'})
    with caplog.at_level(logging.WARNING, logger="exporter"):
        resolve_all([MINILM], config, parse_device("cpu"), {})
    assert "typo-model" in caplog.text and "match no model" in caplog.text


# The precision guide's four usage examples.
def test_guide_example_1_high_performance_gpu():
    p = plan({"EMB_PROVIDER_MODEL_PRECISION": "fp16", "EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION": "true"},
             device="cuda:8.0")
    assert (p.precision, p.route) == ("fp16", "onnx-fp16")
    assert p.memory.enabled and p.memory.ort_arena_extend_strategy == "kSameAsRequested"


def test_guide_example_2_memory_optimized_int8():
    env = {"EMB_PROVIDER_MODEL_PRECISION": "int8", "EMB_PROVIDER_ENABLE_QUANTIZATION": "true",
           "EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION": "true"}
    p = plan(env, device="cpu")
    assert (p.precision, p.route, p.quantization["enabled"]) == ("int8", "onnx-int8-dynamic", True)
    # on a GPU the int8 graph would run its matrix products on the host CPU: the GPU's fp16 is served instead
    p = plan(env, device="cuda:8.0")
    assert (p.precision, p.route) == ("fp16", "onnx-fp16")
    assert any("MatMulIntegerToFloat" in r for r in p.reasons)


def test_guide_example_3_mixed_precision_by_group():
    config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION_OVERRIDES":
                              '{"small-models": "fp16", "large-models": "int8", "precision-critical": "fp32"}'})
    specs = [ModelSpec("a/small", "small", group="small-models"), ModelSpec("b/large", "large", group="large-models"),
             ModelSpec("c/crit", "crit", group="precision-critical")]
    plans = resolve_all(specs, config, parse_device("cpu"), {})
    assert [p.precision for p in plans] == ["fp16", "int8", "fp32"]
    assert all(p.decided_by == "override" for p in plans)
    # the same groups on a GPU: int8 falls back to fp16 (no GPU int8 kernels), the others are kept
    plans = resolve_all(specs, config, parse_device("cuda:8.0"), {})
    assert [p.precision for p in plans] == ["fp16", "fp16", "fp32"]
    assert all(p.decided_by == "override" for p in plans)


def test_guide_example_4_production():
    env = {"EMB_PROVIDER_MODEL_PRECISION": "fp16", "EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION": "true",
           "EMB_PROVIDER_LOG_LEVEL": "INFO"}
    p = plan(env, device="cuda:7.5")
    assert (p.precision, p.decided_by, p.memory.instance_count) == ("fp16", "global", 1)


def test_debug_log_shows_the_four_promised_things(caplog):
    with caplog.at_level(logging.DEBUG, logger="exporter"):
        plan({"EMB_PROVIDER_ENABLE_QUANTIZATION": "true"}, device="cpu", native="float32")
    text = caplog.text
    assert "device capabilities: cpu (CPU)" in text and "supports fp32, fp16, int8, int4" in text
    assert "native precision: float32" in text
    assert "chosen precision: int8 (route onnx-int8-dynamic, decided by global)" in text
    assert "quantization: {'enabled': True, 'method': 'int8'" in text


def test_plan_serialises_to_plain_data():
    data = plan(device="cuda:8.0").to_dict()
    assert data["precision"] == "fp16" and isinstance(data["reasons"], list) and data["memory"]["enabled"] is False


def test_resolve_as_builds_what_was_asked_and_says_so():
    """exporter eval measures every precision on this host: its plans say why precedence and fallback were skipped."""
    config = Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": "fp16"})
    int8 = resolve_as(MINILM, config, parse_device("cpu"), "int8", by="exporter eval")
    assert (int8.precision, int8.route, int8.runtime, int8.requested, int8.decided_by) == (
        "int8", "onnx-int8-dynamic", "onnx", "int8", "request")
    assert int8.reasons == ("requested int8 by exporter eval: built as asked (precedence and device fallback not "
                            "applied)",)
    assert int8.quantization["enabled"] and int8.quantization["method"] == "int8"
    resolved = resolve(MINILM, Config.from_env({"EMB_PROVIDER_MODEL_PRECISION": "int8"}), parse_device("cpu"))
    same = ("model", "name", "device", "requested", "precision", "route", "runtime", "quantization", "memory")
    assert {k: int8.to_dict()[k] for k in same} == {k: resolved.to_dict()[k] for k in same}
    bf16 = resolve_as(MINILM, config, parse_device("cpu"), "bf16", by="exporter eval")
    assert (bf16.precision, bf16.route, bf16.runtime) == ("bf16", "torch-bf16", "torch")
    assert bf16.reasons[1] == "   note: target cpu has no bf16; a plan for cpu would fall back to fp32"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; allowed: fp32, fp16, bf16, int8, int4"):
        resolve_as(MINILM, config, parse_device("cpu"), "fp8", by="exporter eval")

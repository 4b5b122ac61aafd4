"""Target parsing and the capability table (guide + toolchain extras)."""

import pytest

from exporter.devices import Device, detect_host, parse_device, resolve_device
from exporter.errors import ConfigError


@pytest.mark.parametrize("spelling,label,supported,recommended", [
    ("cpu", "cpu", ("fp32", "fp16", "int8", "int4"), "fp32"),
    ("CUDA", "cuda:8.0", ("fp32", "fp16", "bf16", "int4"), "fp16"),
    ("cuda:9.0", "cuda:9.0", ("fp32", "fp16", "bf16", "int4"), "fp16"),
    ("cuda:8.6", "cuda:8.6", ("fp32", "fp16", "bf16", "int4"), "fp16"),
    ("cuda:7.5", "cuda:7.5", ("fp32", "fp16", "int4"), "fp16"),
    ("cuda:6.1", "cuda:6.1", ("fp32", "fp16"), "fp16"),
    ("rocm", "rocm", ("fp32", "fp16"), "fp16"),
])
def test_capability_table(spelling, label, supported, recommended):
    device = parse_device(spelling)
    assert (device.label, device.supported, device.recommended) == (label, supported, recommended)
    assert parse_device(device.label).supported == device.supported  # the label round-trips


@pytest.mark.parametrize("spelling", ["cuda:6.1", "cuda:7.5", "cuda:8.0", "cuda:9.0", "rocm"])
def test_gpu_targets_say_why_int8_is_missing(spelling):
    # the int8 graph's kernels exist only in ONNX Runtime's CPU provider: a GPU target would run it on the host
    device = parse_device(spelling)
    assert "int8" not in device.supported
    reason = device.lacks("int8")
    assert "has no dynamic-int8 kernels (MatMulIntegerToFloat, DynamicQuantizeLinear)" in reason
    assert "the int8 graph would run its matrix products on the host CPU" in reason
    assert ("CUDA" if device.kind == "cuda" else "ROCm") in reason
    # on NVIDIA, the measured alternatives are named too: none beats fp16, so the plan refuses to pretend
    assert ("no GPU int8 route measured beats the fp16 route" in reason) is (device.kind == "cuda")


def test_missing_precision_without_a_known_cause_gets_the_generic_reason():
    assert parse_device("cuda:7.5").lacks("bf16") == "target cuda:7.5 has no bf16"
    assert parse_device("cpu").lacks("bf16") == "target cpu has no bf16"


@pytest.mark.parametrize("bad", ["gpu", "cuda:8", "cuda:x.y", "cuda:1.0", "", "cpu0"])
def test_bad_device_names_value_and_forms(bad):
    with pytest.raises(ConfigError) as err:
        parse_device(bad, source="--device")
    assert repr(bad) in str(err.value) or "capability" in str(err.value)


def test_auto_detects_this_host_without_a_gpu():
    # CI and this machine have no GPU: detection must fall back to CPU without raising.
    host = detect_host()
    assert isinstance(host, Device) and host.kind in ("cpu", "cuda", "rocm")
    assert resolve_device("auto") == host

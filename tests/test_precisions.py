"""The precision registry: every entry is complete and consistent, the registry is the only table (device support,
gate, tolerance, runtime are read from it), and importing it stays light."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.devices import parse_device
from exporter.errors import ConfigError
from exporter.precisions import NAMES, PRECISIONS, QUANTIZATION_METHODS, Precision, for_native_dtype, get
from exporter.triton.config import RUNTIME_LOADERS
from exporter.verify import STATISTICS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("cpu", "cuda", "cuda:9.0", "cuda:8.6", "cuda:7.5", "cuda:7.0", "cuda:6.1", "rocm")
ENTRIES = pytest.mark.parametrize("precision", list(PRECISIONS.values()), ids=list(PRECISIONS))


@ENTRIES
def test_entry_is_complete(precision: Precision):
    assert callable(precision.build) and callable(precision.supported_on)
    assert 0 < precision.gate_threshold <= 1
    assert precision.gate_statistic in STATISTICS
    assert 0 < precision.spearman_tolerance < 0.1
    assert precision.runtime in RUNTIME_LOADERS
    assert precision.route and precision.description and all(precision.guide)
    assert bool(precision.quantization_scheme) == precision.quantization_method


@ENTRIES
def test_one_module_per_precision_defines_it_and_its_build(precision: Precision):
    module = importlib.import_module(f"exporter.precisions.{precision.name}")
    assert module.PRECISION is precision
    assert precision.build.__module__ == module.__name__


def test_names_and_routes_are_unique_and_in_order_of_decreasing_fidelity():
    assert NAMES == tuple(PRECISIONS) == ("fp32", "fp16", "bf16", "int8", "int4")
    assert all(name == p.name for name, p in PRECISIONS.items())
    # route names are recorded in plans, report.json and manifest.json: they do not change
    assert {n: p.route for n, p in PRECISIONS.items()} == {
        "fp32": "onnx-fp32", "fp16": "onnx-fp16", "bf16": "torch-bf16", "int8": "onnx-int8-dynamic",
        "int4": "torch-bnb-nf4"}
    assert QUANTIZATION_METHODS == ("int8", "int4")


def test_get_names_the_allowed_values():
    assert get("int8") is PRECISIONS["int8"]
    with pytest.raises(ConfigError, match=r"unknown precision 'fp8'; allowed: fp32, fp16, bf16, int8, int4$"):
        get("fp8")


@pytest.mark.parametrize("dtype,expected", [("float16", "fp16"), ("half", "fp16"), ("bfloat16", "bf16"),
                                            ("float32", None), (None, None)])
def test_native_dtype_maps_to_a_precision(dtype, expected):
    assert for_native_dtype(dtype) == expected


@pytest.mark.parametrize("spelling", DEVICES)
@ENTRIES
def test_supported_on_agrees_with_the_device(precision: Precision, spelling):
    device = parse_device(spelling)
    reason = precision.supported_on(device)
    assert (reason is None) == (precision.name in device.supported)
    if reason is not None:
        assert device.lacks(precision.name) == reason


def test_importing_the_registry_imports_no_heavy_library():
    """The CLI reads the registry before it decides what to import: plan and flag checks stay fast."""
    script = ("import sys\nimport exporter.precisions, exporter.options, exporter.devices, exporter.plan\n"
              "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.stdout.strip() == "[]", out.stderr


def test_only_int8_depends_on_the_cpus_int8_kernels():
    # what `exporter plan --why` lists the per-CPU-kind expectations for (an ONNX Runtime integer-GEMM graph)
    assert [name for name, p in PRECISIONS.items() if p.cpu_int8_kernels] == ["int8"]


def test_fp16_drops_the_identical_casts_that_onnxruntime_before_1_32_adds():
    """onnxruntime-gpu 1.31.1's float16 converter gives each consumer its own copy of one Cast node (same name, same
    output): ONNX Runtime refuses that graph. The route keeps one copy; a node that merely shares a name stays."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from exporter.precisions.fp16 import drop_duplicate_nodes

    cast = helper.make_node("Cast", ["x"], ["x_cast_to_fp32"], to=TensorProto.FLOAT, name="x_cast_to_fp32_node")
    nodes = [cast, helper.make_node("Sqrt", ["x_cast_to_fp32"], ["a"], name="sqrt"),
             helper.make_node("Cast", ["x"], ["x_cast_to_fp32"], to=TensorProto.FLOAT, name="x_cast_to_fp32_node"),
             helper.make_node("Neg", ["x_cast_to_fp32"], ["b"], name="neg")]
    info = helper.make_tensor_value_info("x_cast_to_fp32", TensorProto.FLOAT, [2])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
                              value_info=[info, info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(Exception, match="same node name"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert drop_duplicate_nodes(model.graph) == 1
    assert [n.name for n in model.graph.node] == ["x_cast_to_fp32_node", "sqrt", "neg"]
    assert len(model.graph.value_info) == 1
    onnx.checker.check_model(model)
    a, b = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.array([4, 9], dtype=np.float16)})
    assert a.tolist() == [2, 3] and b.tolist() == [-4, -9]
    assert drop_duplicate_nodes(model.graph) == 0


@pytest.mark.parametrize("native, device, expected", [
    ("bfloat16", "cuda:8.0", "bfloat16"),  # trained in bf16, the card has it: activations keep bf16's range
    ("bfloat16", "cuda:9.0", "bfloat16"),
    ("bfloat16", "cuda:7.5", "float16"),  # no bf16 on Turing
    ("bfloat16", "cpu", "float16"),  # a CPU target computes in float32; the GPU entry keeps the default
    ("float32", "cuda:9.0", "float16"),
    (None, "cuda:9.0", "float16"),
])
def test_int4_gpu_compute_dtype_follows_a_bf16_model_where_the_target_has_bf16(native, device, expected):
    from types import SimpleNamespace

    from exporter.precisions.int4 import cuda_compute_dtype

    assert cuda_compute_dtype(SimpleNamespace(native_dtype=native, device=device)) == expected
    assert cuda_compute_dtype(None) == "float16"  # a build job without a plan (tests, tools)

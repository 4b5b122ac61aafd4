"""Per-token int8 rewrite on small real ONNX graphs run by ONNX Runtime (the bundled model's route is covered in
test_routes_onnx.py): accuracy against the float graph, independence from batch neighbours, calibration that
ignores padding, and the SmoothQuant scale formula."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.precisions.smoothquant import (
    PAIR_BUDGET,
    activation_ranges,
    pair_sums,
    quantize_per_token,
    quantize_weight,
    saturating_gemms,
    smoothing_scales,
    weight_matmul_groups,
)

RNG = np.random.default_rng(0)
K, N = 32, 24


def two_layer_graph() -> onnx.ModelProto:
    """x [B,S,K] -> (x@W1, x@W2 share x) -> relu(sum) @ W3, with one outlier input channel like BERT's."""
    w1, w2, w3 = (RNG.normal(0, 0.2, shape).astype(np.float32) for shape in ((K, N), (K, N), (N, K)))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1"),
             helper.make_node("MatMul", ["x", "w2"], ["b"], name="m2"),
             helper.make_node("Add", ["a", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("MatMul", ["d", "w3"], ["y"], name="m3")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", K]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "S"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", K])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def activations(batch: int, seq: int) -> np.ndarray:
    x = RNG.normal(0, 1, (batch, seq, K)).astype(np.float32)
    x[..., 3] *= 40  # an outlier channel: what one scale per tensor handles badly
    return x


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    if any(i.name == "attention_mask" for i in session.get_inputs()):
        feeds["attention_mask"] = np.ones(x.shape[:2], np.int64)
    return session.run(["y"], feeds)[0]


@pytest.fixture(scope="module")
def rewritten():
    model = two_layer_graph()
    batches = [{"x": activations(4, 6), "attention_mask": np.ones((4, 6), np.int64)} for _ in range(4)]
    ranges = activation_ranges(model, batches)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return model, quantize_per_token(copy, ranges)


def test_groups_share_an_input_and_skip_activation_products():
    groups = weight_matmul_groups(two_layer_graph())
    assert [(g.source, [n.name for n in g.nodes]) for g in groups] == [("x", ["m1", "m2"]), ("d", ["m3"])]


def test_rewritten_graph_is_int8_and_close_to_float(rewritten):
    model, quantized = rewritten
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 3 and "MatMul" not in ops
    assert ops.count("QuantizeLinear") == 2  # x is quantized once for both of its products
    kinds = {i.name: i.data_type for i in quantized.graph.initializer}
    assert not {"w1", "w2", "w3"} & set(kinds)  # float weights are gone
    x = activations(3, 5)
    want, got = run(model, x), run(quantized, x)
    cos = np.sum(want * got, axis=-1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.min() > 0.999, cos.min()


def test_a_row_does_not_depend_on_its_batch_neighbours(rewritten):
    _, quantized = rewritten
    x = activations(1, 4)
    huge = activations(1, 4) * 50  # a neighbour with much larger values would coarsen a per-tensor scale
    alone = run(quantized, x)[0]
    batched = run(quantized, np.concatenate([huge, x]))[1]
    np.testing.assert_array_equal(alone, batched)


def test_calibration_ignores_padded_positions():
    model = two_layer_graph()
    x = activations(2, 4)
    mask = np.ones((2, 4), np.int64)
    x[1, 3, :] = 1e6  # a padded position with garbage
    mask[1, 3] = 0
    ranges = activation_ranges(model, [{"x": x, "attention_mask": mask}])
    np.testing.assert_allclose(ranges["x"], np.abs(x[mask.astype(bool)]).max(axis=0))
    assert set(ranges) == {"x", "d"}


def test_smoothing_scales_follow_the_formula():
    act = np.array([100.0, 1.0, 0.0], np.float32)  # the dead channel is floored, not divided by zero
    w1 = np.array([[1.0], [4.0], [1.0]], np.float32)
    w2 = np.array([[2.0], [1.0], [1.0]], np.float32)
    s = smoothing_scales(act, [w1, w2], alpha=0.5)
    np.testing.assert_allclose(s, [np.sqrt(100 / 2), np.sqrt(1 / 4), np.sqrt(1e-5 / 1)], rtol=1e-5)


def test_weight_quantization_is_symmetric_per_column_within_the_pair_budget():
    # column 0: the largest pair is rows 0+1 (3.0); column 1: the odd last row pairs with padding (0.25)
    w = np.array([[1.0, -0.5], [-2.0, 0.1], [0.5, 0.1], [0.0, 0.0], [0.1, 0.25]], np.float32)
    q, scale = quantize_weight(w)
    assert q.dtype == np.int8
    np.testing.assert_allclose(scale, [3.0 / 127, 0.6 / 127])
    np.testing.assert_allclose(q * scale, w, atol=scale.max() / 2)
    assert pair_sums(q).max() <= PAIR_BUDGET == 128


def test_a_large_weight_beside_small_ones_keeps_almost_eight_bits():
    w = RNG.normal(0, 0.05, (64, 8)).astype(np.float32)
    w[10, :] = 1.0  # one outlier row: its pair partner is small, so it may use ~127 steps, not 64 (reduce_range)
    q, _ = quantize_weight(w)
    assert np.abs(q[10]).min() >= 110
    random = RNG.normal(0, 1, (384, 384)).astype(np.float32)
    assert pair_sums(quantize_weight(random)[0]).max() <= PAIR_BUDGET


def full_scale_pair(quantized: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """A copy of ``quantized`` whose first GEMM has one pair of two full-scale weights (255 * 254 > 32767), and
    that GEMM's name."""
    tampered = onnx.ModelProto()
    tampered.CopyFrom(quantized)
    gemm = next(n for n in tampered.graph.node if n.op_type == "MatMulIntegerToFloat")
    weight = next(i for i in tampered.graph.initializer if i.name == gemm.input[1])
    full = numpy_helper.to_array(weight).copy()
    full[0:2, 0] = 127
    weight.CopyFrom(numpy_helper.from_array(full, weight.name))
    return tampered, gemm.name


def test_saturating_gemms_names_full_range_weights(rewritten):
    _, quantized = rewritten
    assert saturating_gemms(quantized) == []
    tampered, name = full_scale_pair(quantized)
    found = saturating_gemms(tampered)
    assert len(found) == 1 and name in found[0] and "254 > 128" in found[0]


def test_the_int8_route_refuses_a_graph_that_could_saturate(rewritten, tmp_path):
    from exporter.errors import ExportError
    from exporter.precisions.int8 import _refuse_cpu_dependent

    onnx.save(rewritten[1], str(tmp_path / "ok.onnx"))
    _refuse_cpu_dependent(tmp_path / "ok.onnx")
    onnx.save(full_scale_pair(rewritten[1])[0], str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportError, match=r"other vectors on AVX2-only CPUs .*\(1 integer GEMMs"):
        _refuse_cpu_dependent(tmp_path / "bad.onnx")

"""int8 matrix products with one activation scale per token, after SmoothQuant channel scaling.

Why this module exists: ONNX Runtime's dynamic quantizer gives every activation tensor *one* scale. In a BERT-like
encoder a few channels (and the [CLS]/[SEP] rows) are far larger than the rest, so one scale leaves the ordinary
values of a short input with a handful of int8 steps, which misses the gate. ONNX Runtime's ``MatMulNBits``
(per-block activation scales) passes it but runs far slower than the plain quantizer (docs/quality.md). Neither
library offers per-token dynamic int8, so it is composed here from standard ONNX ops around ONNX Runtime's
``MatMulIntegerToFloat`` kernel (the same int8 GEMM the dynamic quantizer uses):

* SmoothQuant (Xiao et al., 2022): per input channel k, ``s_k = max|X_k|^alpha / max|W_k|^(1-alpha)`` moves the
  activation outliers into the weights (``X/s`` times ``s*W`` is the same product). ``max|X_k|`` comes from a small
  calibration corpus (``data/calibration.txt``, disjoint from the gate's verification set). Matrix products that
  read the same tensor (Q, K and V) share one ``s``, so that tensor is scaled and quantized once.
* per token: each row of ``X/s`` gets its own scale ``max|row|/127`` at run time (``ReduceMax`` + ``QuantizeLinear``
  on the row-normalised values, uint8 with zero point 128), so a row never depends on the other rows of the batch:
  a vector is the same whatever it is batched with.
* weights: symmetric int8 per output column; ``MatMulIntegerToFloat`` applies the column scales in the GEMM's
  output stage, and one ``Mul`` applies the row scales.
* the same vectors on every CPU: ONNX Runtime picks its u8 x s8 GEMM by CPUID. VNNI, AMX and ARM64 kernels sum in
  int32, exactly; x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) use ``vpmaddubsw``, which adds each adjacent
  pair of products along K in int16 *with saturation*. With uint8 activations up to 255, a pair saturates once
  ``|w_2i| + |w_2i+1| > 128``. Each column's scale is therefore set so that every adjacent pair of its int8
  weights sums to at most :data:`PAIR_BUDGET` in magnitude (``255 * 128 = 32640 <= 32767``): the GEMM is exact
  on every kernel, and the fast u8 x s8 path stays (u8 x u8, the other exact option, runs on slower kernels on
  VNNI/AMX with onnxruntime 1.32). Plain 7-bit weights (``reduce_range``) are exact too but miss the 0.99 gate; the pair
  budget keeps a single large weight at up to 127 steps when its neighbour is small (docs/quality.md).
  :func:`saturating_gemms` checks the rule on any graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

ALPHA = 0.6  # measured on all-MiniLM-L6-v2: 0.5 -> min cos 0.988, 0.6/0.7 -> 0.994, 0.8 -> 0.914 (docs/quality.md)
_FLOOR = 1e-5  # channel maxima below this are treated as this (dead channels must not blow up 1/s)
INT16_MAX = 32767
UINT8_MAX = 255
PAIR_BUDGET = INT16_MAX // UINT8_MAX  # 128: the largest |w_2i| + |w_2i+1| no uint8 activation pair can saturate
INTEGER_GEMMS = ("MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul")  # their B input is index 1
_SHARED = {"one": np.array(1.0, np.float32), "inv127": np.array(1 / 127.0, np.float32),
           "eps": np.array(1e-12, np.float32), "zp": np.array(128, np.uint8)}


@dataclass
class Group:
    """Weight matrix products that read one activation tensor (quantized once for all of them)."""

    source: str
    nodes: list[onnx.NodeProto]


def weight_matmul_groups(model: onnx.ModelProto) -> list[Group]:
    """``MatMul`` nodes whose second input is a 2-D float initializer, grouped by their first input, in graph
    order. Activation-by-activation products (attention scores) are left alone."""
    weights = {i.name: i for i in model.graph.initializer
               if len(i.dims) == 2 and i.data_type == TensorProto.FLOAT}
    groups: dict[str, Group] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            groups.setdefault(node.input[0], Group(node.input[0], [])).nodes.append(node)
    return list(groups.values())


def activation_ranges(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel ``max |x|`` of every weight-product input over the real (unmasked) tokens of ``batches``.

    The graph is run as is by ONNX Runtime's CPU provider with those tensors added as outputs; a 2-D input (a
    Dense layer after pooling) counts every row."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    sources = [group.source for group in weight_matmul_groups(model)]
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in sources if name not in existing)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    ranges: dict[str, np.ndarray] = {}
    for feeds in batches:
        mask = feeds["attention_mask"].astype(bool)
        for name, value in zip(sources, session.run(sources, {k: feeds[k] for k in names})):
            rows = value[mask] if value.ndim == 3 else value.reshape(-1, value.shape[-1])
            peak = np.abs(rows).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smoothing_scales(act_max: np.ndarray, weights: list[np.ndarray], alpha: float = ALPHA) -> np.ndarray:
    """SmoothQuant's per-input-channel ``s``; weights sharing the input share it (max over their rows)."""
    w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    return (np.maximum(act_max, _FLOOR) ** alpha / np.maximum(w_max, _FLOOR) ** (1 - alpha)).astype(np.float32)


def pair_sums(weight: np.ndarray) -> np.ndarray:
    """``|w[2i, n]| + |w[2i+1, n]|`` for every adjacent pair of rows (an odd last row pairs with the kernels' zero
    padding), as int64 for integer matrices."""
    magnitude = np.abs(weight.astype(np.int64) if weight.dtype.kind in "iu" else weight)
    if magnitude.shape[0] % 2:
        magnitude = np.concatenate([magnitude, np.zeros_like(magnitude[:1])])
    return magnitude[0::2] + magnitude[1::2]


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column whose adjacent pairs fit :data:`PAIR_BUDGET`: (int8 matrix, float32
    column scales). Scaling the largest pair sum to ``PAIR_BUDGET - 1`` leaves room for rounding both up."""
    scale = (np.maximum(pair_sums(weight).max(axis=0), 1e-12) / (PAIR_BUDGET - 1)).astype(np.float32)
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale


def saturating_gemms(model: onnx.ModelProto) -> list[str]:
    """Integer GEMMs of ``model`` whose result could differ between CPUs, each as a line naming the node and why.

    The activations are taken to be uint8, as ONNX Runtime's dynamic quantizers and this module make them. A
    GEMM is safe when its constant B is uint8 (the u8 x u8 kernels widen to 16 bits before multiplying) or int8
    with every adjacent pair within :data:`PAIR_BUDGET`. A B that is not a constant is reported, since its worst
    case cannot be bounded from the graph."""
    weights = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in INTEGER_GEMMS:
            continue
        if node.input[1] not in weights:
            found.append(f"{node.name or node.output[0]}: B ({node.input[1]}) is not a constant")
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if weight.dtype == np.uint8:
            continue
        worst = int(pair_sums(weight).max()) if weight.size else 0
        if weight.dtype != np.int8 or worst > PAIR_BUDGET:
            found.append(f"{node.name or node.output[0]}: {weight.dtype} weights, largest adjacent pair "
                         f"|w_2i|+|w_2i+1| = {worst} > {PAIR_BUDGET} (x 255 overflows int16 on AVX2)")
    return found


class _Rewriter:
    """Builds the replacement nodes and initializers; names are prefixed so they never clash with the graph's."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.initializers: list[onnx.TensorProto] = [numpy_helper.from_array(v, f"smq_{k}")
                                                     for k, v in _SHARED.items()]

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def quantize_rows(self, tag: str, source: str, inv_s: np.ndarray) -> tuple[list[onnx.NodeProto], str, str]:
        """Nodes turning ``source`` into uint8 rows (zero point 128); returns (nodes, quantized, row scales)."""
        def n(op, inputs, **attrs):
            return helper.make_node(op, inputs, [f"{tag}_{op.lower()}"], name=f"{tag}_{op}", **attrs)

        nodes = [n("Mul", [source, self.const(f"{tag}_inv_s", inv_s)])]
        nodes.append(n("Abs", [nodes[-1].output[0]]))
        if self.opset >= 18:  # axes moved from an attribute to an input
            nodes.append(n("ReduceMax", [nodes[-1].output[0], self.const(f"{tag}_axes", np.array([-1]))],
                           keepdims=1))
        else:
            nodes.append(n("ReduceMax", [nodes[-1].output[0]], axes=[-1], keepdims=1))
        nodes.append(n("Max", [nodes[-1].output[0], "smq_eps"]))
        scale = helper.make_node("Mul", [nodes[-1].output[0], "smq_inv127"], [f"{tag}_row_scale"],
                                 name=f"{tag}_RowScale")
        unit = helper.make_node("Div", [nodes[0].output[0], scale.output[0]], [f"{tag}_unit"], name=f"{tag}_Div")
        quant = helper.make_node("QuantizeLinear", [unit.output[0], "smq_one", "smq_zp"], [f"{tag}_q"],
                                 name=f"{tag}_Quantize")
        return nodes + [scale, unit, quant], quant.output[0], scale.output[0]

    def matmul(self, tag: str, node: onnx.NodeProto, quantized: str, row_scale: str,
               weight: np.ndarray) -> list[onnx.NodeProto]:
        """``node`` as int8 GEMM (column scales fused) times the row scales, writing ``node``'s own output."""
        q_weight, col_scale = quantize_weight(weight)
        gemm = helper.make_node("MatMulIntegerToFloat",
                                [quantized, self.const(f"{tag}_w", q_weight), "smq_one",
                                 self.const(f"{tag}_w_scale", col_scale), "smq_zp"],
                                [f"{tag}_cols"], name=f"{tag}_MatMulIntegerToFloat", domain="com.microsoft")
        return [gemm, helper.make_node("Mul", [gemm.output[0], row_scale], [node.output[0]], name=f"{tag}_Rows")]


def quantize_per_token(model: onnx.ModelProto, ranges: dict[str, np.ndarray],
                       alpha: float = ALPHA) -> onnx.ModelProto:
    """Rewrite every weight ``MatMul`` of ``model`` (in place, also returned) as smoothed per-token int8.

    ``ranges`` is :func:`activation_ranges` of this same graph. The float weights are replaced by int8 ones."""
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    rewriter, before, replace, used = _Rewriter(_opset(model)), {}, {}, set()
    for index, group in enumerate(weight_matmul_groups(model)):
        arrays = [numpy_helper.to_array(weights[node.input[1]]).astype(np.float32) for node in group.nodes]
        s = smoothing_scales(ranges[group.source], arrays, alpha)
        nodes, quantized, row_scale = rewriter.quantize_rows(f"smq{index}", group.source, (1.0 / s))
        before[group.nodes[0].output[0]] = nodes
        for j, (node, array) in enumerate(zip(group.nodes, arrays)):
            replace[node.output[0]] = rewriter.matmul(f"smq{index}_{j}", node, quantized, row_scale, array * s[:, None])
            used.add(node.input[1])
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        new_nodes += before.get(node.output[0], []) + replace.get(node.output[0], [node])
    del graph.node[:]
    graph.node.extend(new_nodes)
    read = {name for node in new_nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name not in used or i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept + rewriter.initializers)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    log.debug("per-token int8: %d matrix products in %d groups (alpha %.2f)", len(replace), len(before), alpha)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

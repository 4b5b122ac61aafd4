"""A numpy model of the int8 GEMM that ONNX Runtime runs on x86 CPUs without VNNI, for tests on any CPU.

On AVX2 and AVX-512 without VNNI, MLAS multiplies uint8 activations by int8 weights with ``vpmaddubsw``: each
adjacent pair of products along K, ``a[2i]*b[2i] + a[2i+1]*b[2i+1]``, is summed in int16 with saturation before
the pairs are widened and added in int32 (onnxruntime/core/mlas/lib/x86_64/QgemmU8X8KernelAvx2.S). VNNI, AMX and
ARM64 kernels add in int32 exactly. Comparing :func:`gemm_pairs_saturated` with :func:`gemm_exact` therefore
shows, on whatever CPU the test runs, whether a graph would give other vectors on an AVX2 server.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROWS_PER_CHUNK = 16  # bounds the rows x K/2 x N int32 pair tensor (~75 MB at K=1536, N=384)


def gemm_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int32-exact ``a @ b`` of a uint8 [M, K] and an int8 [K, N] matrix (VNNI / AMX / ARM64)."""
    return a.astype(np.int64) @ b.astype(np.int64)


def gemm_pairs_saturated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` as ``vpmaddubsw`` forms it: adjacent pairs of products clipped to int16, then summed."""
    if a.shape[1] % 2:  # the kernels pad K with zeros
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    even, odd = b[0::2].astype(np.int32), b[1::2].astype(np.int32)
    out = []
    for start in range(0, a.shape[0], ROWS_PER_CHUNK):
        rows = a[start:start + ROWS_PER_CHUNK].astype(np.int32)
        pairs = rows[:, 0::2, None] * even[None] + rows[:, 1::2, None] * odd[None]
        out.append(np.clip(pairs, -32768, 32767).sum(axis=1, dtype=np.int64))
    return np.concatenate(out)


def integer_gemm_operands(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray,
                                                                                           np.ndarray]]:
    """(node name, uint8 activations as [rows, K], int8 weights [K, N]) of every ``MatMulIntegerToFloat`` of
    ``model`` with a constant B, for one run on ``feeds`` (CPU provider)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    weights = {i.name: i for i in probe.graph.initializer}
    nodes = [n for n in probe.graph.node if n.op_type == "MatMulIntegerToFloat" and n.input[1] in weights]
    sources = list(dict.fromkeys(n.input[0] for n in nodes))
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.UINT8, None) for name in sources)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    values = dict(zip(sources, session.run(sources, {k: v for k, v in feeds.items() if k in names})))
    return [(n.name, values[n.input[0]].reshape(-1, values[n.input[0]].shape[-1]),
             numpy_helper.to_array(weights[n.input[1]])) for n in nodes]

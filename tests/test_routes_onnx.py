"""ONNX routes (fp32, fp16, int8) on the bundled all-MiniLM-L6-v2: each artefact passes its default gate, has the
documented layout and graph signature, and its runtime loader reproduces sentence-transformers."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter.cpu import cpu_info
from exporter.precisions.smoothquant import saturating_gemms
from exporter.triton.runtime.onnx_encoder import OnnxEncoder
from exporter.verify import cosines, encode

from export_helpers import bundled_dir
from int8_kernels import gemm_exact, gemm_pairs_saturated, integer_gemm_operands

pytestmark = pytest.mark.slow
# fp32 is gated on the whole verification set; the derived routes on a spread subset (tests/conftest.py ARTEFACTS)
LIMITS = {"fp32": None, "fp16": 64, "int8": 64}
TARGETS = {"fp32": "cpu", "fp16": "cuda:8.0", "int8": "cpu"}  # fp16 needs a GPU target; the others are served here
MAX_SIZE_RATIO = {"fp32": 1.0, "fp16": 0.51, "int8": 0.26}


@pytest.fixture(scope="module")
def artefacts(bundled_artefact):
    """The session's shared artefacts (tests/conftest.py ARTEFACTS: targets and gate sizes), exported once."""
    return {p: bundled_artefact(p) for p in LIMITS}


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_dir()), device="cpu")


@pytest.mark.parametrize("precision", list(LIMITS))
def test_gate_passes_with_default_threshold(artefacts, precision):
    gate = artefacts[precision].report["gate"]
    assert gate["passed"] and not gate["accepted_degraded"]
    assert gate["statistic"] == "min_cosine"
    assert gate["min_cosine"] >= gate["threshold"] == {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}[precision]
    assert gate["min_cosine"] <= gate["p1"] <= gate["mean_cosine"] <= 1.0 + 1e-6
    assert gate["sentences"] == (64 if LIMITS[precision] else gate["sentences"]) and gate["sentences"] >= 64
    assert len(gate["worst"]) == 5 and all("text" in w and "cosine" in w for w in gate["worst"])


def test_fp32_gated_on_whole_verification_set(artefacts):
    from exporter.verification_set import verification_sentences

    assert artefacts["fp32"].report["gate"]["sentences"] == len(verification_sentences()) >= 250


@pytest.mark.parametrize("precision", list(LIMITS))
def test_report_contents(artefacts, precision):
    path, report = artefacts[precision].path, artefacts[precision].report
    assert path.name == f"minilm-{precision}"
    assert report["name"] == path.name and report["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (report["precision"], report["runtime"], report["output"]) == (precision, "onnx", "sentence_embedding")
    assert report["route"] == report["plan"]["route"] and report["plan"]["precision"] == precision
    assert report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert (report["dim"], report["max_seq_length"]) == (384, 256)
    assert {"model.onnx", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
            "tokenizer/special_tokens_map.json"} <= set(report["files"])
    for rel, record in report["files"].items():
        data = (path / rel).read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert 0 < report["size_ratio_vs_fp32"] <= MAX_SIZE_RATIO[precision]
    assert {"export", "gate", "total"} <= set(report["timings"])
    assert {"onnxruntime", "torch", "transformers", "sentence-transformers"} <= set(report["versions"])
    assert report["device"] == TARGETS[precision]
    assert report["cpu"] == cpu_info().to_dict() and report["cpu"]["int8_kind"]  # the gate's CPU, named
    assert sorted(p.name for p in path.iterdir()) == ["model.onnx", "report.json", "tokenizer"]


@pytest.mark.parametrize("precision", list(LIMITS))
def test_graph_signature(artefacts, precision):
    model = onnx.load(str(artefacts[precision].path / "model.onnx"), load_external_data=False)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for tensor in model.graph.input:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
        assert len(dims) == 2 and all(isinstance(d, str) and d for d in dims), dims  # dynamic batch, sequence
    (out,) = model.graph.output
    assert out.name == "sentence_embedding" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 384


@pytest.mark.parametrize("precision", list(LIMITS))
def test_runtime_matches_sentence_transformers_in_any_batch(artefacts, reference_model, precision):
    sentences = ["hi", "A man is playing a guitar on the street corner.", "東京タワーは夜になるときれいに光ります。",
                 "def add(a, b): return a + b", "word " * 400]
    encoder = OnnxEncoder(str(artefacts[precision].path), threads=2)
    assert encoder.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    tokenizer_dir = artefacts[precision].path / "tokenizer"
    batched = encode(encoder, tokenizer_dir, sentences, 256)
    single = np.concatenate([encode(encoder, tokenizer_dir, [s], 256) for s in sentences])
    reference = reference_model.encode(sentences)
    threshold = artefacts[precision].report["gate"]["threshold"]
    assert batched.dtype == np.float32 and batched.shape == (5, 384)
    assert cosines(batched, reference).min() >= threshold
    assert cosines(single, reference).min() >= threshold
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-3)  # Normalize is in the graph


def test_fp16_graph_stores_half_weights(artefacts):
    model = onnx.load(str(artefacts["fp16"].path / "model.onnx"))
    kinds = {init.data_type for init in model.graph.initializer if len(init.dims) == 2}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds


def test_int8_graph_has_no_float_matrices(artefacts):
    model = onnx.load(str(artefacts["int8"].path / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 36 and "MatMul" not in ops  # 6 layers x (Q, K, V, out, FFN x 2)
    assert ops.count("QuantizeLinear") == 24  # Q, K and V share one quantized input
    big_float = [i.name for i in model.graph.initializer
                 if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) > 100_000]
    assert big_float == []


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_layer_gets_fused_attention(artefacts, precision):
    # without it the fp16 graph runs at ~0.7x of torch fp16 on a GPU (docs/benchmarks/gpu.md); int8 keeps the
    # Q/K/V projections outside the fused node (MultiHeadAttention) so that they can be quantized
    optimizer = artefacts[precision].report["route_details"]["optimizer"]
    assert optimizer["attention_fused_layers"] == "6/6"
    assert optimizer["fused"]["MultiHeadAttention" if precision == "int8" else "Attention"] == 6


def test_int8_vectors_do_not_depend_on_batch_neighbours(artefacts):
    # one activation scale per token: what else is in the batch cannot move a vector
    encoder = OnnxEncoder(str(artefacts["int8"].path), threads=2)
    tokenizer_dir = artefacts["int8"].path / "tokenizer"
    texts = ["yes", "A man is playing a guitar on the street corner.", "word " * 300]
    batched = encode(encoder, tokenizer_dir, texts, 256, batch=3)
    single = np.concatenate([encode(encoder, tokenizer_dir, [t], 256) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


# inputs whose activations reach the ends of the uint8 range (they saturated the old graph on AVX2 CPUs)
HARD_TEXTS = ["ISBN 978-3-16-148410-0", "?", "a" * 400, "Visit https://example.org/docs/v2/index.html?lang=en"]


def test_int8_gemms_are_exact_on_every_cpu(artefacts):
    # the graph invariant: every adjacent weight pair within 128, so 255 x 128 never overflows int16
    model = onnx.load(str(artefacts["int8"].path / "model.onnx"))
    assert saturating_gemms(model) == []
    assert artefacts["int8"].report["route_details"]["int8"]["saturating_gemms"] == 0
    # and its consequence, on this CPU whatever it is: the AVX2 kernel's arithmetic, modelled in numpy, gives
    # every GEMM's exact sums on the real activations of hard inputs
    feeds = _token_feeds(artefacts["int8"].path, HARD_TEXTS)
    operands = integer_gemm_operands(model, feeds)
    assert len(operands) == 36
    for name, a, b in operands:
        np.testing.assert_array_equal(gemm_pairs_saturated(a, b), gemm_exact(a, b), err_msg=name)


def test_the_saturation_check_fails_the_full_range_recipe(artefacts):
    # the recipe before the fix: weights scaled to +-127 per column. Same activations, same float weights: the
    # model of the AVX2 kernel must see overflowing pairs, and the graph check must name the GEMMs
    model = onnx.load(str(artefacts["int8"].path / "model.onnx"))
    operands = integer_gemm_operands(model, _token_feeds(artefacts["int8"].path, HARD_TEXTS))
    scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    gemms = {n.name: n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"}
    differs = 0
    for name, a, b in operands:
        float_weight = b.astype(np.float32) * scales[gemms[name].input[3]]
        full = np.clip(np.round(float_weight / (np.abs(float_weight).max(axis=0) / 127)), -127, 127)
        full = full.astype(np.int8)
        differs += not np.array_equal(gemm_pairs_saturated(a, full), gemm_exact(a, full))
        model.graph.initializer.append(numpy_helper.from_array(full, gemms[name].input[1] + "_full"))
        gemms[name].input[1] += "_full"
    assert differs >= 1
    assert len(saturating_gemms(model)) == 36


def _token_feeds(artefact, texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(artefact / "tokenizer"))
    feeds = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    return {k: np.asarray(v, np.int64) for k, v in feeds.items()}


def test_unfused_attention_is_a_warning(caplog):
    from exporter.precisions import RouteResult
    from exporter.precisions._onnx import check_attention_fusion

    result = RouteResult(files=[], fp32_bytes=0, details={"optimizer": {}})
    with caplog.at_level("WARNING", logger="exporter.precisions._onnx"):
        check_attention_fusion("bert", {"SkipLayerNormalization": 24}, {"num_hidden_layers": 24}, result)
    assert result.details["optimizer"]["attention_fused_layers"] == "0/24"
    assert "attention fused in 0 of 24 layers" in caplog.text and "onnxruntime>=1.32" in caplog.text

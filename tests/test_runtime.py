"""The model boundary is float32 for every precision, by construction (exporter/triton/runtime/).

A Float/Half dtype mismatch (``expected scalar type Float but found Half``) happens when a half-precision model
meets float32 tensors at its edge, or hands half vectors to code that expects float32. Here the edge is the same
for every precision: int64 token ids in, float32 ``[n, dim]`` out. Each precision's artefact (fp16/bf16 built for a
GPU target, as served there) is fed one int64 token contract through the runtime class the Triton model runs, and
the Triton configs of every precision declare TYPE_FP32. The torch routes are also run in the compute dtype they
use on a GPU (bf16 always; int4 fp16 there), so the half-compute path is exercised on this CPU too.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from exporter.precisions import PRECISIONS
from exporter.triton.config import (
    EMBEDDING_OUTPUT,
    ArtefactInfo,
    ServingOptions,
    encoder_config,
    ensemble_config,
    runtime_class,
)
from exporter.triton.runtime.torch_encoder import ENCODER_JSON

pytestmark = pytest.mark.slow
ONNX = [name for name, p in PRECISIONS.items() if p.runtime == "onnx"]
TORCH = [name for name, p in PRECISIONS.items() if p.runtime == "torch"]
SENTENCES = ["hi", "A man is playing a guitar on the street corner.", "東京タワーは夜になるときれいに光ります。"]


@pytest.fixture(scope="module")
def token_feeds(bundled_artefact):
    """One int64 [3, seq] token contract, padded, tokenized by the fp32 artefact's tokenizer: every precision gets
    these same arrays."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_artefact("fp32").path / "tokenizer"))
    feeds = tokenizer(SENTENCES, padding=True, return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in feeds.items()}


def check_boundary(encoder, feeds, dim: int) -> np.ndarray:
    vectors = encoder(feeds)
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.shape == (len(SENTENCES), dim)
    assert np.isfinite(vectors).all()
    return vectors


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_every_precision_takes_int64_tokens_and_returns_float32_vectors(bundled_artefact, token_feeds, precision):
    artefact = bundled_artefact(precision)
    report = artefact.report
    encoder = runtime_class(report["runtime"])(str(artefact.path), threads=2)
    vectors = check_boundary(encoder, token_feeds, report["dim"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    int32_feeds = {name: value.astype(np.int32) for name, value in token_feeds.items()}
    np.testing.assert_array_equal(check_boundary(encoder, int32_feeds, report["dim"]), vectors)  # cast, not refused


@pytest.mark.parametrize("precision", ONNX)
def test_onnx_graphs_take_int64_and_give_float32_at_the_boundary(bundled_artefact, precision):
    graph = onnx.load(str(bundled_artefact(precision).path / "model.onnx"), load_external_data=False).graph
    assert {t.type.tensor_type.elem_type for t in graph.input} == {onnx.TensorProto.INT64}
    assert [t.type.tensor_type.elem_type for t in graph.output] == [onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("precision", TORCH)
def test_torch_routes_keep_the_boundary_in_their_gpu_compute_dtype(bundled_artefact, token_feeds, tmp_path,
                                                                   precision):
    """The GPU's compute dtype (encoder.json "compute_dtype" "cuda") run on this CPU: a copy of the artefact whose
    CPU entry is set to it (the shared artefact's files are hard-linked into the repository: never edited)."""
    artefact = bundled_artefact(precision)
    copy = shutil.copytree(artefact.path, tmp_path / precision)
    meta = json.loads((copy / ENCODER_JSON).read_text())
    meta["compute_dtype"]["cpu"] = meta["compute_dtype"]["cuda"]
    assert meta["compute_dtype"]["cpu"] in ("float16", "bfloat16")
    (copy / ENCODER_JSON).write_text(json.dumps(meta))
    encoder = runtime_class(artefact.report["runtime"])(str(copy), threads=2)
    half = getattr(torch, meta["compute_dtype"]["cpu"])
    assert {p.dtype for p in encoder.module.parameters() if p.dtype.is_floating_point} == {half}
    check_boundary(encoder, token_feeds, artefact.report["dim"])


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_triton_configs_declare_float32_vectors_for_every_precision(bundled_artefact, precision):
    from exporter.triton.schema import model_config_pb2

    plan = bundled_artefact.plan(precision)
    info = ArtefactInfo.from_report(bundled_artefact(precision).report)
    fp32 = model_config_pb2().TYPE_FP32
    encoder = encoder_config(plan, info, ServingOptions(), gpu=plan.device != "cpu")
    assert [(o.data_type, list(o.dims)) for o in encoder.output] == [(fp32, [info.dim])]
    outputs = {o.name: (o.data_type, list(o.dims)) for o in ensemble_config(plan, info, ServingOptions()).output}
    assert outputs[EMBEDDING_OUTPUT] == (fp32, [info.dim])

"""Tiny models of the XLM-R, ModernBERT, Qwen3 and Gemma 3 families (bench/tiny_families.py), plus a BERT built through
the torch fallback, in ONE repository on ONE real Triton: served vectors equal sentence-transformers on the same
weights, also when requests of different lengths are batched together (left-padded Qwen3 rows included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from bench.tiny_families import FAMILIES
from exporter.artefact import ExportOptions, export_artefact
from exporter.verify import cosines

from export_helpers import plan_for

pytestmark = pytest.mark.slow

SERVED = [("xlm-roberta", "fp32"), ("modernbert", "fp32"), ("qwen3", "fp32"), ("gemma3", "fp32"), ("qwen3", "int8")]
MIN_COSINE = {"fp32": 0.9999, "int8": 0.99}
TEXTS = ["short", "a sentence of moderate length about rivers and mountains",
         "Ein deutscher Satz mit Umlauten: Größe, Übung.", "数据 和 模型", "x " * 80,
         "the last one, again of some length, to share a batch with the others"]


@pytest.fixture(scope="module")
def families_server(tmp_path_factory):
    import torch

    from exporter.serve import ServerSettings, TritonServer
    from exporter.triton.config import ServingOptions
    from exporter.triton.repository import ModelEntry, assemble, publish, staging

    root = tmp_path_factory.mktemp("families")
    models, entries = {}, []
    for family, precision in SERVED + [("bert", "fallback")]:
        model = models.get(family) or FAMILIES[family](root / family)
        models[family] = model
        plan = plan_for("fp32" if precision == "fallback" else precision, f"{family}-{precision}", device="cpu")
        with pytest.MonkeyPatch.context() as patch:
            if precision == "fallback":  # as for an operator torch.onnx cannot express
                patch.setattr(torch.onnx, "export", _unsupported)
            artefact = export_artefact(plan, model, root / "artefacts", ExportOptions(verification_limit=8))
        entries.append(ModelEntry(plan, artefact))
    repository = root / "model_repository"
    with staging(repository) as tmp:
        assemble(tmp, entries, ServingOptions())
        publish(tmp, repository)
    server = TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0))
    server.start()
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8, network_timeout=120)
    try:
        yield client, models, repository
    finally:
        client.close()
        server.stop()


def _unsupported(*_args, **_kwargs):
    import torch

    raise torch.onnx.errors.UnsupportedOperatorError("aten::fft_fftn", 17, "not supported in opset 17")


def _request(texts: list[str]) -> list[httpclient.InferInput]:
    data = np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)
    tensor = httpclient.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor]


@pytest.mark.parametrize("family,precision", SERVED + [("bert", "fallback")])
def test_family_served_vectors_equal_sentence_transformers(families_server, family, precision):
    from sentence_transformers import SentenceTransformer

    client, models, _ = families_server
    name = f"{family}-{precision}"
    # one request per text pair, sent at once: the server batches rows of different lengths across requests
    pending = [client.async_infer(name, _request(TEXTS[i:i + 2])) for i in range(0, len(TEXTS), 2)]
    got = np.concatenate([p.get_result().as_numpy("EMBEDDING") for p in pending])
    want = SentenceTransformer(str(models[family]), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert got.shape == want.shape
    assert cosines(got, want).min() >= MIN_COSINE.get(precision, 0.9999)


def test_manifest_says_what_each_vector_is_and_which_route_serves_it(families_server):
    _, _, repository = families_server
    manifest = {m["name"]: m for m in json.loads((Path(repository) / "manifest.json").read_text())["models"]}
    assert manifest["qwen3-fp32"]["pooling"] == ["lasttoken"] and manifest["qwen3-fp32"]["normalized"] is True
    assert manifest["gemma3-fp32"]["dim"] == 64 and manifest["xlm-roberta-fp32"]["pooling"] == ["cls"]
    assert (manifest["bert-fallback"]["route"], manifest["bert-fallback"]["runtime"]) == ("torch-fp32", "torch")

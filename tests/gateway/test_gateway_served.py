"""The gateway on a real Triton, called through the official openai SDK: vectors equal the project's client's,
usage is the tokenizer's count, every error raises the SDK's matching exception, auth, limits, metrics, and 8
concurrent clients losing and mixing up nothing."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
from conftest import KEY, MAX_BODY_BYTES, MAX_TEXTS, openai_client, start_gateway

pytestmark = pytest.mark.slow

TEXTS = ["A man is playing a guitar.", "Someone plays the guitar on stage.", "", "naïve café ünïcödé 中文 😀",
         " ".join(["a long text that the tokenizer must truncate at the model's maximum length"] * 40)]


def vectors(response) -> np.ndarray:
    rows = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
    if rows and isinstance(rows[0], str):  # encoding_format="base64": little-endian float32, as the SDK decodes it
        rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
    return np.asarray(rows, dtype=np.float32)


def get(url: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict, dict]:
    """GET ``url`` (POST ``body`` as JSON when given), with ``key`` as the bearer token; (status, headers, JSON)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def model(served_models) -> str:
    return served_models["fp32"]


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_list_input_equals_the_client(sdk, reference, model, encoding):
    extra = {} if encoding is None else {"encoding_format": encoding}  # None: the SDK asks base64 and decodes it
    response = sdk.embeddings.create(model=model, input=TEXTS, **extra)
    assert response.model == model and [d.index for d in response.data] == list(range(len(TEXTS)))
    np.testing.assert_array_equal(vectors(response), reference.embed(TEXTS, model=model))


def test_single_string_equals_the_client(sdk, reference, model):
    response = sdk.embeddings.create(model=model, input=TEXTS[0], encoding_format="float")
    assert len(response.data) == 1
    np.testing.assert_array_equal(vectors(response)[0], reference.embed(TEXTS[0], model=model))


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_dimensions_truncate_like_the_client(sdk, reference, model, encoding):
    response = sdk.embeddings.create(model=model, input=TEXTS, dimensions=64, encoding_format=encoding)
    got = vectors(response)
    assert got.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(got, reference.embed(TEXTS, model=model, dimensions=64))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_usage_is_the_model_tokenizers_count(sdk, reference, model):
    from tokenizers import Tokenizer

    from exporter.models import DEFAULT_MODEL, resolve_model_dir

    info = reference.model_info(model=model)
    tokenizer = Tokenizer.from_file(str(resolve_model_dir(DEFAULT_MODEL) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the model's tokenizer.json pads to 128
    expected = [min(len(e.ids), info.max_seq_length) for e in tokenizer.encode_batch(TEXTS)]
    assert expected[-1] == info.max_seq_length and expected[2] == 2  # truncated; "" is [CLS] [SEP]
    usage = sdk.embeddings.create(model=model, input=TEXTS).usage
    assert usage.prompt_tokens == usage.total_tokens == sum(expected)


def test_models_health_and_ready(sdk, gateway, served_models):
    listed = {m.id: m for m in sdk.models.list().data}
    assert set(served_models.values()) <= set(listed)
    assert listed[served_models["fp32"]].dim == 384
    assert get(f"{gateway.root}/health")[0] == 200
    assert get(f"{gateway.root}/ready") == (200, get(f"{gateway.root}/ready")[1], {"status": "ready"})


def error_of(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize(("kwargs", "param", "message"), [
    ({"input": [[101, 2023, 102]]}, "input", "this server embeds text"),
    ({"input": [1, 2, 3]}, "input", "this server embeds text"),
    ({"input": ["ok", None]}, "input", "input[1]"),
    ({"input": []}, "input", "empty list"),
    ({"input": "x", "dimensions": 0}, "dimensions", "allowed: an integer from 1 to 384"),
    ({"input": "x", "dimensions": 385}, "dimensions", "allowed: an integer from 1 to 384"),
    ({"input": "x", "extra_body": {"prompt_name": "query"}}, "prompt_name", "has no prompts"),
    ({"input": "x", "extra_body": {"dimension": 8}}, "dimension", "unknown field 'dimension'"),
])
def test_bad_input_is_bad_request_error(sdk, model, kwargs, param, message):
    error = error_of(lambda: sdk.embeddings.create(model=model, **kwargs))
    assert isinstance(error, openai.BadRequestError)
    assert error.body["type"] == "invalid_request_error" and error.body["param"] == param
    assert message in error.body["message"]


def test_unknown_model_is_not_found_error_listing_the_served(sdk, model):
    error = error_of(lambda: sdk.embeddings.create(model="text-embedding-3-small", input="x"))
    assert isinstance(error, openai.NotFoundError) and error.body["code"] == "model_not_found"
    assert model in error.body["message"]


def test_over_the_limits_is_413(sdk, model):
    error = error_of(lambda: sdk.embeddings.create(model=model, input=["x"] * (MAX_TEXTS + 1)))
    assert error.status_code == 413 and error.body["code"] == "request_too_large"
    assert f"{MAX_TEXTS + 1} texts" in error.body["message"]
    error = error_of(lambda: sdk.embeddings.create(model=model, input="x" * MAX_BODY_BYTES))
    assert error.status_code == 413 and f"at most {MAX_BODY_BYTES}" in error.body["message"]
    assert type(error) is openai.APIStatusError  # the SDK has no subclass for 413


def test_auth_no_key_wrong_key_right_key(gateway, model):
    for route, request in (("/v1/models", None), ("/v1/embeddings", {"model": model, "input": "x"})):
        status, _, body = get(f"{gateway.root}{route}", body=request)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", route
    with openai_client(gateway, api_key="test-key-2") as wrong:
        error = error_of(lambda: wrong.embeddings.create(model=model, input="x"))
        assert isinstance(error, openai.AuthenticationError) and error.body["message"] == "invalid API key"
        assert isinstance(error_of(lambda: wrong.models.list()), openai.AuthenticationError)
    for key in ("test-key-0", KEY):  # every configured key works
        with openai_client(gateway, api_key=key) as right:
            assert len(right.embeddings.create(model=model, input="x").data) == 1
    assert get(f"{gateway.root}/health")[0] == 200  # health and readiness need no key (for probes)


def test_unknown_route_and_method_use_the_error_shape(gateway):
    status, _, body = get(f"{gateway.root}/v1/chat/completions", KEY)
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    assert get(f"{gateway.root}/v1/embeddings", KEY)[0] == 405


def test_no_cors_unless_configured(gateway):
    request = urllib.request.Request(f"{gateway.root}/v1/models", method="OPTIONS",
                                     headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert "access-control-allow-origin" not in {k.lower() for k in error.value.headers}


def test_metrics_count_requests_texts_and_tokens(sdk, gateway, model):
    from prometheus_client.parser import text_string_to_metric_families

    def sample(name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"{gateway.root}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    before = (sample("gateway_texts_embedded_total", model=model), sample("gateway_tokens_embedded_total", model=model),
              sample("gateway_requests_total", route="/v1/embeddings", model=model, status="200"),
              sample("gateway_requests_total", route="/v1/embeddings", model="-", status="404"))
    usage = sdk.embeddings.create(model=model, input=TEXTS[:2]).usage
    error_of(lambda: sdk.embeddings.create(model="no-such-model", input="x"))
    after = (sample("gateway_texts_embedded_total", model=model), sample("gateway_tokens_embedded_total", model=model),
             sample("gateway_requests_total", route="/v1/embeddings", model=model, status="200"),
             sample("gateway_requests_total", route="/v1/embeddings", model="-", status="404"))
    assert np.subtract(after, before).tolist() == [2, usage.total_tokens, 1, 1]
    assert sample("gateway_request_duration_seconds_count", route="/v1/embeddings") > 0


def test_prompt_name_and_default_truncate_dim_equal_the_client(prompted_model):
    from client import EmbeddingClient

    texts = TEXTS[:3]
    with start_gateway(prompted_model.server.http_url) as gw, openai_client(gw) as sdk, \
            EmbeddingClient(prompted_model.server.http_url) as reference:
        for prompt_name in ("passage", "title", None):
            extra = {"extra_body": {"prompt_name": prompt_name}} if prompt_name else {}
            response = sdk.embeddings.create(model=prompted_model.name, input=texts, **extra)
            expected = reference.embed_with_usage(texts, model=prompted_model.name, prompt_name=prompt_name)
            np.testing.assert_array_equal(vectors(response), expected.vectors)
            assert vectors(response).shape[1] == 32  # the model's default truncate_dim
            assert response.usage.total_tokens == expected.total_tokens
        error = error_of(lambda: sdk.embeddings.create(model=prompted_model.name, input="x",
                                                        extra_body={"prompt_name": "nope"}))
        assert isinstance(error, openai.BadRequestError) and error.body["param"] == "prompt_name"
        assert "'query'" in error.body["message"] and "'title'" in error.body["message"]


def test_8_clients_x_200_requests_lose_and_mix_up_nothing(gateway, reference, model):
    """Short texts in batches of 1-4 from 8 threads, each with its own SDK client: every vector is the reference
    vector of its own text (cosine; batch composition changes padding, so not bit-equal)."""
    import random

    pool = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "rain", "jazz", "maps"] * 16)]
    ref = {t: v for t, v in zip(pool, reference.embed(pool, model=model))}
    lost, mismatched, errors, done = [], [], [], []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with openai_client(gateway) as client:
            for _ in range(200):
                batch = rng.sample(pool, rng.randint(1, 4))
                try:
                    response = client.embeddings.create(model=model, input=batch)
                except openai.APIError as exc:
                    errors.append(repr(exc))
                    continue
                got = {d.index: np.asarray(d.embedding, dtype=np.float32) for d in response.data}
                lost.extend(i for i in range(len(batch)) if i not in got)
                mismatched.extend(batch[i] for i, v in got.items() if float(v @ ref[batch[i]]) < 0.99999)
                done.append(len(batch))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (errors, lost, mismatched) == ([], [], [])
    assert len(done) == 8 * 200

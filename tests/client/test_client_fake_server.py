"""Both client twins against the in-process fake Triton (tests/fakes/kserve.py): every case runs for
``EmbeddingClient`` and ``AsyncEmbeddingClient`` alike, without a server. The same behaviour against the real Triton
is in test_client_served.py (e2e)."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import numpy as np
import pytest
import tritonclient.http as httpclient

from client import (
    AsyncEmbeddingClient,
    EmbeddingClient,
    Embeddings,
    InvalidInput,
    ModelNotFound,
    Retry,
    ServerError,
    ServerUnavailable,
)

from fakes.kserve import EmbeddingModel, FakeTriton, InferError, PlainModel, hash_vector

FAST_RETRY = Retry(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0)
TEXTS = [f"sentence number {i}" for i in range(10)]


class Twin:
    """One client of either kind behind one blocking call style: ``twin.call("embed", texts)``."""

    def __init__(self, kind: str, url: str, **kwargs):
        self.kind = kind
        if kind == "sync":
            self.client = EmbeddingClient(url, **kwargs)
        else:
            self.loop = asyncio.new_event_loop()
            self.client = AsyncEmbeddingClient(url, **kwargs)

    def call(self, method: str, *args, **kwargs):
        result = getattr(self.client, method)(*args, **kwargs)
        return result if self.kind == "sync" else self.loop.run_until_complete(result)

    def close(self) -> None:
        self.call("close")
        if self.kind == "async":
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def twin(request):
    return request.param


@pytest.fixture
def fake():
    with FakeTriton([EmbeddingModel("minilm-fp32"), PlainModel("minilm-fp32_tokenizer")]) as server:
        yield server


@pytest.fixture
def make(twin, fake):
    made = []

    def make_client(**kwargs) -> Twin:
        kwargs.setdefault("retry", FAST_RETRY)
        made.append(Twin(twin, fake.url, **kwargs))
        return made[-1]

    yield make_client
    for client in made:
        client.close()


def expected(texts, dim=8) -> np.ndarray:
    return np.stack([hash_vector(t.encode(), dim) for t in texts])


def test_rows_come_back_in_input_order_in_batches_of_the_model_size(make, fake):
    vectors = make().call("embed", TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (10, 8)
    np.testing.assert_array_equal(vectors, expected(TEXTS))
    sizes = sorted(r.inputs["TEXT"].shape[0] for r in fake.infer_requests())
    assert sizes == [2, 4, 4]  # max_batch_size 4
    assert all(r.binary_inputs for r in fake.infer_requests())  # TEXT goes as binary BYTES


def test_batch_size_is_the_callers_and_may_not_exceed_the_models(make, fake):
    make(batch_size=3).call("embed", TEXTS)
    assert sorted(r.inputs["TEXT"].shape[0] for r in fake.infer_requests()) == [1, 3, 3, 3]
    with pytest.raises(ValueError, match="batch_size=5 exceeds model 'minilm-fp32' max_batch_size=4"):
        make(batch_size=5).call("embed", ["a"])


def test_one_text_gives_a_vector_and_no_texts_no_request(make, fake):
    client = make()
    assert client.call("embed", "hello").shape == (8,)
    empty = client.call("embed", [])
    assert empty.shape == (0, 8) and empty.dtype == np.float32
    assert len(fake.infer_requests()) == 1


def test_non_ascii_texts_reach_the_server_as_utf8(make, fake):
    texts = ["東京タワー", "naïve café", "emoji 🙂"]
    make().call("embed", texts)
    (seen,) = fake.infer_requests()
    assert [bytes(b) for b in seen.inputs["TEXT"][:, 0]] == [t.encode("utf-8") for t in texts]


def test_the_only_embedding_model_is_the_default_and_models_lists_embedding_models_only(make, fake):
    fake.models["other_encoder"] = PlainModel("other_encoder")
    fake.models["down"] = EmbeddingModel("down", ready=False)
    client = make()
    assert client.call("model_info").name == "minilm-fp32"
    (info,) = client.call("models")
    assert (info.name, info.dim, info.max_batch_size, info.precision, info.route, info.max_seq_length) == (
        "minilm-fp32", 8, 4, "fp32", "onnx-fp32", 256)


def test_no_model_named_and_two_served_lists_both(make, fake):
    fake.models["minilm-int8"] = EmbeddingModel("minilm-int8", precision="int8")
    with pytest.raises(ModelNotFound, match="2 embedding models are served") as err:
        make().call("embed", ["a"])
    assert err.value.available == ["minilm-fp32", "minilm-int8"]


def test_an_unknown_model_is_model_not_found_listing_the_served_ones(make):
    with pytest.raises(ModelNotFound, match="'nope' is not served") as err:
        make(model="nope").call("embed", ["a"])
    assert err.value.model == "nope" and err.value.available == ["minilm-fp32"]


def test_a_served_model_that_is_not_an_embedding_model_is_named(make):
    with pytest.raises(ModelNotFound, match="is served but is not an embedding model"):
        make(model="minilm-fp32_tokenizer").call("model_info")


def test_a_model_unloaded_between_index_and_config_is_skipped(make, fake, caplog):
    fake.models["leaving"] = EmbeddingModel("leaving")

    def unload(seen):
        if seen.path.endswith("/leaving/config"):
            fake.models.pop("leaving", None)

    fake.on_request = unload
    with caplog.at_level(logging.INFO, logger="client._common"):
        assert [m.name for m in make().call("models")] == ["minilm-fp32"]
    assert "'leaving' was unloaded" in caplog.text


def test_a_400_naming_a_text_is_invalid_input_at_the_callers_index_and_not_retried(make, fake):
    def embed(texts):
        if b"bad" in texts:
            raise InferError(f"TEXT[{texts.index(b'bad')}] is not valid UTF-8", 400)
        return np.stack([hash_vector(t, 8) for t in texts])

    fake.models["minilm-fp32"].embed = embed
    texts = TEXTS[:6] + ["bad"] + TEXTS[6:]
    with pytest.raises(InvalidInput) as err:
        make(batch_size=4, max_concurrency=1).call("embed", texts)
    assert err.value.index == 6 and "not valid UTF-8" in err.value.server_message
    assert sum(1 for r in fake.infer_requests() if b"bad" in list(r.inputs["TEXT"][:, 0])) == 1


def test_503_is_retried_until_it_succeeds(make, fake):
    fake.fail(503, "Server is unavailable", path="/infer", times=2)
    np.testing.assert_array_equal(make().call("embed", ["a"]), expected(["a"]))
    assert len(fake.infer_requests()) == 3


def test_503_past_the_attempts_is_server_unavailable(make, fake):
    fake.fail(503, "Server is unavailable", path="/infer", times=5)
    with pytest.raises(ServerUnavailable, match="HTTP 503"):
        make(retry=Retry(attempts=2, backoff=0.001, jitter=0.0)).call("embed", ["a"])
    assert len(fake.infer_requests()) == 2


def test_a_dropped_connection_is_retried(make, fake):
    fake.fail(0, path="/infer", close=True)
    np.testing.assert_array_equal(make().call("embed", ["a"]), expected(["a"]))
    assert len(fake.infer_requests()) == 2


def test_a_500_is_a_server_error_and_not_retried(make, fake):
    fake.fail(500, "the encoder failed on this request: index out of range", path="/infer", times=3)
    with pytest.raises(ServerError, match="HTTP 500") as err:
        make().call("embed", ["a"])
    assert err.value.status == "500" and "index out of range" in err.value.server_message
    assert len(fake.infer_requests()) == 1


def test_a_reply_off_the_contract_is_a_server_error(make, fake):
    fake.models["minilm-fp32"].embed = lambda texts: np.zeros((len(texts), 5), np.float32)
    with pytest.raises(ServerError, match=r"returned EMBEDDING of shape \(1, 5\); expected \(1, 8\)"):
        make().call("embed", ["a"])


def test_a_model_gone_mid_use_raises_model_not_found_listing_what_is_left(make, fake):
    client = make(model="minilm-fp32")
    client.call("embed", ["a"])
    fake.models["minilm-fp32"].ready = False
    with pytest.raises(ModelNotFound) as err:
        client.call("embed", ["a"])
    assert err.value.available == []


def test_readiness_is_per_named_model(make, fake):
    fake.models["minilm-int8"] = EmbeddingModel("minilm-int8", ready=False)
    assert make(model="minilm-fp32").call("is_ready") is True
    assert make(model="minilm-int8").call("is_ready") is False
    assert make().call("is_ready") is False  # the server is not ready while any model is not


def test_wait_until_ready_returns_once_ready_and_gives_up_after_its_timeout(make, fake):
    make(model="minilm-fp32").call("wait_until_ready", 1.0, 0.01)
    fake.ready = False
    with pytest.raises(ServerUnavailable, match="not ready after 0.05s"):
        make().call("wait_until_ready", 0.05, 0.01)


# -- the fake itself: tensors as tritonclient sends them, JSON and binary -------------------------------------------

@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_the_fake_speaks_json_and_binary_tensors(fake, binary_in, binary_out):
    data = np.array([[b"one"], ["zwei".encode()]], dtype=object)
    text = httpclient.InferInput("TEXT", [2, 1], "BYTES")
    text.set_data_from_numpy(data, binary_data=binary_in)
    client = httpclient.InferenceServerClient(fake.url)
    try:
        result = client.infer("minilm-fp32", [text],
                              outputs=[httpclient.InferRequestedOutput("EMBEDDING", binary_data=binary_out)])
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), expected(["one", "zwei"]), rtol=1e-6)
    (seen,) = fake.infer_requests()
    assert seen.binary_inputs is binary_in and seen.inputs["TEXT"].tolist() == [[b"one"], [b"zwei"]]


# -- prompts, dimensions, token counts, per-call model ---------------------------------------------------------------

PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture
def prompted(fake):
    fake.models["prompted"] = EmbeddingModel("prompted", dim=8, prompts=PROMPTS, default_prompt_name="query",
                                             truncate_dim=4)
    return fake.models["prompted"]


def test_a_prompt_name_or_prompt_is_sent_once_per_text_and_the_default_left_to_the_server(make, fake, prompted):
    client = make(model="prompted")
    texts = ["a b", "c"]
    named = client.call("embed", texts, prompt_name="passage", dimensions=8)
    np.testing.assert_array_equal(named, expected(["passage: a b", "passage: c"]))
    explicit = client.call("embed", texts, prompt="x: ", dimensions=8)
    np.testing.assert_array_equal(explicit, expected(["x: a b", "x: c"]))
    default = client.call("embed", texts, dimensions=8)
    np.testing.assert_array_equal(default, expected(["query: a b", "query: c"]))
    sent = [{k: [bytes(b) for b in v[:, 0]] for k, v in r.inputs.items() if k != "TEXT"} for r in fake.infer_requests()]
    assert sent == [{"PROMPT_NAME": [b"passage", b"passage"]}, {"PROMPT": [b"x: ", b"x: "]}, {}]


def test_dimensions_truncate_and_renormalize_and_the_models_truncate_dim_is_the_default(make, prompted):
    client = make(model="prompted")
    full = expected(["query: a", "query: b"])
    for k, got in ((4, client.call("embed", ["a", "b"])), (2, client.call("embed", ["a", "b"], dimensions=2))):
        want = full[:, :k] / np.linalg.norm(full[:, :k], axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    prompted.normalized = False
    raw = make(model="prompted").call("embed", ["a", "b"], dimensions=3)  # a model without Normalize: cut only
    np.testing.assert_array_equal(raw, full[:, :3])


@pytest.mark.parametrize("options, words, option", [
    ({"dimensions": 0}, "dimensions=0 is out of range for model 'prompted'; allowed: an integer from 1 to 8",
     "dimensions"),
    ({"dimensions": 9}, "dimensions=9 is out of range for model 'prompted'; allowed: an integer from 1 to 8",
     "dimensions"),
    ({"dimensions": 2.5}, "dimensions=2.5 is out of range", "dimensions"),
    ({"dimensions": True}, "dimensions=True is out of range", "dimensions"),
    ({"prompt_name": "nope"}, "prompt_name='nope' is not a prompt of model 'prompted'; allowed: 'query', 'passage'",
     "prompt_name"),
    ({"prompt_name": "query", "prompt": "q: "}, "give prompt_name or prompt, not both", None),
    ({"prompt": b"q: "}, "prompt=b'q: ' is bytes, expected str", "prompt"),
])
def test_bad_options_are_invalid_input_naming_the_value_and_no_request_is_sent(make, fake, prompted, options, words,
                                                                               option):
    with pytest.raises(InvalidInput, match=re.escape(words)) as error:
        make(model="prompted").call("embed", ["a"], **options)
    assert error.value.option == option and error.value.index is None  # the option at fault, for the gateway
    assert fake.infer_requests() == []


def test_embed_with_usage_returns_the_servers_token_counts(make, prompted):
    usage = make(model="prompted").call("embed_with_usage", ["a b c", "d"], prompt_name="passage")
    assert isinstance(usage, Embeddings) and usage.vectors.shape == (2, 4)
    assert usage.token_counts.dtype == np.int64 and usage.token_counts.tolist() == [6, 4] and usage.total_tokens == 10
    single = make(model="prompted").call("embed_with_usage", "a b")
    assert single.vectors.shape == (4,) and single.token_counts.shape == () and single.total_tokens == 5


def test_model_per_call_overrides_the_clients_model(make, prompted):
    client = make(model="minilm-fp32")
    np.testing.assert_array_equal(client.call("embed", ["a"], model="prompted", dimensions=8),
                                  expected(["query: a"]))
    np.testing.assert_array_equal(client.call("embed", ["a"]), expected(["a"]))
    assert client.call("model_info", model="prompted").truncate_dim == 4
    with pytest.raises(ModelNotFound, match="'nope' is not served"):
        client.call("embed", ["a"], model="nope")


def test_a_repository_built_before_the_extension_still_embeds_and_says_what_it_lacks(make, fake):
    fake.models["old"] = EmbeddingModel("old", legacy=True)
    client = make(model="old")
    np.testing.assert_array_equal(client.call("embed", ["a"]), expected(["a"]))
    with pytest.raises(InvalidInput, match="built without the TOKEN_COUNT output; rebuild"):
        client.call("embed_with_usage", ["a"])
    with pytest.raises(InvalidInput, match="built without the PROMPT_NAME/PROMPT inputs; rebuild"):
        client.call("embed", ["a"], prompt="q: ")
    assert client.call("embed", ["a"], dimensions=2).shape == (1, 2)


def test_cli_prompt_name_dimensions_and_token_counts(fake, prompted, capsys):
    from client.cli import main

    base = ["--url", fake.url, "--model", "prompted"]
    assert main([*base, "embed", "a b", "c", "--prompt-name", "passage", "--dimensions", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    full = expected(["passage: a b", "passage: c"])
    np.testing.assert_allclose(out["embeddings"], full[:, :2] / np.linalg.norm(full[:, :2], axis=1, keepdims=True),
                               rtol=1e-6)
    assert (out["dim"], out["token_counts"]) == (2, [5, 4])
    assert main([*base, "embed", "a", "--prompt", ""]) == 0
    assert "dim=4 norm=1.000 tokens=3  'a'" in capsys.readouterr().out  # truncate_dim 4; no prompt: 1 word + 2
    assert main([*base, "embed", "a", "--dimensions", "0"]) == 2
    assert "dimensions=0 is out of range for model 'prompted'; allowed: an integer from 1 to 8" in \
        capsys.readouterr().err
    assert main([*base, "models"]) == 0
    assert "prompts: query='query: ', passage='passage: '; default prompt: query; truncate_dim: 4" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*base, "embed", "a", "--prompt", "x", "--prompt-name", "query"])

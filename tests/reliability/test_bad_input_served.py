"""Bad and odd input on the served path (raw KServe v2 HTTP and the project's client), on the shared server.

Every case must end in either the correct vector (compared with sentence-transformers fp32) or a 4xx whose
message names what was wrong and what is allowed; Triton's core answers a body that is not JSON with a 500 of its
own. After each case the server is still ready and a valid request returns exactly the vector it returned before.
docs/reliability.md tabulates what these tests observe.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bench.load import server_rss_mb
from tests.reliability.conftest import PROBE
from tests.reliability.kserve import Reply, cosine, infer, infer_raw_bytes, is_ready, request, text_tensor
from tests.reliability.repos import fp32_only_copy

pytestmark = pytest.mark.slow

MIN_COSINE = 0.99999  # fp32 served vs sentence-transformers fp32 (the fp32 route's own quality gate)
ONE_MB = "word " * 210_000


@pytest.fixture(scope="module")
def url(triton_server) -> str:
    return triton_server.http_url


@pytest.fixture(scope="module")
def limits(built_repository) -> dict:
    """The serving limits the repository was built with (max_batch_size, max_text_bytes, ...)."""
    return json.loads((built_repository / "manifest.json").read_text())["serving"]


@pytest.fixture(scope="module")
def probe_vector(url, fp32_model, st_encode) -> np.ndarray:
    vector = infer(url, fp32_model, [text_tensor([PROBE])]).embedding()
    assert cosine(vector, st_encode([PROBE]))[0] >= MIN_COSINE
    return vector


@pytest.fixture
def still_exact(url, fp32_model, probe_vector):
    """Call after a case: the server is ready and answers the probe text exactly as before."""
    def check() -> None:
        assert is_ready(url), "the server is no longer ready"
        again = infer(url, fp32_model, [text_tensor([PROBE])]).embedding()
        np.testing.assert_allclose(again, probe_vector, rtol=0, atol=1e-6)
    return check


def at_limit_text(limits: dict) -> str:
    """A text exactly at max_text_bytes: far over 256 tokens, so the server must truncate it."""
    return ("word " * (limits["max_text_bytes"] // 5 + 1))[: limits["max_text_bytes"]]


VALID_ODD = {
    "empty string": "",
    "whitespace only": " \t\n  \r\n",
    "NUL bytes": "before\x00after\x00",
    "emoji, CJK, right-to-left": "emoji 😀🚀👍🏽, CJK 中文字符と日本語, RTL שלום עולם مرحبا بالعالم",
    "control characters": "tab\there\x07bell\x1bescape",
}


@pytest.mark.parametrize("text", list(VALID_ODD.values()), ids=list(VALID_ODD))
def test_odd_but_valid_text_gets_the_reference_vector(text, url, fp32_model, st_encode, still_exact):
    reply = infer(url, fp32_model, [text_tensor([text])])
    vector = reply.embedding()
    assert vector.shape == (1, 384) and np.isfinite(vector).all()
    assert cosine(vector, st_encode([text]))[0] >= MIN_COSINE
    still_exact()


def test_a_text_at_the_byte_limit_is_truncated_to_max_tokens(url, fp32_model, limits, st_encode, still_exact):
    text = at_limit_text(limits)
    reply = infer(url, fp32_model, [text_tensor([text])])
    assert cosine(reply.embedding(), st_encode([text]))[0] >= MIN_COSINE  # ST truncates at 256 tokens too
    assert reply.seconds < 10, f"{len(text)} bytes took {reply.seconds:.1f} s"
    still_exact()


def test_a_1mb_text_is_refused_quickly_naming_the_limit(url, fp32_model, limits, triton_server, still_exact):
    before = server_rss_mb(triton_server.process.pid)
    reply = infer(url, fp32_model, [text_tensor(["fine", ONE_MB])])
    assert reply.status == 400
    assert f"TEXT[1] is {len(ONE_MB)} bytes; allowed: at most {limits['max_text_bytes']} bytes" in reply.error
    assert reply.seconds < 3
    assert server_rss_mb(triton_server.process.pid) - before < 100
    still_exact()


def test_with_a_raised_byte_limit_a_1mb_text_is_truncated_in_bounded_time_and_memory(built_repository, tmp_path,
                                                                                      st_encode):
    """What an operator gets with ``--max-text-bytes 2097152``: the 1 MB text is embedded, truncated to 256 tokens."""
    from exporter.serve import ServerSettings, TritonServer

    repository = tmp_path / "repo"
    fp32_only_copy(built_repository, repository)
    name = json.loads((repository / "manifest.json").read_text())["models"][0]["name"]
    config = repository / f"{name}_tokenizer" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "65536"', 'string_value: "2097152"'))
    with TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0)) as server:
        before = server_rss_mb(server.process.pid)
        reply = infer(server.http_url, name, [text_tensor([ONE_MB])])
        growth = server_rss_mb(server.process.pid) - before
    assert cosine(reply.embedding(), st_encode([ONE_MB]))[0] >= MIN_COSINE
    assert reply.seconds < 20, f"1 MB took {reply.seconds:.1f} s"
    assert growth < 200, f"the server grew by {growth:.0f} MB for one 1 MB text"


def test_invalid_utf8_is_refused_naming_the_element(url, fp32_model, still_exact):
    reply = infer_raw_bytes(url, fp32_model, [b"valid text", b"\xff\xfe broken", b"more"])
    assert reply.status == 400
    assert "TEXT[1] is not valid UTF-8 (byte 0: invalid start byte)" in reply.error
    still_exact()


def _refusals(model: str, limits: dict) -> dict[str, tuple[str, list, int, str]]:
    """case -> (target model, inputs, expected status, expected message fragment)."""
    too_many = limits["max_batch_size"] + 1
    return {
        "more texts than max_batch_size": (model, [text_tensor(["x"] * too_many)], 400,
                                           f"batch-size must be <= {limits['max_batch_size']}"),
        "INT32 instead of BYTES": (model, [text_tensor([1, 2], [2, 1], "INT32")], 400,
                                   "data-type is 'INT32', but model '{m}' expects 'BYTES'"),
        "shape [n] instead of [n, 1]": (model, [text_tensor(["a", "b"], [2])], 400, "Expected [-1,1], got [2]"),
        "shape [2, 2]": (model, [text_tensor(["a", "b", "c", "d"], [2, 2])], 400, "Expected [-1,1], got [2,2]"),
        "shape and data disagree": (model, [text_tensor(["a"], [3, 1])], 400, "expected 3 string elements"),
        "no texts (shape [0, 1])": (model, [text_tensor([], [0, 1])], 400, "expected 1 string elements"),
        "missing input": (model, [], 400, "missing required input(s) ['TEXT']"),
        "unknown input name": (model, [text_tensor(["a"], name="TXT")], 400, "unexpected inference input 'TXT'"),
        "input given twice": (model, [text_tensor(["a"]), text_tensor(["b"])], 400, "'TEXT' already exists"),
        "unknown model": ("no-such-model", [text_tensor(["a"])], 404, "unknown model: 'no-such-model'"),
    }


REFUSAL_IDS = list(_refusals("m", {"max_batch_size": 64}))


@pytest.mark.parametrize("case", REFUSAL_IDS)
def test_malformed_requests_get_a_4xx_naming_the_problem(case, url, fp32_model, limits, still_exact):
    model, inputs, status, fragment = _refusals(fp32_model, limits)[case]
    reply = infer(url, model, inputs)
    assert (reply.status, fragment.format(m=model) in reply.error) == (status, True), reply.text
    still_exact()


@pytest.mark.parametrize("body", [b'{"inputs": [ {', b"not json at all", b"\xff\xfe\x00", b'{"inputs": "x"}',
                                  b'{"inputs": [{"name": "TEXT", "shape": [-1, 1], "datatype": "BYTES", '
                                  b'"data": ["a"]}]}'],
                         ids=["truncated JSON", "not JSON", "binary garbage", "inputs not a list", "negative dim"])
def test_a_body_triton_cannot_parse_gets_its_500_and_the_server_survives(body, url, fp32_model, still_exact):
    reply = request(url, "POST", f"/v2/models/{fp32_model}/infer", body)
    assert reply.status == 500  # Triton's core answers parse errors itself, with 500
    assert "parse" in reply.error.lower(), reply.text
    still_exact()


def test_one_bad_request_in_a_dynamic_batch_never_fails_its_neighbours(url, fp32_model, limits, st_encode):
    """Good and bad requests at once, many in flight: each good one gets its own right vector."""
    good = [f"Neighbour sentence number {i} about {topic}." for i, topic in
            enumerate(["rivers", "trains", "music", "tea", "glaciers", "chess", "bread", "owls"] * 3)]
    refusals = list(_refusals(fp32_model, limits).values())

    def send(job):
        kind, payload = job
        if kind == "good":
            return kind, payload, infer(url, fp32_model, [text_tensor([payload])])
        if kind == "utf8":
            return kind, payload, infer_raw_bytes(url, fp32_model, [b"ok", b"\xc3\x28"])
        if kind == "big":
            return kind, payload, infer(url, fp32_model, [text_tensor([ONE_MB])])
        model, inputs, _, _ = refusals[payload]
        return kind, payload, infer(url, model, inputs)

    jobs = [("good", text) for text in good]
    bad = [("utf8", None), ("big", None)] + [("refusal", i) for i in range(len(refusals))]
    for i, job in enumerate(bad):
        jobs.insert(2 * i + 1, job)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, jobs))
    references = dict(zip(good, st_encode(good)))
    for kind, payload, reply in results:
        if kind == "good":
            assert cosine(reply.embedding(), references[payload])[0] >= MIN_COSINE, payload
        elif kind == "refusal":
            assert reply.status == refusals[payload][2], reply.text
        else:
            assert reply.status == 400, reply.text
    assert is_ready(url)


# -- the project's client over the same server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(url, fp32_model):
    from client import EmbeddingClient, Retry

    with EmbeddingClient(url, model=fp32_model, retry=Retry(attempts=1)) as c:
        yield c


def test_10000_texts_in_one_client_call_come_back_complete_and_in_order(client, st_encode, still_exact):
    distinct = [f"Sentence {i}: the {w} crossed the {v} before noon." for i, (w, v) in
                enumerate([(w, v) for w in ("fox", "train", "river", "choir", "storm") for v in
                           ("bridge", "valley", "border", "square", "field", "lake", "road", "line", "town",
                            "hill", "park", "gate", "yard", "dock", "mill", "pass", "ridge", "wood", "moor",
                            "bay")])]
    texts = [distinct[(i * 7) % len(distinct)] for i in range(10_000)]
    vectors = client.embed(texts)
    assert vectors.shape == (10_000, 384) and vectors.dtype == np.float32
    reference = dict(zip(distinct, st_encode(distinct)))
    assert cosine(vectors, np.stack([reference[t] for t in texts])).min() >= MIN_COSINE
    still_exact()


def test_the_client_raises_invalid_input_with_the_servers_reason_and_index(client, limits, still_exact):
    from client import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        client.embed(["fine", "also fine", ONE_MB])
    assert caught.value.index == 2
    assert f"allowed: at most {limits['max_text_bytes']} bytes" in str(caught.value)
    still_exact()


def test_the_client_names_the_served_models_for_an_unknown_one(url, fp32_model, still_exact):
    from client import EmbeddingClient, ModelNotFound

    with EmbeddingClient(url, model="no-such-model") as other, pytest.raises(ModelNotFound) as caught:
        other.embed(["a"])
    assert fp32_model in caught.value.available
    still_exact()


def test_reply_helper_refuses_to_read_a_vector_from_an_error():
    with pytest.raises(AssertionError, match="HTTP 400"):
        Reply(400, {"error": "x"}, '{"error": "x"}', 0.0).embedding()

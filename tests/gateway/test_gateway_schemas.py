"""gateway.schemas: OpenAI's request fields (text only, unknown fields refused) and the response encodings, read
back the way the openai SDK reads them."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from client import ModelInfo
from gateway.errors import GatewayError
from gateway.schemas import TOKEN_INPUT, embedding_response, model_entry, parse_request


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "input": "hi", **fields}).encode()


def test_string_and_list_inputs_and_defaults():
    req = parse_request(body())
    assert (req.texts, req.encoding_format, req.dimensions, req.prompt_name) == (["hi"], "float", None, None)
    req = parse_request(body(input=["a", ""], encoding_format="base64", dimensions=8, user="u", prompt_name="q"))
    assert (req.texts, req.encoding_format, req.dimensions, req.prompt_name) == (["a", ""], "base64", 8, "q")


@pytest.mark.parametrize(("raw", "param", "message"), [
    (body(input=[1, 2, 3]), "input", TOKEN_INPUT),
    (body(input=[[1, 2], [3]]), "input", TOKEN_INPUT),
    (body(input=["ok", None]), "input", "input[1]: Input should be a valid string"),
    (body(input=[]), "input", "input is an empty list"),
    (body(encoding_format="int8"), "encoding_format", "encoding_format: Input should be 'float' or 'base64'"),
    (body(dimensions="8"), "dimensions", "dimensions: Input should be a valid integer"),
    (body(dimension=8), "dimension", "unknown field 'dimension'; allowed: model, input"),
    (json.dumps({"input": "x"}).encode(), "model", "model: Field required"),
    (b"{not json", None, "the body is not valid JSON"),
    (b"", None, "the body is not valid JSON"),
    (b"[1]", None, "the body must be a JSON object"),
])
def test_bad_requests_are_400_naming_the_field(raw, param, message):
    with pytest.raises(GatewayError) as error:
        parse_request(raw)
    assert error.value.status == 400 and error.value.param == param
    assert message in error.value.message


def test_float_and_base64_read_back_exactly_as_float32():
    vectors = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    for encoding in ("float", "base64"):
        response = json.loads(embedding_response(vectors, "m", 17, encoding))
        assert response["object"] == "list" and response["model"] == "m"
        assert response["usage"] == {"prompt_tokens": 17, "total_tokens": 17}
        assert [d["index"] for d in response["data"]] == [0, 1, 2]
        assert {d["object"] for d in response["data"]} == {"embedding"}
        rows = [d["embedding"] for d in response["data"]]
        if encoding == "base64":  # what the openai SDK does
            rows = [np.frombuffer(base64.b64decode(r), dtype="float32") for r in rows]
        np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), vectors)


def test_model_entry_is_openai_shaped_with_the_contract_details():
    info = ModelInfo("m", 384, 64, precision="int8", prompts={"query": "q: "}, truncate_dim=128)
    entry = model_entry(info)
    assert (entry["id"], entry["object"], entry["owned_by"]) == ("m", "model", "emb-provider")
    assert (entry["dim"], entry["prompts"], entry["truncate_dim"], entry["normalized"]) == \
        (384, {"query": "q: "}, 128, True)

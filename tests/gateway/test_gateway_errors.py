"""gateway.errors: OpenAI's error shape, and each client error mapped to the status the openai SDK expects."""

from __future__ import annotations

import json

import pytest

from client import InvalidInput, ModelNotFound, ServerError, ServerUnavailable
from gateway.errors import GatewayError, from_client_error, timed_out


def test_response_has_openai_shape_and_retry_after():
    response = GatewayError(503, "down", type="server_error", code="triton_unavailable", retry_after=2).response()
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert json.loads(response.body) == {"error": {"message": "down", "type": "server_error", "param": None,
                                                   "code": "triton_unavailable"}}
    assert "retry-after" not in GatewayError(400, "bad").response().headers


@pytest.mark.parametrize(("error", "status", "param", "code", "retry"), [
    (InvalidInput("x", index=3, reason="is int"), 400, "input", None, False),
    (InvalidInput("dimensions=999 is out of range", index=None, reason="r", option="dimensions"), 400, "dimensions",
     None, False),
    (InvalidInput("prompt_name='x' is not a prompt", index=None, reason="r", option="prompt_name"), 400,
     "prompt_name", None, False),
    # the option travels as an attribute: the wording of the message does not decide the param
    (InvalidInput("give prompt_name or prompt, not both (prompt_name='a', prompt='b')", index=None, reason="r"),
     400, None, None, False),
    (InvalidInput("prompt=3 is int, expected str", index=None, reason="r", option="prompt"), 400, None, None, False),
    (ModelNotFound("model 'm' is not served", model="m", available=["a"]), 404, "model", "model_not_found", False),
    (ServerUnavailable("refused"), 503, None, "triton_unavailable", True),
    (ServerError("bad shape"), 502, None, "upstream_error", False),
])
def test_client_errors_map_to_statuses(error, status, param, code, retry):
    mapped = from_client_error(error, retry_after=1)
    assert (mapped.status, mapped.param, mapped.code) == (status, param, code)
    assert (mapped.retry_after is not None) is retry


def test_the_message_keeps_the_index_and_the_served_models():
    assert from_client_error(InvalidInput("x", index=3, reason="is int"), 1).message == "input[3]: is int"
    assert "served embedding models: a, b" in from_client_error(
        ModelNotFound("model 'm' is not served", model="m", available=["a", "b"]), 1).message


def test_timeout_is_504_with_retry_after():
    error = timed_out(2.5, retry_after=4)
    assert (error.status, error.retry_after, error.code) == (504, 4, "timeout") and "2.5 s" in error.message

"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and the one mapping from the
client's exceptions to HTTP statuses, so the openai SDKs raise their matching exception classes:

====================================  ======  ====================  ==========================================
cause                                 status  openai SDK raises     ``type`` / ``code``
====================================  ======  ====================  ==========================================
bad request (JSON, fields, a text)    400     BadRequestError       invalid_request_error
missing or wrong API key              401     AuthenticationError   invalid_request_error / invalid_api_key
unknown model                         404     NotFoundError         invalid_request_error / model_not_found
body or texts over the limits         413     APIStatusError        invalid_request_error / request_too_large
too many requests in flight           429     RateLimitError        rate_limit_error / too_many_requests
Triton failed the request             502     InternalServerError   server_error / upstream_error
Triton unavailable                    503     InternalServerError   server_error / triton_unavailable
Triton did not answer in time         504     InternalServerError   server_error / timeout
====================================  ======  ====================  ==========================================

429, 503 and 504 carry ``Retry-After``, which the openai SDK honours when it retries.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from client import EmbeddingError, InvalidInput, ModelNotFound, ServerError, ServerUnavailable

INVALID_REQUEST = "invalid_request_error"
REQUEST_OPTIONS = ("dimensions", "prompt_name")
SERVER_ERROR = "server_error"


class GatewayError(Exception):
    """A request the gateway answers with an error; :meth:`response` renders it."""

    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return Response(json.dumps(self.body()), status_code=self.status, headers=headers,
                        media_type="application/json")


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param)


def too_large(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(413, message, param=param, code="request_too_large")


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def too_many_requests(limit: int, retry_after: int) -> GatewayError:
    return GatewayError(429, f"{limit} requests are in flight, the most this gateway serves at once; retry later",
                        type="rate_limit_error", code="too_many_requests", retry_after=retry_after)


def unavailable(message: str, retry_after: int) -> GatewayError:
    return GatewayError(503, message, type=SERVER_ERROR, code="triton_unavailable", retry_after=retry_after)


def timed_out(seconds: float, retry_after: int) -> GatewayError:
    return GatewayError(504, f"Triton did not answer within {seconds:g} s", type=SERVER_ERROR, code="timeout",
                        retry_after=retry_after)


def from_client_error(exc: EmbeddingError, retry_after: int) -> GatewayError:
    """The HTTP answer for an error of the project's client (one place, so every route maps alike)."""
    if isinstance(exc, InvalidInput):
        if exc.index is not None:
            return bad_request(f"input[{exc.index}]: {exc.reason}", param="input")
        return bad_request(str(exc), param=exc.option if exc.option in REQUEST_OPTIONS else None)
    if isinstance(exc, ModelNotFound):
        return GatewayError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ServerUnavailable):
        return unavailable(f"Triton is unavailable: {exc}", retry_after)
    if isinstance(exc, ServerError):
        return GatewayError(502, f"Triton failed the request: {exc}", type=SERVER_ERROR, code="upstream_error")
    return GatewayError(500, f"{type(exc).__name__}: {exc}", type=SERVER_ERROR)

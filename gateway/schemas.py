"""The wire format of ``/v1/embeddings`` and ``/v1/models``, as OpenAI documents it.

Requests are parsed by pydantic models that forbid unknown fields (as OpenAI does: a misspelled ``dimension`` is a
400, not silently ignored). Responses are written straight to JSON bytes: at 64 texts x 384 floats per request,
building a pydantic object per vector would cost more than the rest of the gateway.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError, field_validator

from client import ModelInfo

from .errors import GatewayError, bad_request

TOKEN_INPUT = "this server embeds text: arrays of token ids are not accepted; send the texts themselves"


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Extensions beyond OpenAI's fields: ``prompt_name`` (one of the model's prompts,
    e.g. "query", as in sentence-transformers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: StrictStr
    input: StrictStr | list[StrictStr]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None  # accepted and ignored, as the issue asks
    prompt_name: StrictStr | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("input is an empty list; give at least one text")
            if any(isinstance(v, int) or (isinstance(v, list) and v and isinstance(v[0], int)) for v in value):
                raise ValueError(TOKEN_INPUT)
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def parse_request(body: bytes) -> EmbeddingRequest:
    """The request, or a 400 naming the first offending field (``param``) and what is allowed."""
    try:
        return EmbeddingRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _as_bad_request(exc) from None


def _as_bad_request(exc: ValidationError) -> GatewayError:
    errors = exc.errors(include_url=False)
    # For ``input`` (str or list of str) pydantic reports one error per union member: the list member's names the
    # offending element's index, which is what the caller needs.
    error = next((e for e in errors if any(isinstance(part, int) for part in e["loc"])), errors[0])
    loc = [str(part) for part in error["loc"] if isinstance(part, int) or part in EmbeddingRequest.model_fields
           or error["type"] == "extra_forbidden"]
    if error["type"] == "json_invalid":
        return bad_request(f"the body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}")
    if error["type"] == "model_type":
        return bad_request("the body must be a JSON object with 'model' and 'input'")
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field {loc[0]!r}; allowed: {', '.join(EmbeddingRequest.model_fields)}"
    elif loc[:1] == ["input"] and len(loc) > 1:
        message = f"input[{loc[1]}]: {message}"
    elif loc and message != TOKEN_INPUT:
        message = f"{loc[0]}: {message}"
    return bad_request(message, param=loc[0] if loc else None)


def embedding_response(vectors: np.ndarray, model: str, tokens: int, encoding: str) -> bytes:
    """The response body: one ``data`` entry per row of ``vectors`` (input order) and the true token usage.

    ``base64`` is the row's little-endian float32 bytes, which the openai SDK decodes with
    ``np.frombuffer(..., dtype="float32")``; ``float`` lists float32 values widened to float64, so they read back
    exactly.
    """
    if encoding == "base64":
        # base64's alphabet needs no JSON escaping: quoting it directly saves a json.dumps per row
        rows = ('"' + base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii") + '"'
                for row in vectors)
    else:
        rows = (json.dumps(row) for row in vectors.tolist())
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{row}}}' for i, row in enumerate(rows))
    usage = json.dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return f'{{"object":"list","data":[{data}],"model":{json.dumps(model)},"usage":{usage}}}'.encode()


def model_entry(info: ModelInfo) -> dict[str, Any]:
    """One ``/v1/models`` entry: OpenAI's fields plus what a caller needs to use the model well."""
    return {"id": info.name, "object": "model", "created": 0, "owned_by": "emb-provider", "dim": info.dim,
            "max_batch_size": info.max_batch_size, "max_seq_length": info.max_seq_length,
            "precision": info.precision, "source": info.source, "normalized": info.normalized,
            "prompts": info.prompts, "default_prompt_name": info.default_prompt_name,
            "truncate_dim": info.truncate_dim}


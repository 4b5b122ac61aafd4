"""A fake Triton speaking the KServe v2 HTTP API in-process, for unit tests of both client twins.

What it answers, as Triton does (status codes and ``{"error": ...}`` bodies included):

- ``GET /v2/health/live``, ``/v2/health/ready`` (200 / 400 when ``ready`` is False);
- ``GET /v2/models/<name>/ready`` (200 / 400), ``/v2/models/<name>/config`` (the model's JSON config; 400
  ``Request for unknown model: '<name>' is not found`` when it is not loaded);
- ``POST /v2/repository/index`` (``[{"name", "version", "state"}]``);
- ``POST /v2/models/<name>/infer`` with JSON tensors (``"data"``) or binary ones (``binary_data_size`` after the JSON
  header, whose length is in ``Inference-Header-Content-Length``; BYTES elements as 4-byte little-endian length +
  bytes), and outputs in JSON or binary as each requested output asks (``"binary_data": true``).

A model is an :class:`EmbeddingModel` (an ensemble TEXT -> EMBEDDING whose vectors come from ``embed``) or a
:class:`PlainModel` (served but not an embedding model). Faults are queued with :meth:`FakeTriton.fail` and every
request is recorded in :attr:`FakeTriton.requests`.
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
         "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def hash_vector(text: bytes, dim: int) -> np.ndarray:
    """A deterministic unit vector for ``text`` (what the default :class:`EmbeddingModel` answers)."""
    rng = np.random.default_rng(zlib.crc32(text))
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class InferError(Exception):
    """Raised by a model's ``embed`` to answer the request with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class EmbeddingModel:
    """An emb-provider ensemble: TEXT (BYTES [1]) -> EMBEDDING (FP32 [dim]), config as ``exporter build`` writes.

    As the real tokenizer model does, it prepends the optional PROMPT_NAME / PROMPT (one per text; the default prompt
    when neither) and answers TOKEN_COUNT, here the prompted text's whitespace words + 2 (a stand-in for special
    tokens). ``legacy=True`` is a repository built before those existed (TEXT -> EMBEDDING only).
    """

    name: str
    dim: int = 8
    max_batch_size: int = 4
    precision: str = "fp32"
    route: str = "onnx-fp32"
    max_seq_length: int = 256
    ready: bool = True
    embed: Callable[[list[bytes]], np.ndarray] | None = None  # None: hash_vector of each (prompted) text
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None
    normalized: bool = True
    legacy: bool = False

    def config(self) -> dict[str, Any]:
        params = {"dim": str(self.dim), "precision": self.precision, "route": self.route,
                  "model": "sentence-transformers/all-MiniLM-L6-v2", "max_seq_length": str(self.max_seq_length)}
        inputs = [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]
        outputs = [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [self.dim]}]
        if not self.legacy:
            params.update(normalized=str(self.normalized).lower(), prompts=json.dumps(self.prompts))
            params.update({k: str(v) for k, v in (("default_prompt_name", self.default_prompt_name),
                                                  ("truncate_dim", self.truncate_dim)) if v is not None})
            inputs += [{"name": n, "data_type": "TYPE_STRING", "dims": [1], "optional": True}
                       for n in ("PROMPT_NAME", "PROMPT")]
            outputs.append({"name": "TOKEN_COUNT", "data_type": "TYPE_INT64", "dims": [1]})
        return {"name": self.name, "platform": "ensemble", "max_batch_size": self.max_batch_size,
                "input": inputs, "output": outputs,
                "parameters": {k: {"string_value": v} for k, v in params.items()}}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "TEXT" not in inputs:
            raise InferError(f"expected 1 inputs but got {len(inputs)} inputs for model '{self.name}'")
        text = inputs["TEXT"]
        if text.ndim != 2 or text.shape[1] != 1:
            raise InferError(f"unexpected shape for input 'TEXT' for model '{self.name}'. Expected [-1,1], got "
                             f"{list(text.shape)}")
        if text.shape[0] > self.max_batch_size:
            raise InferError(f"inference request batch-size must be <= {self.max_batch_size} for '{self.name}'")
        texts = [self._prompt(inputs, i) + bytes(t) for i, t in enumerate(text[:, 0])]
        vectors = self.embed(texts) if self.embed else np.stack([hash_vector(t, self.dim) for t in texts])
        outputs = {"EMBEDDING": np.asarray(vectors, dtype=np.float32)}
        if not self.legacy:
            outputs["TOKEN_COUNT"] = np.array([[len(t.split()) + 2] for t in texts], dtype=np.int64)
        return outputs

    def _prompt(self, inputs: dict[str, np.ndarray], row: int) -> bytes:
        if self.legacy and {"PROMPT_NAME", "PROMPT"} & set(inputs):
            raise InferError(f"unexpected inference input for model '{self.name}'")
        if "PROMPT" in inputs:
            return bytes(inputs["PROMPT"][row, 0])
        name = bytes(inputs["PROMPT_NAME"][row, 0]).decode() if "PROMPT_NAME" in inputs else self.default_prompt_name
        if name is not None and name not in self.prompts:
            raise InferError(f"PROMPT_NAME[{row}]={name!r} is not a prompt of this model")
        return self.prompts.get(name, "").encode() if name else b""


@dataclass
class PlainModel:
    """A served model that is not an embedding ensemble (e.g. ``<name>_tokenizer``)."""

    name: str
    ready: bool = True

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "backend": "python", "max_batch_size": 64,
                "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}],
                "output": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]}]}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise InferError(f"{self.name} is not an embedding model", 400)


@dataclass
class Fault:
    """Answer the next matching request(s) with ``status`` and ``{"error": message}`` (``close``: drop it)."""

    status: int
    message: str
    path: str = ""  # substring of the request path that must match ("" matches every request)
    times: int = 1
    close: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    binary_inputs: bool = False


def decode_bytes_tensor(raw: bytes) -> np.ndarray:
    """BYTES elements as tritonclient serialises them: 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4:offset + 4 + length])
        offset += 4 + length
    return np.array(items, dtype=object)


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (bytes(x) for x in array.reshape(-1)))


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                                         bool]:
    """(JSON header, inputs by name as numpy arrays, whether any input came binary)."""
    json_size = int(header_length) if header_length is not None else len(body)
    header = json.loads(body[:json_size])
    binary, offset, inputs = False, json_size, {}
    for tensor in header.get("inputs", []):
        shape, datatype = [int(d) for d in tensor["shape"]], tensor["datatype"]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            binary, raw = True, body[offset:offset + size]
            offset += size
            flat = decode_bytes_tensor(raw) if datatype == "BYTES" else np.frombuffer(raw, NUMPY[datatype])
        elif datatype == "BYTES":
            flat = np.array([d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in tensor["data"]],
                            dtype=object)
        else:
            flat = np.asarray(tensor["data"], dtype=NUMPY[datatype]).reshape(-1)
        inputs[tensor["name"]] = flat.reshape(shape)
    return header, inputs, binary


def make_infer_response(model: str, header: dict[str, Any], outputs: dict[str, np.ndarray]) -> tuple[bytes,
                                                                                                    int | None]:
    """(body, JSON header length or None when all outputs are JSON) for the outputs the request asked for."""
    asked = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", False))
             for o in header.get("outputs", [])} or {name: False for name in outputs}
    described, blobs = [], []
    for name, binary in asked.items():
        array = outputs[name]
        datatype = "FP32" if array.dtype == np.float32 else next(k for k, v in NUMPY.items() if v == array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    reply = {"model_name": model, "model_version": "1", "outputs": described}
    if "id" in header:
        reply["id"] = header["id"]
    text = json.dumps(reply).encode()
    return (text + b"".join(blobs), len(text)) if blobs else (text, None)


class FakeTriton:
    """A KServe v2 HTTP server on 127.0.0.1 in a daemon thread; ``url`` is ``host:port`` as tritonclient wants it.

    Use as a context manager (or ``start()``/``stop()``). ``models`` may be changed while it runs."""

    def __init__(self, models: Sequence[EmbeddingModel | PlainModel] = ()):
        self.models = {m.name: m for m in models}
        self.ready = True
        self.requests: list[Seen] = []
        self.faults: deque[Fault] = deque()
        self.on_request: Callable[[Seen], None] | None = None  # runs before each answer (e.g. to unload a model)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control ------------------------------------------------------------------------------------------------

    def start(self) -> FakeTriton:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.01,), name="fake-triton", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeTriton is not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def fail(self, status: int, message: str = "injected failure", path: str = "", times: int = 1,
             close: bool = False) -> None:
        self.faults.append(Fault(status, message, path, times, close))

    def infer_requests(self, model: str | None = None) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/infer") and (model is None or f"/{model}/" in r.path)]

    # -- the API ------------------------------------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def answer(self, seen: Seen, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        parts = [unquote(p) for p in seen.path.strip("/").split("/")]
        if parts[:1] != ["v2"]:
            return _error(404, f"Not Found: {seen.path}")
        rest = parts[1:]
        if seen.method == "GET" and rest == ["health", "live"]:
            return 200, b"", {}
        if seen.method == "GET" and rest == ["health", "ready"]:
            ready = self.ready and all(m.ready for m in self.models.values())
            return (200, b"", {}) if ready else (400, b"", {})
        if seen.method == "POST" and rest == ["repository", "index"]:
            index = [{"name": n, "version": "1", "state": "READY" if m.ready else "UNAVAILABLE"}
                     for n, m in sorted(self.models.items())]
            return 200, json.dumps(index).encode(), {"Content-Type": "application/json"}
        if len(rest) >= 3 and rest[0] == "models":
            name, action = rest[1], rest[-1]
            model = self.models.get(name)
            if action == "ready" and seen.method == "GET":
                return (200, b"", {}) if model is not None and model.ready else (400, b"", {})
            if model is None or not model.ready:
                return _error(400, f"Request for unknown model: '{name}' is not found")
            if action == "config" and seen.method == "GET":
                return 200, json.dumps(model.config()).encode(), {"Content-Type": "application/json"}
            if action == "infer" and seen.method == "POST":
                try:
                    header, seen.inputs, seen.binary_inputs = parse_infer_request(body,
                                                                                  seen.headers.get(HEADER_LENGTH))
                    outputs = model.infer(seen.inputs)
                except InferError as exc:
                    return _error(exc.status, str(exc))
                reply, json_size = make_infer_response(name, header, outputs)
                extra = {"Content-Type": "application/octet-stream" if json_size else "application/json"}
                if json_size is not None:
                    extra[HEADER_LENGTH] = str(json_size)
                return 200, reply, extra
        return _error(400, f"Not supported: {seen.method} {seen.path}")


def _error(status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}


def _handler(fake: FakeTriton) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tritonclient's connection pools expect

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding") in ("gzip", "deflate"):
                body = zlib.decompress(body, 47)  # gzip or zlib
            seen = Seen(self.command, urlsplit(self.path).path, dict(self.headers.items()))
            with fake._lock:
                fake.requests.append(seen)
            if fake.on_request is not None:
                fake.on_request(seen)
            fault = fake._take_fault(seen.path)
            if fault is not None and fault.close:
                self.close_connection = True
                self.connection.close()
                return
            status, reply, headers = _error(fault.status, fault.message) if fault else fake.answer(seen, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    return Handler

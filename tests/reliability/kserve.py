"""Raw KServe v2 HTTP calls with the stdlib ``http.client``: what a client that is not ours may send.

The tests need requests that no well-behaved client library would build (wrong datatype, missing input, a body
that is not JSON, invalid UTF-8 in a BYTES element), and the exact status and message the server answers with.
"""

from __future__ import annotations

import http.client
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, decoded JSON body (or None), raw text, and how long it took."""

    status: int
    body: Any
    text: str
    seconds: float

    @property
    def error(self) -> str:
        return self.body.get("error", "") if isinstance(self.body, dict) else self.text

    def embedding(self, output: str = "EMBEDDING") -> np.ndarray:
        """The ``output`` tensor as a [n, dim] float32 array (fails loudly when the reply has none)."""
        assert self.status == 200, f"HTTP {self.status}: {self.text[:300]}"
        out = next(o for o in self.body["outputs"] if o["name"] == output)
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def request(http_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120.0) -> Reply:
    """Send one request to ``http_url`` (``host:port``) and read the whole answer."""
    host, port = http_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    start = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return Reply(response.status, parsed, text, time.perf_counter() - start)


def text_tensor(data: list, shape: list[int] | None = None, datatype: str = "BYTES",
                name: str = "TEXT") -> dict[str, Any]:
    """A JSON input tensor; the default is the well-formed [n, 1] BYTES tensor the ensemble expects."""
    return {"name": name, "shape": shape or [len(data), 1], "datatype": datatype, "data": data}


def infer(http_url: str, model: str, inputs: list[dict[str, Any]], timeout: float = 120.0) -> Reply:
    """POST /v2/models/<model>/infer with a JSON body (outputs as JSON)."""
    body = json.dumps({"inputs": inputs}).encode("utf-8")
    return request(http_url, "POST", f"/v2/models/{model}/infer", body, timeout=timeout)


def infer_raw_bytes(http_url: str, model: str, items: list[bytes], timeout: float = 120.0) -> Reply:
    """Send arbitrary bytes as TEXT elements through the binary-data extension (JSON cannot carry invalid UTF-8)."""
    payload = b"".join(struct.pack("<I", len(item)) + item for item in items)
    header = json.dumps({
        "inputs": [{"name": "TEXT", "shape": [len(items), 1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)}}],
        "outputs": [{"name": "EMBEDDING", "parameters": {"binary_data": False}}],
    }).encode("utf-8")
    return request(http_url, "POST", f"/v2/models/{model}/infer", header + payload,
                   headers={"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(header))}, timeout=timeout)


def is_ready(http_url: str) -> bool:
    try:
        return request(http_url, "GET", "/v2/health/ready", timeout=5).status == 200
    except OSError:
        return False


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, dim] arrays."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

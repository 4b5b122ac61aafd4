"""A stand-in peer for bench/peers.py's harness tests: a standard-library HTTP server with the OpenAI embeddings
shape (``GET /health``, ``POST /embeddings`` answering base64 float32 vectors). Each text's vector is derived from
its bytes, so a test can tell whether answers come back in order; the text ``"wrong-count"`` makes it drop a vector,
as a broken server might.

    python tests/fakes/embeddings_server.py PORT
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

DIM = 8


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype("<f4")
    return v / np.linalg.norm(v)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the harness's connections expect

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(200, {"pythonpath": os.environ.get("PYTHONPATH"), "cwd": os.getcwd()}) \
            if self.path == "/health" else \
            self._answer(404, {"error": self.path})

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = [t for t in request["input"] if t != "wrong-count"]
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(vector(t).tobytes()).decode()}
                for i, t in reversed(list(enumerate(texts)))]  # out of order: the reader must sort by index
        self._answer(200, {"object": "list", "data": data, "model": request["model"]})

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

"""Peers in the same run: another server of the same model on the same card, driven over its own OpenAI-compatible
HTTP API with the same batches, concurrencies and timing loop as our Triton (bench.served.measure_server).

Infinity (``infinity-emb``) is the peer the GPU issue names. It pins numpy < 2, sentence-transformers < 4 and
transformers <= 5.0, so it cannot share our environment: it runs from an interpreter of its own
(``--infinity-python``; scripts/gpu.sh builds one from scripts/peer-infinity-requirements.txt) with its defaults
(torch engine, dtype auto = fp16 on a GPU, its dynamic batching), apart from the device, host and port.

Each request asks for base64 vectors, as our gateway's callers do by default, so neither side pays for JSON
floats; every answer is checked for one vector per text, so a server that answers fast but wrong fails the run.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.machine import nvml_used_mib
from bench.measure import Batches, Call, Settings
from bench.served import measure_server
from exporter.serve import free_ports
from gateway.process import ServiceProcess

log = logging.getLogger("exporter.bench.peers")

START_TIMEOUT_S = 600.0  # a cold start loads torch and the model and warms up: minutes on a busy host
REQUEST_TIMEOUT_S = 600.0


class PeerError(RuntimeError):
    """A peer's answer that is not one finite vector per text."""


@dataclass(frozen=True)
class Peer:
    """How to start one peer and where it answers."""

    name: str
    package: str  # its distribution name, for the version in the report
    command: Callable[[str, Path, str, int, bool], list[str]]  # (python, model dir, served name, port, gpu) -> argv
    embeddings_path: str
    health_path: str
    env: tuple[tuple[str, str], ...] = ()


def _infinity_command(python: str, model_dir: Path, served_name: str, port: int, gpu: bool) -> list[str]:
    return [python, "-m", "infinity_emb.cli", "v2", "--model-id", str(model_dir), "--served-model-name",
            served_name, "--host", "127.0.0.1", "--port", str(port), "--device", "cuda" if gpu else "cpu",
            "--log-level", "warning"]


INFINITY = Peer("infinity", "infinity-emb", _infinity_command, "/embeddings", "/health",
                # transformers 4 imports jax/tensorflow when a host has them (GPU images often do); theirs are
                # built for numpy 2 and fail to load beside Infinity's numpy 1.26, so torch alone is allowed
                env=(("INFINITY_ANONYMOUS_USAGE_STATS", "0"), ("DO_NOT_TRACK", "1"), ("USE_TORCH", "1"),
                     ("USE_FLAX", "0"), ("USE_TF", "0")))
PEERS = {peer.name: peer for peer in (INFINITY,)}


def peer_process(peer: Peer, python: str, model_dir: Path, served_name: str, gpu: bool,
                 start_timeout_s: float = START_TIMEOUT_S) -> tuple[ServiceProcess, int]:
    """The peer's server on a free port (not started), and the port. It runs from the temporary directory without
    our PYTHONPATH: our checkout's packages (``python -m`` puts the working directory first) must not shadow the
    peer's own environment."""
    [port] = free_ports(1)
    env = {**dict(peer.env), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = ServiceProcess(peer.name, peer.command(python, model_dir, served_name, port, gpu),
                             f"http://127.0.0.1:{port}{peer.health_path}", env=env, unset=("PYTHONPATH",),
                             cwd=tempfile.gettempdir(), ready_timeout=start_timeout_s)
    return process, port


def embeddings_call(port: int, path: str, model: str, stack: ExitStack) -> Call:
    """One keep-alive connection posting OpenAI-style embedding requests (base64 vectors) for one thread. Each
    answer must hold one finite vector per text, all of one width, in order."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    stack.callback(connection.close)

    def call(batch: list[str]) -> np.ndarray:
        body = json.dumps({"model": model, "input": batch, "encoding_format": "base64"}).encode()
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise PeerError(f"POST {path} answered {response.status}: {payload[:300]!r}")
        return decode_embeddings(json.loads(payload), len(batch))

    return call


def decode_embeddings(answer: dict[str, Any], texts: int) -> np.ndarray:
    """The vectors of an OpenAI-style embeddings answer with base64 data, as a (texts, dim) float32 array; a
    PeerError when the answer holds another number of vectors, vectors of different widths, or non-finite values."""
    data = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
    if len(data) != texts:
        raise PeerError(f"asked for {texts} vectors, the answer holds {len(data)}")
    vectors = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data]
    if len({v.size for v in vectors}) != 1 or not vectors[0].size:
        raise PeerError(f"vector widths differ or are empty: {sorted({v.size for v in vectors})}")
    matrix = np.stack(vectors)
    if not np.isfinite(matrix).all():
        raise PeerError("the answer holds non-finite values")
    return matrix


@dataclass
class PeerRun:
    """What one peer's served step produced."""

    results: list[dict[str, Any]]  # bench.served.measure_server records, runner = the peer's name
    vectors: np.ndarray  # the quality sentences' vectors, in order
    info: dict[str, Any]  # the peer's version and command line, for the report


def peer_version(peer: Peer, python: str) -> str:
    """The peer package's version as its own interpreter reports it ('unknown' if that fails)."""
    code = f"import importlib.metadata as m; print(m.version({peer.package!r}))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def measure_peer(peer: Peer, python: str, model_dir: Path, served_name: str, runs: list[tuple[Batches, int]],
                 settings: Settings, on_window: Callable[[], None], sentences: list[str], batch_size: int,
                 gpu: bool) -> PeerRun:
    """Start ``peer`` on ``model_dir``; embed ``sentences`` (for the quality figures: the peer must serve the same
    model, not merely answer), measure every ``(workload, concurrency)`` as our served runs are, stop it."""

    def make_calls(concurrency: int, batch_size: int, stack: ExitStack) -> list[Call]:
        return [embeddings_call(port, peer.embeddings_path, served_name, stack) for _ in range(concurrency)]

    gpu_before = nvml_used_mib() if gpu else None
    server, port = peer_process(peer, python, model_dir, served_name, gpu)
    with server, ExitStack() as stack:
        log.info("%s serves %s on port %d", peer.name, served_name, port)
        [call] = make_calls(1, batch_size, stack)
        vectors = np.concatenate([call(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)])
        results = measure_server(server.process.pid, gpu_before, make_calls, runs, settings, peer.name, on_window)
    return PeerRun(results, vectors, {"version": peer_version(peer, python), "python": python,
                                      "command": " ".join(server.command)})

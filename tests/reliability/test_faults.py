"""Faults: the server SIGKILLed under load, ``exporter build`` SIGKILLed mid-way, a model failing internally.

The server-kill test is the only one in the suite that stops the shared session server; it restarts it on the
same ports before it returns (also when it fails), so later tests find it serving again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import MODEL
from tests.reliability.conftest import PROBE
from tests.reliability.kserve import infer, is_ready, text_tensor
from tests.reliability.repos import fp32_only_copy, manifest_mismatches

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 4
REQUEST_TIMEOUT = 20.0


# -- server SIGKILLed mid-load ------------------------------------------------------------------------------------

def _load_until_failure(client, texts: list[str], first_call: threading.Event, outcome: dict) -> None:
    """Embed ``texts`` again and again until a call raises; record every result's shape and the final error."""
    outcome["shapes"] = []
    while True:
        started = time.monotonic()
        try:
            vectors = client.embed(texts)
        except Exception as exc:  # noqa: BLE001 - the test asserts on its type
            outcome.update(error=exc, call_seconds=time.monotonic() - started, failed_at=time.monotonic())
            return
        outcome["shapes"].append(vectors.shape)
        first_call.set()


def test_server_sigkilled_mid_load_fails_in_flight_calls_cleanly_and_the_client_recovers(
        triton_server, fp32_model):
    from client import EmbeddingClient, Retry, ServerUnavailable, Timeouts

    texts = [f"{PROBE} Variation {i}." for i in range(48)]
    retry = Retry(attempts=3, backoff=0.2, max_backoff=1.0)
    clients = [EmbeddingClient(triton_server.http_url, model=fp32_model, batch_size=16, retry=retry,
                               timeouts=Timeouts(connect=2.0, request=REQUEST_TIMEOUT)) for _ in range(CLIENTS)]
    try:
        expected = clients[0].embed(texts)
        outcomes = [{} for _ in clients]
        started = [threading.Event() for _ in clients]
        threads = [threading.Thread(target=_load_until_failure, args=(c, texts, e, o), daemon=True)
                   for c, e, o in zip(clients, started, outcomes)]
        for thread in threads:
            thread.start()
        assert all(event.wait(60) for event in started), "the load never got going"
        killed_at = time.monotonic()
        os.killpg(triton_server.process.pid, signal.SIGKILL)
        # bound: one request timeout per attempt plus the backoff between attempts, plus slack for 2 cores
        bound = retry.attempts * (REQUEST_TIMEOUT + retry.max_backoff * 1.5) + 10
        for thread in threads:
            thread.join(timeout=bound)
        assert not any(t.is_alive() for t in threads), f"a client call hung for more than {bound:.0f} s"
        for outcome in outcomes:
            assert isinstance(outcome["error"], ServerUnavailable), repr(outcome["error"])
            assert outcome["failed_at"] - killed_at < bound
            assert all(shape == (len(texts), 384) for shape in outcome["shapes"])  # no partial array
    finally:
        triton_server.stop()  # reaps what SIGKILL left and frees the ports
        triton_server.start()
    for client in clients:  # the same client objects work again after the restart
        np.testing.assert_allclose(client.embed(texts), expected, rtol=0, atol=1e-5)
        client.close()


# -- a python-backend model raising internally ----------------------------------------------------------------------

def _encoder_request(url: str, model: str, ids: list[int]):
    inputs = [{"name": name, "shape": [1, len(ids)], "datatype": "INT64", "data": data}
              for name, data in (("input_ids", ids), ("attention_mask", [1] * len(ids)),
                                 ("token_type_ids", [0] * len(ids)))]
    return infer(url, f"{model}_encoder", inputs)


def _vector(reply) -> np.ndarray:
    return reply.embedding(output="sentence_embedding")


def test_a_model_failing_internally_answers_500_to_that_request_only(triton_server, fp32_model):
    """Token ids outside the vocabulary make ONNX Runtime raise inside the python-backend encoder."""
    url = triton_server.http_url
    good_ids, bad_ids = [101, 7592, 2088, 102], [101, 10**9, 102]
    expected = _vector(_encoder_request(url, fp32_model, good_ids))
    jobs = [bad_ids if i % 4 == 0 else good_ids for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda ids: _encoder_request(url, fp32_model, ids), jobs))
    for ids, reply in zip(jobs, replies):
        if ids is bad_ids:
            assert reply.status == 500
            assert "the encoder failed on this request" in reply.error and "out of range" in reply.error
        else:
            np.testing.assert_allclose(_vector(reply), expected, rtol=0, atol=1e-5)
    assert is_ready(url)


# -- exporter build SIGKILLed at each of its stages ----------------------------------------------------------------

# Kill points are events the build leaves in the file system (polled every few ms), not delays guessed from a timed
# build: each one lands in its stage however loaded the machine is, and no whole build is spent measuring. In order:
# its staging directory appears (imports and model loading done, export starting); the export has written its ONNX
# graph inside its own staging directory (optimisation and quality gate running); the gate has passed and written
# report.json (repository assembly and validation running, before the swap).
KILL_POINTS = {
    "staging directory created": lambda staging: staging.is_dir(),
    "ONNX graph written": lambda staging: any(staging.glob(".artefacts/.*.building-*/model.onnx")),
    "gate passed, repository being assembled": lambda staging: any(staging.glob(".artefacts/*/report.json")),
}


def _seen(event, staging: Path) -> bool:
    try:
        return event(staging)
    except OSError:  # a directory vanished while it was listed: not seen yet
        return False


def _kill_build_at(command: list[str], repository: Path, point: str, timeout: float = 600.0) -> None:
    """Start ``command`` (a build into ``repository``), SIGKILL its process group once ``point`` is seen."""
    build = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    staging = repository.parent / f".{repository.name}.building-{build.pid}"  # exporter.atomic.staging_name
    deadline = time.monotonic() + timeout
    try:
        while not _seen(KILL_POINTS[point], staging):
            assert build.poll() is None, f"the build ended (code {build.returncode}) before {point!r} was seen"
            assert time.monotonic() < deadline, f"{point!r} not seen within {timeout:.0f} s"
            time.sleep(0.005)
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait(timeout=30)
    assert build.returncode == -signal.SIGKILL, f"the build ended by itself right after {point!r}"


def test_build_sigkilled_at_each_stage_leaves_the_previous_repository_serving(
        built_repository, tmp_path, triton_server, fp32_model):
    from exporter.serve import ServerSettings, TritonServer

    repository = tmp_path / "model_repository"
    fp32_only_copy(built_repository, repository)
    assert manifest_mismatches(repository) == []
    name = json.loads((repository / "manifest.json").read_text())["models"][0]["name"]
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump([{"model": MODEL, "name": name, "precision": "fp32"}]))
    before = (repository / "manifest.json").read_bytes()
    command = [sys.executable, "-m", "exporter", "build", "--models-file", str(models_file), "--device", "cpu",
               "--log-level", "WARNING", "--repository", str(repository)]
    for point in KILL_POINTS:
        _kill_build_at(command, repository, point)
        assert (repository / "manifest.json").read_bytes() == before, f"killed at {point!r}: manifest changed"
        assert manifest_mismatches(repository) == [], f"killed at {point!r}"
    # each build removed the staging directory the build killed before it had left: only the last one's remains
    assert len(list(tmp_path.glob(f".{repository.name}.building-*"))) == 1
    with TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0)) as server:
        served = infer(server.http_url, name, [text_tensor([PROBE])]).embedding()
    shared = infer(triton_server.http_url, fp32_model, [text_tensor([PROBE])]).embedding()
    np.testing.assert_allclose(served, shared, rtol=0, atol=1e-6)


def test_manifest_check_notices_a_changed_file(built_repository, tmp_path):
    repository = tmp_path / "repo"
    fp32_only_copy(built_repository, repository)
    model = json.loads((repository / "manifest.json").read_text())["models"][0]["triton_models"]["encoder"]
    with (repository / model / "1" / "model.onnx").open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    assert manifest_mismatches(repository) == [f"{repository / model / '1' / 'model.onnx'}: sha256 differs "
                                                "from the manifest"]

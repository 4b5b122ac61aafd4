"""Rolling model update with zero downtime: a new build of the same model is published into the served repository
and loaded beside the old version while clients keep sending requests (the scale-out issue's acceptance test)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from client import EmbeddingClient
from exporter.errors import ServeError
from exporter.serve import ServerSettings, TritonServer
from exporter.triton.config import ServingOptions
from exporter.triton.repository import ModelEntry, assemble, publish, published_versions, staging

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a rolling update must not drop requests", "version two of the same model", "short", "tea and chess"]
NAME = "rolling"


def publish_build(dest: Path, entries: list[ModelEntry], corrupt_encoder: bool = False) -> dict:
    """What ``exporter build`` does after the export step: assemble (numbering versions after the published
    repository's) and swap in atomically. ``corrupt_encoder`` makes a build whose encoder cannot load."""
    with staging(dest) as root:
        manifest = assemble(root, entries, ServingOptions(), published_versions(dest))
        if corrupt_encoder:
            model = manifest["models"][0]
            onnx_file = root / model["triton_models"]["encoder"] / str(model["version"]) / "model.onnx"
            onnx_file.unlink()  # a hard link into the shared artefact: unlink, never write through it
            onnx_file.write_bytes(b"not an onnx graph")
        publish(root, dest)
    return manifest


@pytest.fixture
def rolling_repository(bundled_artefact, tmp_path) -> tuple[Path, list[ModelEntry]]:
    entries = [ModelEntry(replace(bundled_artefact.plan("fp32"), name=NAME), bundled_artefact("fp32"))]
    dest = tmp_path / "model_repository"
    assert publish_build(dest, entries)["models"][0]["version"] == 1
    return dest, entries


def test_a_new_build_is_loaded_under_load_without_a_failed_request(rolling_repository):
    dest, entries = rolling_repository
    server = TritonServer(ServerSettings(dest, http_port=0, grpc_port=0, metrics_port=0)).start()
    try:
        with EmbeddingClient(server.http_url, model=NAME) as client:
            reference = client.embed(TEXTS)
        errors: list[str] = []
        seen: list[tuple[float, tuple[str, ...]]] = []  # (when a request started, versions that answered)
        stop = threading.Event()

        def worker() -> None:
            with EmbeddingClient(server.http_url, model=NAME) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        result = client.embed_with_usage(TEXTS)
                    except Exception as exc:  # noqa: BLE001 - any failure across the swap is what this test counts
                        errors.append(repr(exc))
                        continue
                    if not np.allclose(result.vectors, reference, atol=1e-5):
                        errors.append("mismatched vectors")
                    seen.append((started, result.model_versions))

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        published = time.monotonic()
        manifest = publish_build(dest, entries)
        assert manifest["models"][0]["version"] == 2
        assert sorted(p.name for p in (dest / f"{NAME}_encoder").iterdir() if p.is_dir()) == ["2"]
        assert server.reload() == [NAME]
        swapped = time.monotonic()
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        before = {v for t, versions in seen if t < published for v in versions}
        after = [versions for t, versions in seen if t > swapped]
        assert {v for _, versions in seen for v in versions} == {"1", "2"}, "both versions answered"
        assert after and all(versions == ("2",) for versions in after), "new requests go to the new build"
        assert before == {"1"}, "the old build served until the new one was published"

        # a build that cannot load leaves the serving version in place, and says so
        publish_build(dest, entries, corrupt_encoder=True)
        with pytest.raises(ServeError, match=rf"load of {NAME}_encoder failed; the previous version keeps serving"):
            server.reload()
        with EmbeddingClient(server.http_url, model=NAME) as client:
            result = client.embed_with_usage(TEXTS)
        assert result.model_versions == ("2",) and np.allclose(result.vectors, reference, atol=1e-5)
        assert not list(dest.rglob("__pycache__")), "serving leaves the published repository as built"
    finally:
        server.stop()


def test_serve_reloads_when_a_new_build_is_published(rolling_repository):
    dest, entries = rolling_repository
    cli = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--repository", str(dest), "--http-port", "0",
                            "--grpc-port", "0", "--metrics-port", "0", "--json"], cwd=REPO_ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(cli.stdout.readline())
        publish_build(dest, entries)
        deadline = time.monotonic() + 180
        line = ""
        while "reloaded" not in line and time.monotonic() < deadline:
            line = cli.stderr.readline()
        assert f"{NAME} v2" in line, line
        with urllib.request.urlopen(f"{endpoints['http']}/v2/models/{NAME}", timeout=10) as response:
            assert json.load(response)["versions"] == ["2"]
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()

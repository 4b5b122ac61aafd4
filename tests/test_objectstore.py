"""Publishing repositories to object storage, against a real S3-compatible server on loopback (moto's server mode):
immutable builds, the pointer, a killed upload, ls/gc, sync with hash checks, and ``exporter serve s3://``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exporter import objectstore
from exporter.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "emb-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on a free loopback port and the standard AWS environment pointing at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    objectstore.open_store(f"s3://{BUCKET}").fs.mkdir(BUCKET)
    yield env
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def root(s3_env, request) -> str:
    return f"s3://{BUCKET}/{request.node.name[:40]}"


def test_build_ids_are_unique_and_sort_by_time():
    """Each build's prefix is immutable: two publishes in the same second (found by CI: the same content twice)
    must not share one, and listing by id keeps the order they were made in."""
    ids = [objectstore.new_build_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)


def test_unknown_scheme_and_incomplete_targets_are_clear_errors(s3_env, tmp_path):
    with pytest.raises(ConfigError, match=r"repository URL 'ftp://x/y': expected s3://bucket/prefix"):
        objectstore.open_store("ftp://x/y")
    with pytest.raises(ConfigError, match="has no CURRENT.json: nothing was published there yet"):
        objectstore.sync(f"s3://{BUCKET}/empty", tmp_path)
    with pytest.raises(ConfigError, match="--keep 0"):
        objectstore.gc(f"s3://{BUCKET}/empty", keep=0)


def published_files(repository: Path) -> list[Path]:
    """Every file of a repository but Python bytecode, which publishing leaves out (tests that import a python
    model in-process leave some in the shared repository fixtures)."""
    return [p for p in repository.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_publish_makes_an_immutable_current_build_and_sync_verifies_it(fp32_repository, root, tmp_path):
    first = objectstore.publish(fp32_repository, root)
    second = objectstore.publish(fp32_repository, root)
    assert first.build_id != second.build_id
    builds = objectstore.list_builds(root)
    assert [(b.build_id, b.complete, b.current) for b in builds] == [
        (first.build_id, True, False), (second.build_id, True, True)]
    files = published_files(fp32_repository)
    assert builds[1].size == sum(p.stat().st_size for p in files)
    local = objectstore.sync(root, tmp_path / "cache")
    assert local.name == second.build_id
    for path in files:
        assert (local / path.relative_to(fp32_repository)).read_bytes() == path.read_bytes()
    # a tampered object is refused, and nothing half-written is left in the cache
    store = objectstore.open_store(root)
    store.fs.pipe_file(store.path("builds", first.build_id, "manifest.json"), b"{}")
    with pytest.raises(Exception, match="does not match its sha256"):
        objectstore.sync(root, tmp_path / "cache", build_id=first.build_id)
    assert sorted(p.name for p in (local.parent).iterdir()) == [second.build_id]
    # a sync killed mid-download (its process gone) left a partial copy: the next sync removes it
    gone = subprocess.Popen(["true"])
    gone.wait()
    partial = local.parent / f".{first.build_id}.building-{gone.pid}.x1y2"
    (partial / "m").mkdir(parents=True)
    store.fs.pipe_file(store.path("builds", first.build_id, "manifest.json"),
                       (fp32_repository / "manifest.json").read_bytes())
    assert objectstore.sync(root, tmp_path / "cache", build_id=first.build_id).name == first.build_id
    assert sorted(p.name for p in (local.parent).iterdir()) == sorted([first.build_id, second.build_id])


def test_gc_keeps_the_current_and_the_newest_builds(fp32_repository, root):
    ids = [objectstore.publish(fp32_repository, root).build_id for _ in range(3)]
    assert objectstore.gc(root, keep=2, min_age=0) == [ids[0]]
    assert [b.build_id for b in objectstore.list_builds(root)] == ids[1:]
    assert objectstore.gc(root, keep=1, min_age=0) == [ids[1]]
    assert [(b.build_id, b.current) for b in objectstore.list_builds(root)] == [(ids[2], True)]


def test_a_killed_upload_leaves_the_previous_build_current(fp32_repository, root, s3_env, tmp_path):
    previous = objectstore.publish(fp32_repository, root)
    store = objectstore.open_store(root)
    code = f"from exporter import objectstore; objectstore.publish({str(fp32_repository)!r}, {root!r})"
    upload = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env={**os.environ, **s3_env})
    try:
        deadline = time.monotonic() + 60
        partial = None
        while partial is None and time.monotonic() < deadline and upload.poll() is None:
            store.fs.invalidate_cache()
            for build in objectstore.list_builds(root):
                if build.build_id != previous.build_id:
                    partial = build.build_id
            time.sleep(0.02)
        assert partial is not None, "the upload never started (or finished before it could be killed)"
        upload.send_signal(signal.SIGKILL)
        upload.wait(timeout=10)
    finally:
        if upload.poll() is None:
            upload.kill()
    builds = {b.build_id: b for b in objectstore.list_builds(root)}
    assert builds[partial].complete is False, "killed before build.json: the build must count as incomplete"
    assert objectstore.current_build(store) == previous.build_id
    assert objectstore.sync(root, tmp_path / "cache").name == previous.build_id
    assert objectstore.gc(root, keep=1, min_age=3600) == [], "a young incomplete build may be an upload in progress"
    assert objectstore.gc(root, keep=1, min_age=0) == [partial]
    assert [b.build_id for b in objectstore.list_builds(root)] == [previous.build_id]


def test_serve_syncs_an_object_store_repository_and_serves_it(fp32_repository, root, s3_env, tmp_path,
                                                              served_models):
    from client import EmbeddingClient

    objectstore.publish(fp32_repository, root)
    cli = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--repository", root, "--cache-dir",
                            str(tmp_path / "cache"), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                            "--json"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **s3_env})
    try:
        line = cli.stdout.readline()
        if not line:
            cli.wait(timeout=30)
            log = [ln for ln in cli.stderr.read().splitlines() if "UNAVAILABLE" in ln or "error" in ln.lower()]
            pytest.fail(f"serve exited with {cli.returncode}: {log}")
        endpoints = json.loads(line)
        with EmbeddingClient(endpoints["http"], model=served_models["fp32"]) as client:
            vector = client.embed("object storage")
        assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    assert "synced " + root in cli.stderr.read()


def test_repo_cli_lists_builds_as_json(fp32_repository, root, capsys):
    from exporter.cli import main

    build = objectstore.publish(fp32_repository, root)
    assert main(["repo", "ls", root, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [build.to_dict()]


def test_build_publishes_to_the_object_store_and_a_bad_url_fails_before_exporting(root, tmp_path, capsys):
    from exporter.cli import main

    from export_helpers import tiny_st_model

    model = tiny_st_model(tmp_path / "tiny")
    args = ["build", "--model", str(model), "--precision", "fp32", "--verification-limit", "8", "--json"]
    assert main([*args, "--repository", root]) == 0
    result = json.loads(capsys.readouterr().out)
    [build] = objectstore.list_builds(root)
    assert build.current and result["repository"] == objectstore.open_store(root).build_url(build.build_id)
    assert build.models == tuple(m["name"] for m in result["models"])
    assert main([*args, "--repository", "ftp://bucket/x"]) == 2
    assert "expected s3://bucket/prefix" in capsys.readouterr().err

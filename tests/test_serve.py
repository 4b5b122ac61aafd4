"""The local Triton launcher: health endpoints, clean stop (no process left), restart, the serve CLI, failures."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.errors import ConfigError
from exporter.serve import ServerSettings, TritonServer, group_members

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def port_open(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_health_and_metrics_endpoints(triton_server, triton_http, served_models):
    assert triton_http.is_server_live() and triton_http.is_server_ready()
    for name in served_models.values():
        for model in (name, f"{name}_tokenizer", f"{name}_encoder"):
            assert triton_http.is_model_ready(model), model
    assert http_status(f"http://{triton_server.http_url}/v2/health/ready") == 200
    with urllib.request.urlopen(triton_server.metrics_url, timeout=5) as response:
        assert b"nv_inference_request_success" in response.read()
    assert triton_server.http_url.startswith("127.0.0.1:")


def test_stop_leaves_no_process_and_restart_serves_again(fp32_repository):
    server = TritonServer(ServerSettings(fp32_repository, http_port=0, grpc_port=0, metrics_port=0))
    try:
        server.start()
        pgid = server.process.pid
        assert len(group_members(pgid)) >= 3  # tritonserver + one python stub per python model
        server.restart()
        assert http_status(f"http://{server.http_url}/v2/health/ready") == 200
        pgid = server.process.pid
    finally:
        server.stop()
    assert group_members(pgid) == []
    assert not port_open(server.http_url) and not port_open(server.grpc_url)
    server.stop()  # idempotent


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@contextlib.contextmanager
def serve_cli(repository: Path, *extra: str):
    """``exporter serve --json`` on free ports: the process and the endpoints it printed when ready; killed if the
    test leaves it running (a failed assertion must not leave servers behind)."""
    cli = run_cli(["serve", "--repository", str(repository), "--http-port", "0", "--grpc-port", "0",
                   "--metrics-port", "0", "--json", *extra])
    try:
        yield cli, json.loads(cli.stdout.readline())
    finally:
        if cli.poll() is None:
            cli.kill()


def test_serve_cli_prints_endpoints_and_stops_its_process_group_on_sigterm(fp32_repository, served_models):
    with serve_cli(fp32_repository) as (cli, endpoints):
        assert endpoints["models"] == [served_models["fp32"]]
        assert http_status(f"{endpoints['http']}/v2/health/ready") == 200
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
    assert group_members(endpoints["pid"]) == []
    assert not port_open(endpoints["http"].removeprefix("http://"))


def test_serve_cli_with_gateway_port_serves_the_openai_api_and_stops_it_too(fp32_repository, served_models):
    import openai

    with serve_cli(fp32_repository, "--gateway-port", "0") as (cli, endpoints):
        with openai.OpenAI(base_url=endpoints["openai"], api_key="unused", max_retries=0) as sdk:
            assert [m.id for m in sdk.models.list().data] == [served_models["fp32"]]
            assert len(sdk.embeddings.create(model=served_models["fp32"], input="hello").data[0].embedding) == 384
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
    assert not port_open(endpoints["openai"].removeprefix("http://").removesuffix("/v1"))
    assert group_members(endpoints["pid"]) == []


def test_a_model_that_fails_to_load_is_named_with_the_log_tail(fp32_repository, tmp_path, served_models):
    broken = tmp_path / "broken"
    shutil.copytree(fp32_repository, broken, copy_function=os.link)
    name = served_models["fp32"]
    onnx_file = broken / f"{name}_encoder" / "1" / "model.onnx"
    onnx_file.unlink()  # a hard link: unlink first so the built repository is not touched
    onnx_file.write_bytes(b"not an onnx graph")
    started = time.monotonic()
    cli = run_cli(["serve", "--repository", str(broken), "--http-port", "0", "--grpc-port", "0",
                   "--metrics-port", "0", "--ready-timeout", "60"])
    out, err = cli.communicate(timeout=90)
    assert cli.returncode == 1, (out, err)
    assert f"{name}_encoder" in err and "failed to load" in err
    assert "tritonserver log tail" in err
    assert time.monotonic() - started < 60, "failure should be reported as soon as the model fails"


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"manifest.json is missing; run 'python -m exporter build' first"):
        TritonServer(ServerSettings(tmp_path / "nothing"))


def test_binding_all_interfaces_warns_and_unknown_binary_is_a_clear_error(fp32_repository, caplog):
    # a missing binary fails right after the bind warning, so nothing is ever exposed on 0.0.0.0 by this test
    server = TritonServer(ServerSettings(fp32_repository, host="0.0.0.0", tritonserver="no-such-tritonserver",
                                         http_port=0, grpc_port=0, metrics_port=0))
    assert server.http_url.startswith("127.0.0.1:")  # clients of a 0.0.0.0 server connect over loopback
    with caplog.at_level("WARNING", logger="exporter.serve"):
        with pytest.raises(ConfigError, match=r"--tritonserver 'no-such-tritonserver' is neither an executable"):
            server.start()
    assert any("0.0.0.0" in r.message and "reachable from other hosts" in r.message for r in caplog.records)
    assert server.process is None


GOOD_CONFIG = 'name: "m"\nbackend: "python"\n'
START_FAILURES = {  # case -> (--tritonserver, the model's config.pbtxt, what start() raises)
    "missing binary": ("no-such-tritonserver", GOOD_CONFIG, ConfigError, "neither an executable path nor a command"),
    "bad repository": (None, 'name: "m"\nno_such_field: 1\n', ConfigError, "model configuration schema"),
    "binary that cannot run": ("FAKE", GOOD_CONFIG, OSError, "Exec format error"),
}


@pytest.mark.parametrize("case", START_FAILURES)
def test_a_start_that_fails_before_the_server_runs_removes_its_work_directory(case, tmp_path, monkeypatch):
    """The temp dir for the local repository view and the log is made before the process: every failure path,
    also those before Popen, must remove it (the TritonServer is kept alive here, so no finalizer hides a leak)."""
    binary, config, error, words = START_FAILURES[case]
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where TemporaryDirectory puts the work directory
    repository = tmp_path / "repo"
    (repository / "m").mkdir(parents=True)
    (repository / "m" / "config.pbtxt").write_text(config)
    (repository / "manifest.json").write_text(json.dumps({"format": 1, "models": []}))
    if binary == "FAKE":  # executable bits, but not a program the kernel can run
        binary = str(tmp_path / "tritonserver")
        Path(binary).write_bytes(b"\x00not an executable\n")
        Path(binary).chmod(0o755)
    server = TritonServer(ServerSettings(repository, tritonserver=binary, http_port=0, grpc_port=0,
                                         metrics_port=0))
    with pytest.raises(error, match=words):
        server.start()
    assert list(temp.iterdir()) == [], f"{case}: the start left its work directory behind"
    assert server.process is None


def test_serve_cli_starts_replicas_on_their_own_ports_and_stops_them_all(fp32_repository, served_models):
    with serve_cli(fp32_repository, "--replicas", "2") as (cli, endpoints):
        replicas = endpoints["replicas"]
        assert len(replicas) == 2 and len({r["http"] for r in replicas}) == 2
        assert endpoints["http"] == replicas[0]["http"]
        assert endpoints["triton_url"] == ",".join(r["http"].removeprefix("http://") for r in replicas)
        for replica in replicas:
            assert http_status(f"{replica['http']}/v2/health/ready") == 200
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    for replica in replicas:
        assert group_members(replica["pid"]) == []
        assert not port_open(replica["http"].removeprefix("http://"))


@pytest.mark.parametrize(("args", "words"), [
    (["--replicas", "0"], "--replicas=0: allowed 1-16"),
    (["--replicas", "3", "--http-port", "65530"], "--replicas=3 needs ports up to 65536"),
])
def test_bad_replica_counts_are_clear_errors(args, words, tmp_path):
    cli = run_cli(["serve", "--repository", str(tmp_path), *args])
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 2 and words in err

"""Shared session fixtures: a built Triton repository of the bundled model and a real local Triton serving it.

Fixtures (all session-scoped, built once per test run, on demand):

- ``built_repository`` -> ``Path``: ``python -m exporter build`` output (via :func:`exporter.build.build_repository`)
  for ``sentence-transformers/all-MiniLM-L6-v2`` (bundled, offline) at every precision of :data:`PRECISIONS`,
  on a CPU target, in a temp dir. Read its ``manifest.json`` for names/dims/routes.
- ``served_models`` -> ``dict[str, str]``: precision -> public (ensemble) model name, e.g. ``{"fp32": "minilm-fp32"}``.
  ``served_model("int8")`` (a fixture returning a function) asks for one precision and skips, visibly, when that
  route is not built yet.
- ``triton_server`` -> :class:`exporter.serve.TritonServer`, started on free ports: ``http_url`` / ``grpc_url``
  (``host:port``, as tritonclient wants them), ``metrics_url``, ``start()``, ``stop()``, ``restart()``, ``models``.
  Teardown stops it and kills its whole process group, also on interrupted runs (atexit).
- ``fp32_repository`` -> ``Path``: the fp32 model alone (hard links), for tests that start their own server.
- ``triton_http`` -> a ``tritonclient.http.InferenceServerClient`` on that server.

Do not stop the shared server in a test; start your own ``TritonServer(ServerSettings(built_repository,
http_port=0, grpc_port=0, metrics_port=0))`` for lifecycle tests.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PRECISIONS = ("fp32", "int8", "int4")
VERIFICATION_LIMIT = 64  # gate sentences per build: enough to catch a broken route, quick on 2 cores
# Every route built for the tests must pass its own quality gate: a degraded artefact fails the fixture.
ACCEPT_DEGRADED = False


def model_name(precision: str) -> str:
    return f"minilm-{precision}"


def build_bundled(dest: Path, precisions: list[str]) -> Path:
    """Build the bundled model at ``precisions`` into ``dest`` through the same code path as the CLI."""
    import yaml

    from exporter.artefact import ExportOptions
    from exporter.build import build_repository
    from exporter.context import add_model_arguments, load_context

    models_file = dest.parent / f"{dest.name}-models.yaml"
    models_file.write_text(yaml.safe_dump(
        [{"model": MODEL, "name": model_name(p), "precision": p} for p in precisions]))
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    ctx = load_context(parser.parse_args(["--models-file", str(models_file), "--device", "cpu"]))
    build_repository(ctx.plans, ctx.model_dirs, dest,
                     export_options=ExportOptions(verification_limit=VERIFICATION_LIMIT,
                                                accept_degraded=ACCEPT_DEGRADED))
    return dest


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory) -> Path:
    return build_bundled(tmp_path_factory.mktemp("triton") / "model_repository", list(PRECISIONS))


@pytest.fixture(scope="session")
def fp32_repository(built_repository, tmp_path_factory) -> Path:
    """A repository holding only the fp32 model (hard links into ``built_repository``): quick to start, for
    server lifecycle tests that launch their own servers."""
    import json

    dest = tmp_path_factory.mktemp("triton-fp32") / "model_repository"
    manifest = json.loads((built_repository / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["precision"] == "fp32"]
    dest.mkdir()
    for model in manifest["models"][0]["triton_models"].values():
        shutil.copytree(built_repository / model, dest / model, copy_function=os.link)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


@pytest.fixture(scope="session")
def served_models(built_repository) -> dict[str, str]:
    import json

    manifest = json.loads((built_repository / "manifest.json").read_text())
    return {m["precision"]: m["name"] for m in manifest["models"]}


@pytest.fixture(scope="session")
def served_model(served_models):
    """``served_model("int8")`` -> the ensemble name; skips (visibly) when that route is not built."""
    def pick(precision: str) -> str:
        if precision not in served_models:
            pytest.skip(f"the {precision} route is not buildable yet (no route builder)")
        return served_models[precision]
    return pick


@pytest.fixture(scope="session")
def triton_server(built_repository):
    from exporter.serve import ServerSettings, TritonServer

    server = TritonServer(ServerSettings(built_repository, http_port=0, grpc_port=0, metrics_port=0))
    atexit.register(server.stop)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton_http(triton_server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton_server.http_url, concurrency=8, network_timeout=120)
    yield client
    client.close()

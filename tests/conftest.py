"""Shared session fixtures: a built Triton repository of the bundled model and a real local Triton serving it.

Fixtures (all session-scoped, built once per test run, on demand):

- ``bundled_artefact`` -> a function: ``bundled_artefact("int8")`` is the :class:`exporter.Artefact` (path, report)
  of ``sentence-transformers/all-MiniLM-L6-v2`` (bundled, offline) at that precision, exported on first use and
  shared by the whole session (route tests and ``built_repository``); ``bundled_artefact.plan("int8")`` its plan.
  Targets and gate sizes are in :data:`ARTEFACTS`. Never modify an artefact's files in place: they are hard-linked
  into ``built_repository``.
- ``built_repository`` -> ``Path``: a published Triton repository (what ``python -m exporter build`` writes) of the
  bundled model at every precision of :data:`PRECISIONS`, on a CPU target, in a temp dir, assembled from the shared
  artefacts (the export is most of a build; ``exporter.build_repository`` end to end is tested by test_build.py,
  test_api.py and tests/reliability). Read its ``manifest.json`` for names/dims/routes.
- ``served_models`` -> ``dict[str, str]``: precision -> public (ensemble) model name, e.g. ``{"fp32": "minilm-fp32"}``.
  ``served_model("int8")`` (a fixture returning a function) asks for one precision and skips, visibly, when that
  route is not built yet.
- ``triton_server`` -> :class:`exporter.serve.TritonServer`, started on free ports: ``http_url`` / ``grpc_url``
  (``host:port``, as tritonclient wants them), ``metrics_url``, ``start()``, ``stop()``, ``restart()``, ``models``.
  Teardown stops it and kills its whole process group, also on interrupted runs (atexit).
- ``fp32_repository`` -> ``Path``: the fp32 model alone (hard links), for tests that start their own server.
- ``triton_http`` -> a ``tritonclient.http.InferenceServerClient`` on that server.
- ``prompted_model`` -> :class:`PromptedModel`: a tiny random sentence-transformers model with prompts (see
  :data:`PROMPTED`), exported at fp32 with the models-file overrides of :data:`PROMPTED_OVERRIDES` and served by its own
  small Triton (``prompted_model.server``), shared by the prompt/dimension/token-count tests.

Do not stop the shared server in a test; start your own ``TritonServer(ServerSettings(built_repository,
http_port=0, grpc_port=0, metrics_port=0))`` for lifecycle tests.

Tiers (markers registered in pyproject.toml, assigned here in :func:`pytest_collection_modifyitems`, so test files
need no tier marks): a test is ``e2e`` when it is marked ``slow``, ``e2e`` or ``gpu``, lives under tests/e2e/, or
uses a fixture that builds the bundled model or starts Triton (:data:`E2E_FIXTURES`); every other test is ``unit``.
``make check`` runs ``-m unit`` (in-process, fakes instead of a server); ``make test`` runs everything. ``gpu`` tests
are skipped on hosts without an NVIDIA GPU.
"""

from __future__ import annotations

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
# The bundled model's artefacts the suite exports, once each: precision -> (target device, gate sentences; None is
# the whole verification set). The CPU ones are also the served repository's (PRECISIONS); fp16 and bf16 need a GPU
# target and only the route tests read them. fp32 is gated on the whole set (test_routes_onnx.py checks it); bf16 on
# a small spread subset (its torch gate is slow on CPU).
ARTEFACTS = {"fp32": ("cpu", None), "int8": ("cpu", VERIFICATION_LIMIT), "int4": ("cpu", VERIFICATION_LIMIT),
             "fp16": ("cuda:8.0", VERIFICATION_LIMIT), "bf16": ("cuda:8.0", 32)}
# Every route built for the tests must pass its own quality gate: a degraded artefact fails the fixture.
ACCEPT_DEGRADED = False


# Fixtures that build the bundled model or start a real Triton: a test using any of them (directly or through
# another fixture) is e2e, never unit.
E2E_FIXTURES = frozenset({"built_repository", "fp32_repository", "served_models", "served_model", "triton_server",
                          "triton_http", "bundled_artefact", "prompted_model"})
E2E_DIRS = ("e2e",)  # tests/<dir>/: every test in it is e2e
TIER_MARKS = frozenset({"slow", "e2e", "gpu"})


def _has_gpu() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    gpu_skip = None if _has_gpu() else pytest.mark.skip(reason="needs an NVIDIA GPU (none on this host)")
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        rel = Path(str(item.path)).relative_to(tests) if Path(str(item.path)).is_relative_to(tests) else None
        heavy = E2E_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if marks & TIER_MARKS or heavy or (rel is not None and rel.parts[0] in E2E_DIRS):
            if "unit" in marks:
                raise pytest.UsageError(f"{item.nodeid} is marked unit but is e2e "
                                        f"({', '.join(sorted(marks & TIER_MARKS | heavy)) or 'tests/e2e'})")
            item.add_marker(pytest.mark.e2e)
        elif "unit" not in marks:
            item.add_marker(pytest.mark.unit)
        if "gpu" in marks and gpu_skip is not None:
            item.add_marker(gpu_skip)


@pytest.fixture(autouse=True)
def _unit_tests_never_start_triton(request, monkeypatch):
    """A unit test that would launch the real tritonserver fails at once, naming the fix (fakes are fine)."""
    if request.node.get_closest_marker("unit") is None:
        return
    import subprocess

    real_popen = subprocess.Popen

    class GuardedPopen(real_popen):
        def __init__(self, args, *rest, **kwargs):
            argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
            program = Path(os.fsdecode(argv[0])) if argv else Path()
            if program.name == "tritonserver" and "pytriton" in program.parts:
                raise AssertionError(f"{request.node.nodeid} is a unit test but starts the real Triton: use the "
                                     "fakes (tests/fakes/) or mark it slow/e2e")
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)


def model_name(precision: str) -> str:
    return f"minilm-{precision}"


def bundled_plan(precision: str, device: str = "cpu"):
    """The plan set for the bundled model at ``precision`` on ``device``, through the library API the CLI uses."""
    from exporter import make_plans
    from exporter.models import ModelSpec

    plans = make_plans([ModelSpec(MODEL, model_name(precision), precision=precision)], device=device)
    assert [p.precision for p in plans] == [precision], plans.plans[0].reasons
    return plans


@pytest.fixture(scope="session")
def bundled_artefact(tmp_path_factory):
    from exporter import ExportOptions, export_artefact

    out = tmp_path_factory.mktemp("artefacts")
    made: dict[str, tuple] = {}

    def artefact(precision: str):
        if precision not in made:
            device, limit = ARTEFACTS[precision]
            plans = bundled_plan(precision, device)
            (plan,) = plans.plans
            made[precision] = plan, export_artefact(
                plan, plans.model_dir(MODEL), out,
                ExportOptions(verification_limit=limit, accept_degraded=ACCEPT_DEGRADED))
        return made[precision][1]

    def plan(precision: str):
        artefact(precision)
        return made[precision][0]

    artefact.plan = plan
    return artefact


@pytest.fixture(scope="session")
def built_repository(bundled_artefact, tmp_path_factory) -> Path:
    """Assembled and published as ``exporter.build.build_repository`` does, from the shared artefacts."""
    from exporter.triton.config import ServingOptions
    from exporter.triton.repository import ModelEntry, assemble, publish, staging

    dest = tmp_path_factory.mktemp("triton") / "model_repository"
    entries = [ModelEntry(bundled_artefact.plan(p), bundled_artefact(p)) for p in PRECISIONS]
    with staging(dest) as root:
        assemble(root, entries, ServingOptions())
        publish(root, dest)
    return dest


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


# The tiny prompted model: its own config_sentence_transformers.json, then the models-file overrides laid over it.
PROMPTED = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}
PROMPTED_OVERRIDES = {"prompts": {"title": "title: "}, "truncate_dim": 32}


class PromptedModel:
    """What ``prompted_model`` yields: the model directory, the served name and the running server."""

    def __init__(self, model_dir: Path, name: str, server):
        self.model_dir, self.name, self.server = model_dir, name, server


@pytest.fixture(scope="session")
def prompted_model(tmp_path_factory):
    import json

    from exporter import ExportOptions, export_artefact, make_plans
    from exporter.models import ModelSpec
    from exporter.serve import ServerSettings, TritonServer
    from exporter.triton.config import ServingOptions
    from exporter.triton.repository import ModelEntry, assemble, publish, staging

    from export_helpers import tiny_st_model

    work = tmp_path_factory.mktemp("prompted")
    model_dir = tiny_st_model(work)
    config_file = model_dir / "config_sentence_transformers.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **PROMPTED}))
    plans = make_plans([ModelSpec(str(model_dir), "tiny-prompted", precision="fp32", **PROMPTED_OVERRIDES)],
                       device="cpu")
    (plan,) = plans.plans
    artefact = export_artefact(plan, model_dir, work / "artefacts", ExportOptions(verification_limit=16))
    dest = work / "model_repository"
    with staging(dest) as root:
        assemble(root, [ModelEntry(plan, artefact)], ServingOptions())
        publish(root, dest)
    server = TritonServer(ServerSettings(dest, http_port=0, grpc_port=0, metrics_port=0))
    atexit.register(server.stop)
    server.start()
    try:
        yield PromptedModel(model_dir, plan.name, server)
    finally:
        server.stop()

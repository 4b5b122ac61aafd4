"""Models whose architecture is their own Python code (config.json ``auto_map``): refused unless trusted, then
served by the torch route from a copy of the code inside the artefact (no original directory, no hub).

The model is written by the test itself (tests/export_helpers.py:tiny_remote_code_model): a PreTrainedModel
subclass in modeling_tinyenc.py that imports a local layers.py, with a configuration_tinyenc.py. Importing the
model code writes a marker file, so "the code did not run" is observable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.artefact import export_artefact
from exporter.errors import ModelError
from exporter.options import ExportOptions
from exporter.plan import make_plans
from exporter.verify import cosines

from export_helpers import tiny_remote_code_model

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["A man is playing a guitar.", "Short.", "The quick brown fox jumps over the lazy dog " * 8, "é ü 漢字"]


@pytest.fixture(scope="module")
def remote_model(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("remote")
    marker = root / "MODEL_CODE_RAN"
    return tiny_remote_code_model(root, marker), marker


def st_reference(model: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model), device="cpu", trust_remote_code=True).encode(texts, convert_to_numpy=True)


def cpu_plan(model: Path, precision: str = "fp32", models_file: Path | None = None):
    source = {"models_file": models_file} if models_file else {"models": [str(model)]}
    return make_plans(device="cpu", precision=precision, **source).plans[0]


def test_plan_sends_remote_code_to_the_torch_route_and_says_why(remote_model):
    model, _ = remote_model
    plan = cpu_plan(model)
    assert (plan.precision, plan.route, plan.runtime, plan.remote_code) == ("fp32", "torch-fp32", "torch", True)
    assert any("remote code" in r and "--trust-remote-code" in r and "ONNX export is not attempted" in r
               for r in plan.reasons), plan.reasons
    int8 = cpu_plan(model, "int8")  # ONNX only: no torch route -> fp32, as a fallback line says
    assert (int8.precision, int8.route) == ("fp32", "torch-fp32")
    assert any("fallback" in r and "int8" in r and "torch route only" in r for r in int8.reasons), int8.reasons


def test_export_refuses_remote_code_without_the_flag_and_runs_none_of_it(remote_model, tmp_path):
    model, marker = remote_model
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelError) as err:
        export_artefact(cpu_plan(model), model, tmp_path)
    message = str(err.value)
    assert "--trust-remote-code" in message and "trust_remote_code: true" in message
    assert "Triton server" in message and "auto_map" in message  # the risk: where the code would run
    assert not marker.exists(), "the model's code ran although it was refused"
    assert not list(tmp_path.iterdir()), "a refused export left files behind"


def test_cli_export_refuses_with_exit_code_2(remote_model, tmp_path):
    model, marker = remote_model
    marker.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "exporter", "export", "--model", str(model), "--device", "cpu",
                          "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "--trust-remote-code" in out.stderr and "Triton server" in out.stderr
    assert not marker.exists(), "the model's code ran in the refusing process"


@pytest.fixture(scope="module")
def trusted_artefact(remote_model, tmp_path_factory):
    """The fp32 torch artefact, trusted by a models-file entry (not by the export option)."""
    model, _ = remote_model
    root = tmp_path_factory.mktemp("trusted")
    models_file = root / "models.yaml"
    models_file.write_text(f"- {{model: {json.dumps(str(model))}, name: tinyenc, trust_remote_code: true}}\n")
    plan = cpu_plan(model, models_file=models_file)
    assert plan.trust_remote_code
    return export_artefact(plan, model, root / "out", ExportOptions(verification_limit=32))


def test_trusted_export_copies_the_code_and_its_local_imports(trusted_artefact):
    report, path = trusted_artefact.report, trusted_artefact.path
    assert report["runtime"] == "torch" and report["gate"]["passed"] and report["encoder"]["remote_code"]
    meta = json.loads((path / "encoder.json").read_text())
    code = path / meta["code_dir"]
    assert sorted(p.name for p in code.iterdir()) == ["config.json", "configuration_tinyenc.py", "layers.py",
                                                      "modeling_tinyenc.py"]
    assert report["gate"]["min_cosine"] >= 0.9999


def test_artefact_runs_without_the_original_directory_or_the_hub(remote_model, trusted_artefact, tmp_path):
    """A fresh process (no module cached from the export), HF_HUB_OFFLINE=1, an empty transformers module cache,
    and the model directory gone: the artefact alone must give sentence-transformers' vectors."""
    model, marker = remote_model
    reference = st_reference(model, TEXTS)
    marker.unlink(missing_ok=True)
    moved = tmp_path / "gone"
    shutil.move(str(model), moved)  # the original directory no longer exists at its path
    try:
        script = (
            "import json, sys, numpy as np\n"
            "from tokenizers import Tokenizer\n"
            "from exporter.triton.runtime.torch_encoder import TorchEncoder\n"
            "art, texts = sys.argv[1], json.loads(sys.argv[2])\n"
            "tok = Tokenizer.from_file(art + '/tokenizer/tokenizer.json')\n"
            "tok.enable_truncation(max_length=64); tok.enable_padding()\n"
            "enc = tok.encode_batch(texts)\n"
            "feeds = {'input_ids': np.array([e.ids for e in enc]), 'attention_mask': np.array([e.attention_mask for e"
            " in enc])}\n"
            "print(json.dumps(TorchEncoder(art)(feeds).tolist()))\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        out = subprocess.run([sys.executable, "-c", script, str(trusted_artefact.path), json.dumps(TEXTS)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        served = np.array(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    finally:
        shutil.move(str(moved), model)
    assert marker.exists(), "the artefact's copy of the model code did not run (the marker control)"
    assert cosines(served, reference).min() >= 0.9999
    np.testing.assert_allclose(served, reference, atol=1e-5)


@pytest.mark.slow
def test_served_by_triton_equals_sentence_transformers(remote_model, trusted_artefact, tmp_path):
    """The real Triton (python backend) serves the trusted artefact from a repository, with the model directory
    gone and the hub offline; the ensemble's vectors equal sentence-transformers(trust_remote_code=True)."""
    import tritonclient.http as httpclient

    from exporter.serve import ServerSettings, TritonServer
    from exporter.triton.config import ServingOptions
    from exporter.triton.repository import ModelEntry, assemble

    model, _ = remote_model
    reference = st_reference(model, TEXTS)
    repository = tmp_path / "repo"
    repository.mkdir()
    plan = cpu_plan(model)
    assemble(repository, [ModelEntry(plan, trusted_artefact)], ServingOptions())
    moved = tmp_path / "gone"
    shutil.move(str(model), moved)
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    server = TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0, env=env))
    try:
        server.start()
        client = httpclient.InferenceServerClient(server.http_url)
        data = np.array([t.encode() for t in TEXTS], dtype=object).reshape(-1, 1)
        text = httpclient.InferInput("TEXT", list(data.shape), "BYTES")
        text.set_data_from_numpy(data)
        served = client.infer(plan.name, [text]).as_numpy("EMBEDDING")
    finally:
        server.stop()
        shutil.move(str(moved), model)
    assert cosines(served, reference).min() >= 0.9999

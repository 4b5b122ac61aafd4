"""``exporter build`` killed mid-way: the previously published repository stays exactly as it was; the gate flags
apply; options the target cannot serve fail before the export stack (torch) is imported."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.triton.repository import staging

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_sigkill_during_build_leaves_the_previous_repository_intact(fp32_repository, tmp_path):
    dest = tmp_path / "model_repository"
    shutil.copytree(fp32_repository, dest, copy_function=os.link)  # the "previous" published repository
    before = snapshot(dest)
    models = tmp_path / "models.yaml"
    models.write_text("- model: sentence-transformers/all-MiniLM-L6-v2\n  name: minilm-fp32\n  precision: fp32\n")
    build = subprocess.Popen(
        [sys.executable, "-m", "exporter", "build", "--models-file", str(models), "--device", "cpu",
         "--repository", str(dest)], cwd=REPO_ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    artefacts = tmp_path / f".model_repository.building-{build.pid}" / ".artefacts"
    try:
        deadline = time.monotonic() + 180
        while not (artefacts.is_dir() and any(artefacts.iterdir())):  # the export is writing its artefact
            assert build.poll() is None, f"build ended (code {build.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "build never started writing"
            time.sleep(0.1)
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    assert snapshot(dest) == before
    assert artefacts.parent.is_dir()  # killed mid-build: its staging directory is what is left over
    with staging(dest):  # the next build clears it
        pass
    assert not artefacts.parent.exists()
    assert snapshot(dest) == before


def test_build_applies_the_gate_flags(tmp_path):
    """`exporter build` takes the same gate flags as `exporter export`: an impossible threshold fails the build
    (nothing published), and --accept-degraded publishes it with the failure recorded in the manifest."""
    import json

    command = [sys.executable, "-m", "exporter", "build", "--device", "cpu", "--precision", "int8",
               "--repository", str(tmp_path / "repo"), "--min-cosine", "int8=0.9999999", "--verification-limit", "8"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    failed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "nothing was published" in failed.stderr
    assert not (tmp_path / "repo").exists()
    accepted = subprocess.run(command + ["--accept-degraded", "--json"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
    assert accepted.returncode == 0, accepted.stderr
    gate = json.loads((tmp_path / "repo" / "manifest.json").read_text())["models"][0]["artefact"]["gate"]
    assert (gate["passed"], gate["accepted_degraded"], gate["threshold"]) == (False, True, 0.9999999)


def test_tensorrt_on_a_cpu_target_fails_before_torch_is_imported(tmp_path):
    """The check needs only the plans, so the CLI must reach it without the export stack: the ConfigError (exit 2)
    comes while torch is still absent from sys.modules, in a fresh interpreter."""
    script = ("import sys\n"
              "from exporter.cli import main\n"
              f"code = main(['build', '--tensorrt', '--device', 'cpu', '--repository', {str(tmp_path / 'repo')!r}])\n"
              "print(code, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], (result.stdout, result.stderr)
    assert "error: --tensorrt needs an NVIDIA GPU target; all-minilm-l6-v2 targets cpu" in result.stderr
    assert not list(tmp_path.iterdir())

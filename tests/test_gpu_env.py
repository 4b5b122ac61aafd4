"""bench/gpu_env.py and scripts/gpu.sh (``make gpu-bench``), on a machine without a GPU: how the environment is
made (a venv host is cloned, a system host gets a venv over its site-packages), that the clone is an environment
of its own whose python3 the Triton stub would run, where ONNX Runtime's CUDA libraries are looked up, and the
pins the script and its wheelhouse share."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_env import HostPython, creation_command, cuda_library_dirs, host_python, main

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _host(prefix: str, base: str, version: str = "3.12") -> HostPython:
    return HostPython("/x/bin/python3", prefix, base, version)


def test_a_venv_host_is_cloned_because_a_venv_over_it_would_not_see_its_packages(tmp_path):
    host = _host("/opt/torch/.venv", "/usr")
    assert host.is_venv
    assert creation_command(host, tmp_path / "env") == ["cp", "-a", "/opt/torch/.venv", str(tmp_path / "env")]


def test_a_system_host_gets_a_venv_over_its_site_packages(tmp_path):
    host = _host("/usr", "/usr")
    assert not host.is_venv
    assert creation_command(host, tmp_path / "env") == [
        "/x/bin/python3", "-m", "venv", "--system-site-packages", str(tmp_path / "env")]


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_a_python_without_a_triton_stub_or_numpy1_wheels_is_refused_by_name(tmp_path, version):
    with pytest.raises(ValueError, match=rf"/x/bin/python3 is Python {version}; .*3\.11 or 3\.12"):
        creation_command(_host("/usr", "/usr", version), tmp_path / "env")


def test_host_python_reads_the_interpreter_it_is_given():
    host = host_python(sys.executable)
    assert (host.prefix, host.base_prefix) == (sys.prefix, sys.base_prefix)
    assert host.version == "%d.%d" % sys.version_info[:2]


def test_host_python_names_an_interpreter_that_cannot_be_run(tmp_path):
    with pytest.raises(ValueError, match="could not be run"):
        host_python(str(tmp_path / "no-python"))


def test_the_clone_of_a_venv_is_an_environment_of_its_own_that_the_stub_would_run(tmp_path):
    """The device's CUDA stack lives in a venv: its copy must resolve to the copy (packages installed there shadow
    the host's), also for ``python3 -E`` found first on PATH, which is how the Triton python stub picks it."""
    host_dir = tmp_path / "host"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(host_dir)], check=True)
    site = next((host_dir / "lib").glob("python3*/site-packages"))
    (site / "hostpkg.py").write_text("WHERE = 'host'\n")
    host = host_python(str(host_dir / "bin" / "python"))
    target = tmp_path / "env"
    assert main(["create", str(target), "--python", host.executable]) == 0
    clone_site = target / site.relative_to(host_dir)
    (clone_site / "hostpkg.py").write_text("WHERE = 'clone'\n")  # what pip does to numpy in the copy
    env = {**os.environ, "PATH": f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    probe = "import sys, hostpkg; print(sys.prefix, hostpkg.WHERE)"
    out = subprocess.run(["python3", "-E", "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(target), "clone"]
    assert (site / "hostpkg.py").read_text() == "WHERE = 'host'\n"  # the host's files are untouched


def test_create_refuses_an_existing_target(tmp_path, capsys):
    assert main(["create", str(tmp_path), "--python", sys.executable]) == 2
    assert "exists already" in capsys.readouterr().err


def test_cuda_libraries_are_torch_wheels_lib_dirs(tmp_path):
    for lib in ("cublas/lib", "cu13/lib", "cudnn/lib"):
        (tmp_path / "nvidia" / lib).mkdir(parents=True)
    (tmp_path / "nvidia" / "nvtx").mkdir()  # no lib/ inside: not a library dir
    assert cuda_library_dirs(tmp_path) == [str(tmp_path / "nvidia" / d / "lib") for d in ("cu13", "cublas", "cudnn")]
    assert cuda_library_dirs(tmp_path / "nowhere") == []


def test_the_script_refuses_a_host_without_a_gpu(tmp_path):
    if any((Path(d) / "nvidia-smi").exists() for d in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("this host has nvidia-smi")
    out = subprocess.run(["bash", str(SCRIPTS / "gpu.sh")], capture_output=True, text=True,
                         env={**os.environ, "GPU_VENV": str(tmp_path / "env")})
    assert out.returncode == 1
    assert "no NVIDIA GPU here" in out.stderr
    assert not (tmp_path / "env").exists()


def test_an_unknown_suite_step_is_refused_before_any_work(tmp_path):
    out = subprocess.run(["bash", str(SCRIPTS / "gpu.sh")], capture_output=True, text=True,
                         env={**os.environ, "GPU_VENV": str(tmp_path / "env"), "GPU_SUITE": "served,int9"})
    assert out.returncode == 2
    assert "GPU_SUITE step 'int9' is not one of served, peers, int8, large, memory (or all)" in out.stderr
    assert not (tmp_path / "env").exists()


def test_the_scripts_parse():
    for script in ("gpu.sh", "gpu_wheelhouse.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)


def _pins(path: Path) -> dict[str, str]:
    lines = (re.sub(r"#.*", "", line).strip() for line in path.read_text().splitlines())
    return dict(re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)$", line).groups() for line in lines if line)


def test_the_environment_pins_numpy1_builds_and_the_triton_wheel_the_project_uses():
    pins = _pins(SCRIPTS / "gpu-requirements.txt")
    assert pins["numpy"].startswith("1.")  # the stub corrupts BYTES tensors under numpy 2
    assert {"scipy", "scikit-learn", "onnxruntime-gpu", "bitsandbytes", "tritonclient"} <= set(pins)
    pytriton = re.findall(r"nvidia-pytriton==[0-9.]+", (SCRIPTS / "gpu.sh").read_text())
    assert pytriton and set(pytriton) == set(re.findall(r"nvidia-pytriton==[0-9.]+", (REPO / "Makefile").read_text()))
    assert pins["bitsandbytes"] in (REPO / "pyproject.toml").read_text()

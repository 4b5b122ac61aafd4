"""What the launcher checks and sets up before tritonserver starts, without starting one: the python stub's libpython
and environment (facts injected, plus one real check of this venv), the public ServerSettings (extra_args, env,
check_environment) through a fake binary, and the parent-death signal set between fork and exec."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from exporter import serve
from exporter.errors import ConfigError
from exporter.serve import ServeError, ServerSettings, StubFacts, TritonServer, stub_environment_problems

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"

# ldd on the 3.12 stub with a pyenv 3.12 (shared, libpython in <prefix>/lib) before the launcher put LIBDIR on
# LD_LIBRARY_PATH: the failure `make demo PYTHON=python3.12` hit after a 120 s wait.
LDD_312 = """\tlinux-vdso.so.1 (0x00007ffd6b1f2000)
\tlibcudart-09529672.so.12.6.77 => /x/nvidia_pytriton.libs/libcudart-09529672.so.12.6.77 (0x00007efe86200000)
\tlibpython3.12.so.1.0 => not found
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007efe85e00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007efe85c1f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007efe86a0d000)
"""


def facts(**changes) -> StubFacts:
    """A stub environment that can run (Python 3.12), with ``changes``."""
    good = {"stub_python": "3.12", "python": "/venv/bin/python3", "python_version": "3.12", "shared_libpython": True,
            "unresolved": (), "numpy": "1.26.4", "missing_modules": ()}
    return StubFacts(**{**good, **changes})


def test_ldd_output_names_the_libraries_the_loader_cannot_find():
    assert serve.unresolved_libraries(LDD_312) == ("libpython3.12.so.1.0",)
    assert serve.unresolved_libraries(LDD_312.replace(" => not found", " => /p/libpython3.12.so.1.0 (0x1)")) == ()


def test_a_stub_environment_that_can_run_has_no_problems():
    assert stub_environment_problems(facts()) == []
    assert stub_environment_problems(facts(unresolved=None)) == []  # no ldd: the libraries are not checked


def test_a_python_without_shared_libpython_is_told_how_to_get_one():
    [problem] = stub_environment_problems(facts(shared_libpython=False, unresolved=("libpython3.12.so.1.0",)))
    assert "built without a shared libpython (libpython3.12.so.1.0 not found)" in problem
    assert "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.12" in problem
    assert "distro python3.12" in problem


def test_a_shared_libpython_the_loader_cannot_find_is_named():
    [problem] = stub_environment_problems(facts(unresolved=("libpython3.12.so.1.0",)))
    assert problem.startswith("libpython3.12.so.1.0, which the Triton python stub loads, is not on the loader's path")


def test_other_missing_libraries_point_at_the_wheel():
    [problem] = stub_environment_problems(facts(unresolved=("libcudart-09529672.so.12.6.77",)))
    assert "cannot load libcudart-09529672.so.12.6.77" in problem and "nvidia-pytriton==0.7.0" in problem


@pytest.mark.parametrize("numpy, words", [("2.1.3", "numpy 2.1.3 is installed"), (None, "numpy is missing")])
def test_numpy_must_be_below_2_where_the_stub_runs(numpy, words):
    [problem] = stub_environment_problems(facts(numpy=numpy))
    assert words in problem and "pip install 'numpy<2'" in problem
    [problem] = stub_environment_problems(facts(numpy=numpy, stub_python="3.13", python_version="3.13"))
    assert "numpy<2 has no wheels for Python 3.13" in problem


def test_missing_runtime_modules_and_a_wrong_python_are_all_reported():
    problems = stub_environment_problems(facts(python_version="3.11", missing_modules=("tokenizers", "onnxruntime")))
    assert "the Triton python stub for Python 3.12 would run the environment of /venv/bin/python3, which is " \
           "Python 3.11" in problems[0]
    assert problems[1:] == [f"{m} is missing from the environment of /venv/bin/python3, which the python-backend "
                            f"models run in: pip install {m}" for m in ("tokenizers", "onnxruntime")]


def test_a_python3_that_cannot_run_is_the_only_problem_reported():
    assert stub_environment_problems(facts(python_version=None, python_error="No such file")) == [
        "the Triton python stub runs the environment of the first python3 on PATH (/venv/bin/python3), which could "
        "not be run: No such file"]


def test_this_venv_can_run_the_stub():
    """The real check on the bundled binary and this environment: libpython found, numpy<2, modules present."""
    found = serve.check_stub_environment()
    assert found == StubFacts(stub_python=HERE, python=str(Path(sys.prefix) / "bin" / "python3"), python_version=HERE,
                              shared_libpython=found.shared_libpython, unresolved=(), numpy=found.numpy)
    assert int(found.numpy.split(".")[0]) < 2


def test_the_server_environment_puts_the_wheel_libraries_and_libpython_first():
    binary = serve.bundled_tritonserver()
    env = serve.stub_environment(binary, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/mine"})
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs[0] == str(binary.parents[3] / "nvidia_pytriton.libs") and libs[-1] == "/mine"
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert sysconfig.get_config_var("LIBDIR") in libs
    assert env["PATH"] == os.pathsep.join([str(Path(sys.prefix) / "bin"), "/usr/bin"])


def repository(root: Path, config: str = 'name: "m"\nbackend: "python"\n') -> Path:
    (root / "m").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text(config)
    (root / "manifest.json").write_text(json.dumps({"format": 1, "models": []}))
    return root


def test_a_stub_that_cannot_run_fails_the_start_before_anything_runs(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(serve, "gather_stub_facts", lambda stub, env: facts(
        stub_python=HERE, python_version=HERE, shared_libpython=False, unresolved=(f"libpython{HERE}.so.1.0",)))
    server = TritonServer(ServerSettings(repository(tmp_path / "repo"), http_port=0, grpc_port=0, metrics_port=0))
    with pytest.raises(ConfigError, match=r"stub cannot run here:\n  - this Python .* was built without a shared"):
        server.start()
    assert server.process is None and list(temp.iterdir()) == []


def test_check_environment_false_skips_the_stub_check(tmp_path, monkeypatch):
    def gather(stub, env):
        raise AssertionError("check_environment=False must not gather stub facts")

    monkeypatch.setattr(serve, "gather_stub_facts", gather)
    server = TritonServer(ServerSettings(repository(tmp_path / "repo", 'name: "m"\nno_such_field: 1\n'),
                                         check_environment=False, http_port=0, grpc_port=0, metrics_port=0))
    with pytest.raises(ConfigError, match="model configuration schema"):  # got past the check, to the local view
        server.start()


def test_extra_args_and_env_reach_the_server(tmp_path):
    """A fake tritonserver records its arguments and environment, then exits: start() reports the exit."""
    record = tmp_path / "record.json"
    binary = tmp_path / "tritonserver"
    binary.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
                      "sys.exit(3)\n")
    binary.chmod(0o755)
    server = TritonServer(ServerSettings(repository(tmp_path / "repo"), tritonserver=str(binary), http_port=0,
                                         grpc_port=0, metrics_port=0, env={"EMB_TEST": "1", "PATH": "/mine"},
                                         extra_args=("--strict-readiness=true", "--log-info=false")))
    with pytest.raises(ServeError, match="tritonserver exited with code 3"):
        server.start()
    seen = json.loads(record.read_text())
    assert seen["argv"][-2:] == ["--strict-readiness=true", "--log-info=false"]
    assert seen["env"]["EMB_TEST"] == "1"
    assert seen["env"]["PATH"] == os.pathsep.join([str(Path(sys.prefix) / "bin"), "/mine"])  # extended, not replaced


PR_GET_PDEATHSIG = 2
READ_PDEATHSIG = ("import ctypes; sig = ctypes.c_int(); "
                  f"ctypes.CDLL(None).prctl({PR_GET_PDEATHSIG}, ctypes.byref(sig)); print(sig.value)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_child_gets_the_parent_death_signal_without_loading_a_library_after_fork(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("ctypes.CDLL called in preexec_fn")

    monkeypatch.setattr(ctypes, "CDLL", no_loading)  # the child inherits this: loading there would fail the spawn
    out = subprocess.run([sys.executable, "-c", READ_PDEATHSIG], preexec_fn=serve._die_with_parent,
                         capture_output=True, text=True, check=True)
    assert int(out.stdout) == 15  # SIGTERM, kept across exec


def test_a_missing_stub_directory_is_named_not_a_traceback(tmp_path):
    from exporter.serve import stub_binary

    binary = tmp_path / "tritonserver" / "bin" / "tritonserver"
    with pytest.raises(ConfigError, match="stubs exist for: none .*python_backend_stubs is missing"):
        stub_binary(binary)

"""Run a real Triton server on this machine (no docker) over a repository that ``exporter build`` wrote.

The binary is the ``tritonserver`` bundled in the ``nvidia-pytriton`` wheel (python backend only), or any binary
given with ``--tritonserver`` (e.g. the NGC container's, which has the native onnxruntime backend). For the bundled
binary the launcher serves a *derived view* of the repository in a temp dir (:mod:`exporter.triton.local_view`);
the published repository itself stays NGC-native and untouched.

The server runs in its own process group (its python stubs are its children); :meth:`TritonServer.stop` signals the
whole group and escalates to SIGKILL, so no stub outlives it.

Before the bundled binary starts, :func:`check_stub_environment` makes sure Triton's python stub can run here: that
it can load its libpython (the stub is linked against ``libpython3.X.so.1.0`` of this interpreter's version) and that
the environment it runs (the first ``python3`` on the server's PATH: this interpreter's) has numpy<2 and the
models' runtime modules. Otherwise the launcher fails at once with what to install, instead of waiting for a server
whose models can never load.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .atomic import swap_in
from .errors import ConfigError, ServeError
from .triton.local_view import make_local_view
from .triton.repository import read_manifest

log = logging.getLogger(__name__)

_STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class ServerSettings:
    """Where and how to run tritonserver. Port 0 means: pick a free port."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    tritonserver: str | None = None  # None: the binary bundled in nvidia-pytriton
    ready_timeout: float = 120.0
    exit_timeout: int = 10
    encoder_threads: int = 0
    log_verbose: int = 0
    # Appended to the launcher's own tritonserver arguments, e.g. ("--strict-readiness=false",).
    extra_args: tuple[str, ...] = ()
    # Extra environment for the server and its python stubs, laid over os.environ. The launcher then prepends what
    # the bundled binary needs to PATH and LD_LIBRARY_PATH (so values given here are extended, not replaced).
    env: Mapping[str, str] = field(default_factory=dict)
    # Bundled binary only: check before starting that the python stub can load its libpython and that its
    # environment has numpy<2 and the models' modules (see check_stub_environment). False skips the check, for an
    # environment prepared by other means (e.g. a sitecustomize that changes what the stub imports).
    check_environment: bool = True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free right now (all held open while picking, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def bundled_tritonserver() -> Path:
    """The tritonserver binary inside the nvidia-pytriton wheel, or a ConfigError saying how to install it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no tritonserver: install the wheel that bundles it with "
                          "'pip install --no-deps nvidia-pytriton==0.7.0' (or pass --tritonserver PATH)")
    binary = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ConfigError(f"{binary} is missing; reinstall nvidia-pytriton==0.7.0 with --no-deps")
    return binary


def _external_tritonserver(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"--tritonserver {name!r} is neither an executable path nor a command on PATH")
    return Path(found)


def stub_binary(binary: Path) -> Path:
    """The python stub built for this interpreter's version, next to the bundled ``binary``; ConfigError if none."""
    stub = binary.parent.parent / "python_backend_stubs" / _STUB_PYTHON / "triton_python_backend_stub"
    if not stub.is_file():
        stubs = stub.parent.parent
        found = ", ".join(sorted(p.name for p in stubs.iterdir())) if stubs.is_dir() else f"none ({stubs} is missing)"
        raise ConfigError(f"the bundled tritonserver has no python stub for Python {_STUB_PYTHON} ({stub}); "
                          f"stubs exist for: {found}")
    return stub


def make_backend_dir(binary: Path, target: Path) -> Path:
    """``<target>/python/``: the python backend library plus the stub built for this interpreter's version."""
    root = binary.parent.parent
    stub = stub_binary(binary)
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (root / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(stub, python_dir / stub.name)
    return target


def gpu_available() -> bool:
    """Whether an NVIDIA GPU is visible (nvidia-smi lists one); decides KIND_GPU -> KIND_CPU in the local view."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def hold_ensemble(ensemble: Path, serving: int | None) -> None:
    """Show Triton only the ensemble version it serves (``serving``; none for a new model) while the new steps load.

    Loading a step makes Triton reload the ensembles that use it, from the repository: were the new ensemble version
    already there, it would go live over the old steps, or over a half-loaded build when a step fails to load.
    """
    if ensemble.is_symlink():  # the local view links models it does not rewrite
        target = ensemble.resolve()
        ensemble.unlink()
        ensemble.mkdir()
        shutil.copy2(target / "config.pbtxt", ensemble / "config.pbtxt")
    for version in (p for p in ensemble.iterdir() if p.is_dir()):
        shutil.rmtree(version)
    if serving is not None:
        (ensemble / str(serving)).mkdir()


def release_ensemble(ensemble: Path, version: int) -> None:
    """Once its steps are loaded, the ensemble's new version (an empty directory) appears for Triton to load."""
    for old in (p for p in ensemble.iterdir() if p.is_dir()):
        shutil.rmtree(old)
    (ensemble / str(version)).mkdir()


class TritonServer:
    """One tritonserver process group: start, wait ready, stop (idempotent), restart; usable as a context."""

    def __init__(self, settings: ServerSettings):
        settings = replace(settings, repository=Path(settings.repository).absolute())
        fields = ("http_port", "grpc_port", "metrics_port")
        picked = iter(free_ports(3, "127.0.0.1" if settings.host == "0.0.0.0" else settings.host))
        ports = {f: getattr(settings, f) or next(picked) for f in fields}
        self.settings = replace(settings, **ports)
        self.manifest = read_manifest(self.settings.repository)
        self.process: subprocess.Popen | None = None
        self._work: tempfile.TemporaryDirectory | None = None
        self._gpu: bool | None = None  # whether this host has a GPU, asked once (nvidia-smi) for the local views
        self.log_path: Path | None = None

    # -- endpoints -------------------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host

    @property
    def http_url(self) -> str:
        """host:port for tritonclient.http (no scheme, as tritonclient expects)."""
        return f"{self._client_host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.metrics_port}/metrics"

    @property
    def models(self) -> list[str]:
        """The public (ensemble) model names this repository serves."""
        return [m["name"] for m in self.manifest["models"]]

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "TritonServer":
        """Launch and wait for /v2/health/ready; on failure stop everything and raise :class:`ServeError`.

        Every failure, also one before the process exists (no binary, a repository the local view cannot be made
        from, a binary that cannot be executed), stops what was started and removes the work directory.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        if self.settings.host == "0.0.0.0":
            log.warning("binding 0.0.0.0: the server is reachable from other hosts and has no authentication")
        self._work = tempfile.TemporaryDirectory(prefix="emb-provider-serve-")
        try:
            work = Path(self._work.name)
            self.log_path = work / "tritonserver.log"
            command, env = self._launch(work)
            log.info("starting %s", " ".join(command))
            with open(self.log_path, "wb") as log_file:
                self.process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                preexec_fn=_die_with_parent)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, work: Path) -> tuple[list[str], dict[str, str]]:
        """The command line and environment; for the bundled binary also the local view, the backend dir and the
        stub check (before anything is started). Configure it through ServerSettings, not by overriding this."""
        s = self.settings
        env = {**os.environ, **s.env}
        if s.tritonserver:
            binary, repository, extra = _external_tritonserver(s.tritonserver), s.repository, []
            env["PATH"] = _prepend(str(Path(sys.prefix) / "bin"), env.get("PATH"))
        else:
            binary = bundled_tritonserver()
            env = stub_environment(binary, env)
            if s.check_environment:
                check_stub_environment(binary, env)
            repository = self._local_view(work / "repository")
            extra = [f"--backend-directory={make_backend_dir(binary, work / 'backends')}"]
        command = [str(binary), f"--model-repository={repository}", *extra,
                   f"--http-address={s.host}", f"--http-port={s.http_port}",
                   f"--grpc-address={s.host}", f"--grpc-port={s.grpc_port}",
                   f"--metrics-address={s.host}", f"--metrics-port={s.metrics_port}",
                   "--exit-on-error=false", f"--exit-timeout-secs={s.exit_timeout}",
                   # explicit model control with everything loaded at start: as in the default mode, plus
                   # reload(), which loads a new build beside the old one without dropping a request
                   "--model-control-mode=explicit", "--load-model=*",
                   f"--log-verbose={s.log_verbose}", *s.extra_args]
        return command, env

    def _local_view(self, target: Path) -> Path:
        """The bundled binary's view of the repository, derived at ``target`` (:func:`make_local_view`)."""
        if self._gpu is None:
            self._gpu = gpu_available()
        return make_local_view(self.settings.repository, target, gpu=self._gpu,
                               encoder_threads=self.settings.encoder_threads)

    def _get(self, path: str) -> int:
        return self._status(f"http://{self.http_url}{path}")

    @staticmethod
    def _status(url: str) -> int:
        """The HTTP status ``url`` answers with, 0 when nothing answers."""
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(self._failure(f"tritonserver exited with code {self.process.returncode}"))
            # ready = every endpoint it opened answers: tritonserver starts its metrics listener after HTTP is
            # ready, and a scrape (or a test reading the counters) right after start() would be refused
            if self._get("/v2/health/ready") == 200 and (not self._metrics_enabled()
                                                         or self._status(self.metrics_url) == 200):
                log.info("tritonserver ready: HTTP %s, gRPC %s", self.http_url, self.grpc_url)
                return
            failed = self._failed_models()
            if failed:
                raise ServeError(self._failure(f"model(s) failed to load: {failed}"))
            time.sleep(0.25)
        raise ServeError(self._failure(f"not ready after {self.settings.ready_timeout:.0f} s"))

    def _metrics_enabled(self) -> bool:
        return "--allow-metrics=false" not in self.settings.extra_args

    def _failed_models(self) -> str:
        """'name: reason' for every model the server gave up on (repository index), '' when none has."""
        import json

        if self._get("/v2/health/live") != 200:
            return ""
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return ""
        return "; ".join(f"{m['name']}: {m.get('reason') or m.get('state')}" for m in index
                         if m.get("state") == "UNAVAILABLE" and m.get("reason"))

    def _failure(self, what: str) -> str:
        return f"{what}\n--- tritonserver log tail ({self.log_path}) ---\n{self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, wait up to exit_timeout, then SIGKILL what is left."""
        process, self.process = self.process, None
        if process is not None:
            pgid = process.pid  # start_new_session: the group id is the server's pid
            _signal_group(pgid, sig)
            try:
                process.wait(timeout=self.settings.exit_timeout + 5)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not exit in time; killing its process group")
            _signal_group(pgid, signal.SIGKILL)
            process.wait()
            _wait_group_gone(pgid)
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def reload(self) -> list[str]:
        """Serve what ``exporter build`` published since the start (or the last reload), without downtime.

        Triton loads each model's new version (the build numbered it: :func:`exporter.triton.repository.assemble`)
        beside the old one and swaps only once it is ready; requests in flight finish on the version they started
        on. Per model the encoder loads first (the step that needs memory, so the one likely to fail), then the
        tokenizer, then the ensemble; models the new manifest no longer lists are unloaded. A step that fails to
        load is a :class:`ServeError` and leaves that model on its previous build. Returns the names loaded.
        """
        if self.process is None or self.process.poll() is not None:
            raise ServeError("reload: tritonserver is not running")
        manifest = read_manifest(self.settings.repository)
        loaded = {m["name"]: m.get("version", 1) for m in self.manifest["models"]}
        view = None
        if not self.settings.tritonserver:  # the bundled binary reads the local view: derive it again
            view = Path(self._work.name) / "repository"
            fresh = view.with_name("repository.next")
            shutil.rmtree(fresh, ignore_errors=True)  # what a failed reload left
            self._local_view(fresh)
            for model in manifest["models"]:
                hold_ensemble(fresh / model["triton_models"]["ensemble"], loaded.get(model["name"]))
            previous = swap_in(fresh, view)
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
        for model in manifest["models"]:
            triton = model["triton_models"]
            self._control(triton["encoder"], "load")
            self._control(triton["tokenizer"], "load")
            if view is not None:
                release_ensemble(view / triton["ensemble"], model.get("version", 1))
            self._control(triton["ensemble"], "load")
            log.info("loaded %s version %s", model["name"], model.get("version", 1))
        names = {m["name"] for m in manifest["models"]}
        for model in self.manifest["models"]:
            if model["name"] not in names:
                for name in model["triton_models"].values():  # the ensemble first: its steps are still in use
                    self._control(name, "unload")
        self.manifest = manifest
        return sorted(names)

    def _control(self, name: str, action: str) -> None:
        """POST Triton's model-repository ``load``/``unload`` for ``name``; a refusal is a ServeError with its words."""
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/models/{name}/{action}", data=b"{}",
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.ready_timeout):
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            detail = str(exc)
        raise ServeError(f"{action} of {name} failed; the previous version keeps serving: {detail}")

    def restart(self) -> "TritonServer":
        self.stop()
        return self.start()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _resolve_prctl():
    """libc's prctl, looked up once at import: never in the forked child, where dlopen/dlsym could deadlock on a
    loader lock that another thread of the parent held at fork time. None off Linux (or without a usable libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _resolve_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the launcher dies (even by SIGKILL), so no server is orphaned.

    Runs between fork and exec, so it only calls the prctl resolved at import (no library loading, no lookups)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        _signal_group(pgid, signal.SIGKILL)
        time.sleep(0.05)


def _prepend(path: str, rest: str | None) -> str:
    return os.pathsep.join(p for p in (path, rest) if p)


def _libpython_dir() -> str | None:
    """This interpreter's shared-libpython directory when it has one there (pyenv/python-build put it in
    ``<prefix>/lib``, off the loader's search path, so the stub would not find it without LD_LIBRARY_PATH)."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).is_file():
        return libdir
    return None


def stub_environment(binary: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus what the bundled server and its python stub need: the wheel's libraries and this interpreter's
    libpython directory on LD_LIBRARY_PATH, and this interpreter's bin dir first on PATH (the stub runs the first
    ``python3`` there, i.e. this environment with its deps and numpy<2)."""
    env = dict(env)
    libs = [str(binary.parents[3] / "nvidia_pytriton.libs")]
    libdir = _libpython_dir()
    if libdir:
        libs.append(libdir)
    env["LD_LIBRARY_PATH"] = _prepend(os.pathsep.join(libs), env.get("LD_LIBRARY_PATH"))
    env["PATH"] = _prepend(str(Path(sys.prefix) / "bin"), env.get("PATH"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the python models live in the user's repository: leave it as built
    return env


STUB_MODULES = ("tokenizers", "onnxruntime")  # what the python-backend models import besides numpy


@dataclass(frozen=True)
class StubFacts:
    """What decides whether Triton's python stub can run, gathered before the server starts (tests inject them)."""

    stub_python: str                       # the version the stub was built for, e.g. "3.12" (this interpreter's)
    python: str                            # the python3 whose environment the stub runs (first on the server's PATH)
    python_version: str | None = None      # its major.minor; None: it could not be run
    python_error: str = ""                 # why it could not be run
    shared_libpython: bool = True          # its sysconfig Py_ENABLE_SHARED
    unresolved: tuple[str, ...] | None = ()  # libraries the loader cannot find for the stub (ldd); None: no ldd
    numpy: str | None = None               # numpy version importable there; None: missing
    missing_modules: tuple[str, ...] = ()  # of STUB_MODULES


def unresolved_libraries(ldd_output: str) -> tuple[str, ...]:
    """The ``NAME => not found`` entries of ``ldd`` output."""
    return tuple(re.findall(r"^\s*(\S+) => not found", ldd_output, flags=re.MULTILINE))


_PROBE = ("import importlib.util, json, sys, sysconfig\n"
          "try:\n    import numpy; v = numpy.__version__\nexcept ImportError:\n    v = None\n"
          "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'numpy': v,"
          " 'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')),"
          " 'missing': [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))\n")


def gather_stub_facts(stub: Path, env: Mapping[str, str]) -> StubFacts:
    """Ask the loader (``ldd`` with the server's environment) what the stub cannot load, and the stub's python3
    (run with ``-E``: the stub ignores PYTHONPATH and friends) for its version, numpy and modules."""
    python = shutil.which("python3", path=env.get("PATH")) or "python3"
    facts = {"stub_python": _STUB_PYTHON, "python": python}
    try:
        out = subprocess.run([python, "-E", "-c", _PROBE, *STUB_MODULES], env=dict(env), capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise OSError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        facts.update(python_version=probe["version"], numpy=probe["numpy"], shared_libpython=probe["shared"],
                     missing_modules=tuple(probe["missing"]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        facts["python_error"] = str(exc)
    ldd = shutil.which("ldd")
    if ldd is None:
        log.info("no ldd on PATH: not checking that the python stub can load its libraries")
        facts["unresolved"] = None
    else:
        try:
            out = subprocess.run([ldd, str(stub)], env=dict(env), capture_output=True, text=True, timeout=60)
            facts["unresolved"] = unresolved_libraries(out.stdout + out.stderr)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("ldd could not read the python stub (%s): not checking its libraries", exc)
            facts["unresolved"] = None
    return StubFacts(**facts)


def stub_environment_problems(facts: StubFacts) -> list[str]:
    """What keeps the stub from running, each with what to do; [] when nothing does."""
    v, python = facts.stub_python, facts.python
    if facts.python_version is None:
        return [f"the Triton python stub runs the environment of the first python3 on PATH ({python}), which could "
                f"not be run: {facts.python_error or 'unknown error'}"]
    problems = []
    if facts.python_version != v:
        problems.append(f"the Triton python stub for Python {v} would run the environment of {python}, which is "
                        f"Python {facts.python_version}: start the server from a Python {v} environment whose "
                        "python3 comes first on PATH")
    libpython = f"libpython{v}.so.1.0"
    if facts.unresolved and libpython in facts.unresolved:
        if not facts.shared_libpython:
            problems.append(
                f"this Python ({python}) was built without a shared libpython ({libpython} not found), which the "
                f"Triton python stub loads: use a Python built with --enable-shared, e.g. "
                f"PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {v}, or the distro python{v} (with its "
                f"libpython{v} package), and recreate the venv from it (make clean setup PYTHON=python{v})")
        else:
            problems.append(
                f"{libpython}, which the Triton python stub loads, is not on the loader's path (LD_LIBRARY_PATH, "
                f"ld.so cache) nor in this Python's LIBDIR ({sysconfig.get_config_var('LIBDIR')}): reinstall this "
                f"Python with --enable-shared or install the distro's libpython{v} package")
    others = [lib for lib in facts.unresolved or () if lib != libpython]
    if others:
        problems.append(f"the Triton python stub cannot load {', '.join(others)}: reinstall the wheel that bundles it "
                        "with 'pip install --force-reinstall --no-deps nvidia-pytriton==0.7.0'")
    where = f"the environment of {python}, which the python-backend models run in"
    # numpy<2 has no wheels for 3.13 and newer: installing it is no way out there.
    numpy1 = ("pip install 'numpy<2'" if tuple(map(int, v.split("."))) < (3, 13) else
              f"numpy<2 has no wheels for Python {v}: serve from a Python 3.11 or 3.12 environment")
    if facts.numpy is None:
        problems.append(f"numpy is missing from {where}: {numpy1}")
    elif int(facts.numpy.split(".")[0]) >= 2:
        problems.append(f"numpy {facts.numpy} is installed in {where}; the Triton python stub needs numpy<2 in the "
                        f"serving environment (BYTES tensors break otherwise): {numpy1}")
    for module in facts.missing_modules:
        problems.append(f"{module} is missing from {where}: pip install {module}")
    return problems


def check_stub_environment(binary: Path | None = None, env: Mapping[str, str] | None = None) -> StubFacts:
    """Raise ConfigError, naming what to install, when the bundled server's python stub could not run with ``env``
    (default: the environment the launcher gives the bundled ``binary``, by default the one in nvidia-pytriton)."""
    binary = binary or bundled_tritonserver()
    if env is None:
        env = stub_environment(binary, os.environ)
    facts = gather_stub_facts(stub_binary(binary), env)
    problems = stub_environment_problems(facts)
    if problems:
        raise ConfigError("the Triton python stub cannot run here:\n  - " + "\n  - ".join(problems))
    return facts


__all__ = ["ServeError", "ServerSettings", "StubFacts", "TritonServer", "check_stub_environment", "free_ports",
           "group_members", "stub_environment_problems"]

"""Run the gateway as a child process (``python -m gateway``) and wait until it answers: what
``exporter serve --gateway-port``, ``make demo``, the tests and the benchmark share; :class:`ServiceProcess`, the
part that is not the gateway's, also runs the benchmark's peer servers. Standard library only, so the
exporter can import it without the gateway's dependencies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A child HTTP service in its own process group, ready once ``health_url`` answers 200: the gateway, and the
    benchmark's peer servers (bench/peers.py). Its output goes to a temporary log, quoted when it fails to start
    and removed when it stops.

    ``env`` is laid over os.environ after the names in ``unset`` are removed from it.
    """

    def __init__(self, name: str, command: Sequence[str], health_url: str, *, env: Mapping[str, str] | None = None,
                 unset: Sequence[str] = (), cwd: str | None = None, ready_timeout: float = 30.0):
        self.name, self.command, self.health_url, self.cwd = name, list(command), health_url, cwd
        self.env, self.unset, self.ready_timeout = dict(env or {}), tuple(unset), ready_timeout
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self) -> ServiceProcess:
        """Start and wait until the health URL answers; on failure stop it and raise RuntimeError with its log."""
        log.info("starting %s", " ".join(self.command))
        env = {k: v for k, v in os.environ.items() if k not in self.unset}
        handle, name = tempfile.mkstemp(prefix=f"emb-provider-{self.name}-", suffix=".log")
        self.log_path = Path(name)
        try:
            with os.fdopen(handle, "wb") as log_file:
                self.process = subprocess.Popen(self.command, env={**env, **self.env}, cwd=self.cwd, stdout=log_file,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
            self._wait_ready()
        except BaseException:  # Ctrl-C while waiting too: the child has a session of its own and would live on
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {self.process.returncode}" if self.process.poll() is not None else \
                    f"did not answer {self.health_url} within {self.ready_timeout:g} s"
                raise RuntimeError(f"{self.name} {why}\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 10 s; remove the log. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            self._remove_log()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._remove_log()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the service printed (empty once stopped: the log is removed then)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _remove_log(self) -> None:
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess(ServiceProcess):
    """``python -m gateway --triton-url URL --host HOST --port PORT *args`` in its own process group.

    ``port=0`` picks a free port before starting (so :attr:`url` is known). ``env`` is laid over os.environ.
    """

    def __init__(self, triton_url: str, *, host: str = "127.0.0.1", port: int = 0, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, ready_timeout: float = 30.0):
        self.triton_url, self.host = triton_url, host
        self.port = port or free_port("127.0.0.1" if host == "0.0.0.0" else host)
        self.args = tuple(args)
        command = [sys.executable, "-m", "gateway", "--triton-url", triton_url, "--host", host,
                   "--port", str(self.port), *self.args]
        # The child imports the same gateway (and client) as this process, wherever it runs from: a checkout that
        # is not the installed one (a worktree, a script run from elsewhere) would otherwise start another copy.
        source = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
        super().__init__("gateway", command, f"{self.root}/health", env={**(env or {}), "PYTHONPATH": path},
                         ready_timeout=ready_timeout)

    @property
    def url(self) -> str:
        """Base URL of the OpenAI API (what ``openai.OpenAI(base_url=...)`` takes)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def start(self) -> GatewayProcess:
        super().start()
        return self

"""``exporter serve``: a real local Triton over a built repository, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .. import objectstore
from ..errors import ConfigError, ServeError
from ..serve import ServerSettings, TritonServer
from ..triton.repository import MANIFEST
from .build import DEFAULT_REPOSITORY
from .context import add_output_arguments, configure_logging

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from gateway.process import GatewayProcess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings(repository=DEFAULT_REPOSITORY)
    parser.add_argument("--repository", default=DEFAULT_REPOSITORY, metavar="DIR",
                        help=f"repository written by 'exporter build' (default ./{DEFAULT_REPOSITORY}), or an "
                        "object-store root (s3://, gs://, as://): its current build is synced to a local cache "
                        "first (this Triton binary has no cloud storage), every file checked against its sha256")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="object-store repositories: where synced builds are kept "
                        "(default ~/.cache/emb-provider/repositories)")
    parser.add_argument("--host", default=defaults.host,
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the server, with a warning)")
    for name in ("http", "grpc", "metrics"):
        port = getattr(defaults, f"{name}_port")
        parser.add_argument(f"--{name}-port", type=int, default=port, metavar="P",
                            help=f"{name} port (default {port}; 0 picks a free one)")
    parser.add_argument("--tritonserver", metavar="PATH",
                        help="tritonserver binary to run (e.g. inside the NGC image); default: the one bundled in "
                             "nvidia-pytriton, with ONNX encoders run by a python-backend ONNX Runtime model")
    parser.add_argument("--ready-timeout", type=float, default=defaults.ready_timeout, metavar="S",
                        help=f"seconds to wait for /v2/health/ready (default {defaults.ready_timeout:.0f})")
    parser.add_argument("--encoder-threads", type=int, default=0, metavar="N",
                        help="local view only: ONNX Runtime intra-op threads per encoder (default 0: one per core)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="start N Triton processes over the same repository, replica i on the given ports + 3*i "
                             "(8000-8002, 8003-8005, ...; 0 still picks free ones), for developing against several "
                             "replicas: give the client (or the gateway) all their URLs (default 1)")
    parser.add_argument("--gateway-port", type=int, metavar="N",
                        help="also start the OpenAI-compatible gateway (python -m gateway, needs the 'gateway' "
                             "extra) on this port, bound like --host, in front of this Triton (every replica) "
                             "(0 picks a free port)")
    add_output_arguments(parser, json_help="print the endpoints as one JSON line when ready")


def run(args: argparse.Namespace) -> int:
    configure_logging(args)
    for flag in ("http_port", "grpc_port", "metrics_port", "gateway_port"):
        if getattr(args, flag) is not None and not 0 <= getattr(args, flag) <= 65535:
            raise ConfigError(f"--{flag.replace('_', '-')}={getattr(args, flag)} is not a port; allowed: 0-65535")
    if not 1 <= args.replicas <= MAX_REPLICAS:
        raise ConfigError(f"--replicas={args.replicas}: allowed 1-{MAX_REPLICAS}")
    top = max(args.http_port, args.grpc_port, args.metrics_port) + PORT_STEP * (args.replicas - 1)
    if top > 65535:
        raise ConfigError(f"--replicas={args.replicas} needs ports up to {top}; allowed: up to 65535 (lower the "
                          "ports, or give 0 for free ones)")
    repository = args.repository
    watched = Path(repository) / MANIFEST  # a new build published there is loaded (rolling update)
    if objectstore.is_remote(repository):
        repository = objectstore.sync(repository, args.cache_dir)
        print(f"synced {args.repository} to {repository}", file=sys.stderr)
        watched = None  # the synced cache never changes: restart to pick up a newer build
    servers = [TritonServer(ServerSettings(
        repository=repository, host=args.host, http_port=_shift(args.http_port, i),
        grpc_port=_shift(args.grpc_port, i), metrics_port=_shift(args.metrics_port, i),
        tritonserver=args.tritonserver, ready_timeout=args.ready_timeout, encoder_threads=args.encoder_threads))
        for i in range(args.replicas)]
    received: list[int] = []
    stop, reload_asked = threading.Event(), threading.Event()

    def forward(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: reload_asked.set())

    gateway = None

    @args.cleanup.callback  # after the CLI has printed any error
    def teardown() -> None:
        if gateway is not None:
            gateway.stop()
        for server in servers:
            server.stop(received[0] if received else signal.SIGTERM)
        print("tritonserver stopped", file=sys.stderr)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for server in servers:
        server.start()
    if args.gateway_port is not None:
        gateway = _start_gateway(servers, args.host, args.gateway_port)
    _print_endpoints(servers, gateway, args.json)
    stamp = _stamp(watched)
    while not stop.wait(0.5):
        if reload_asked.is_set() or _stamp(watched) != stamp:
            reload_asked.clear()
            stamp = _stamp(watched)
            _reload(servers)
        for server in servers:
            if server.process is None or server.process.poll() is not None:
                raise ServeError(f"tritonserver ({server.http_url}) exited unexpectedly\n{server.log_tail()}")
        if gateway is not None and (gateway.process is None or gateway.process.poll() is not None):
            raise ServeError(f"the gateway exited unexpectedly\n{gateway.log_tail()}")
    return 0


def _stamp(manifest: Path | None) -> tuple[int, int] | None:
    """Identity of the published manifest: ``exporter build`` swaps a new repository in, so a new build changes it."""
    try:
        info = manifest.stat() if manifest is not None else None
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns) if info is not None else None


def _reload(servers: list[TritonServer]) -> None:
    """Load a new build into every replica, one after the other (a failure leaves that replica on the old build)."""
    for server in servers:
        try:
            server.reload()
        except (ServeError, ConfigError) as exc:
            log.error("reload of %s failed, still serving the previous build: %s", server.http_url, exc)
            continue
        versions = ", ".join(f"{m['name']} v{m.get('version', 1)}" for m in server.manifest["models"])
        print(f"reloaded {server.http_url}: {versions}", flush=True, file=sys.stderr)


MAX_REPLICAS = 16
PORT_STEP = 3  # each replica takes an HTTP, a gRPC and a metrics port


def _shift(port: int, replica: int) -> int:
    """Replica ``replica``'s port: ``port + 3 * replica``, or 0 (a free one) when ``port`` is 0."""
    return port + PORT_STEP * replica if port else 0


def _start_gateway(servers: list[TritonServer], host: str, port: int) -> GatewayProcess:
    """``python -m gateway`` in front of every replica (keys, limits etc. from the EMB_PROVIDER_GATEWAY_* env)."""
    from gateway.process import GatewayProcess

    try:
        return GatewayProcess(",".join(s.http_url for s in servers), host=host, port=port).start()
    except RuntimeError as exc:
        raise ServeError(f"{exc}\n(the gateway needs the 'gateway' extra: pip install 'emb-provider[gateway]')") \
            from None


def _print_endpoints(servers: list[TritonServer], gateway: GatewayProcess | None, as_json: bool) -> None:
    """The first replica's endpoints at the top level (as with one replica), every replica under ``replicas``."""
    replicas = [{"http": f"http://{s.http_url}", "grpc": s.grpc_url, "metrics": s.metrics_url, "pid": s.process.pid}
                for s in servers]
    server = servers[0]
    endpoints = {**replicas[0], "models": server.models, "replicas": replicas,
                 "triton_url": ",".join(s.http_url for s in servers)}
    if gateway is not None:
        endpoints["openai"] = gateway.url
    if as_json:
        print(json.dumps(endpoints), flush=True)
        return
    for replica in replicas:
        print(f"Triton ready (pid {replica['pid']}); Ctrl-C stops {'them' if len(replicas) > 1 else 'it'}",
              flush=True)
        print(f"  HTTP     {replica['http']}   (health: {replica['http']}/v2/health/ready)")
        print(f"  gRPC     {replica['grpc']}")
        print(f"  metrics  {replica['metrics']}")
    if len(replicas) > 1:
        print(f"  clients  EMB_PROVIDER_TRITON_URL={endpoints['triton_url']}")
    if gateway is not None:
        print(f"  OpenAI   {endpoints['openai']}   (gateway: POST /v1/embeddings, GET /v1/models)")
    for model in server.manifest["models"]:
        print(f"  model    {model['name']}: TEXT (BYTES [n,1]) -> EMBEDDING (FP32 [n,{model['dim']}]), "
              f"{model['precision']} via {model['route']}", flush=True)

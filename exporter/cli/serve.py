"""``exporter serve``: a real local Triton over a built repository, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING

from .. import objectstore
from ..config import Config
from ..errors import ConfigError, ServeError
from ..serve import ServerSettings, TritonServer
from .build import DEFAULT_REPOSITORY

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
    parser.add_argument("--gateway-port", type=int, metavar="N",
                        help="also start the OpenAI-compatible gateway (python -m gateway, needs the 'gateway' "
                             "extra) on this port, bound like --host, in front of this Triton (0 picks a free port)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="overrides EMB_PROVIDER_LOG_LEVEL")
    parser.add_argument("--json", action="store_true", help="print the endpoints as one JSON line when ready")


def run(args: argparse.Namespace) -> int:
    Config.from_env().with_overrides(log_level=args.log_level).configure_logging()
    for flag in ("http_port", "grpc_port", "metrics_port", "gateway_port"):
        if getattr(args, flag) is not None and not 0 <= getattr(args, flag) <= 65535:
            raise ConfigError(f"--{flag.replace('_', '-')}={getattr(args, flag)} is not a port; allowed: 0-65535")
    repository = args.repository
    if objectstore.is_remote(repository):
        repository = objectstore.sync(repository, args.cache_dir)
        print(f"synced {args.repository} to {repository}", file=sys.stderr)
    server = TritonServer(ServerSettings(
        repository=repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, tritonserver=args.tritonserver, ready_timeout=args.ready_timeout,
        encoder_threads=args.encoder_threads))
    received: list[int] = []
    stop = threading.Event()

    def forward(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}

    gateway = None

    @args.cleanup.callback  # after the CLI has printed any error
    def teardown() -> None:
        if gateway is not None:
            gateway.stop()
        server.stop(received[0] if received else signal.SIGTERM)
        print("tritonserver stopped", file=sys.stderr)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    server.start()
    if args.gateway_port is not None:
        gateway = _start_gateway(server, args.host, args.gateway_port)
    _print_endpoints(server, gateway, args.json)
    while not stop.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            raise ServeError(f"tritonserver exited unexpectedly\n{server.log_tail()}")
        if gateway is not None and (gateway.process is None or gateway.process.poll() is not None):
            raise ServeError(f"the gateway exited unexpectedly\n{gateway.log_tail()}")
    return 0


def _start_gateway(server: TritonServer, host: str, port: int) -> GatewayProcess:
    """``python -m gateway`` in front of ``server`` (its keys, limits etc. from the EMB_PROVIDER_GATEWAY_* env)."""
    from gateway.process import GatewayProcess

    try:
        return GatewayProcess(server.http_url, host=host, port=port).start()
    except RuntimeError as exc:
        raise ServeError(f"{exc}\n(the gateway needs the 'gateway' extra: pip install 'emb-provider[gateway]')") \
            from None


def _print_endpoints(server: TritonServer, gateway: GatewayProcess | None, as_json: bool) -> None:
    endpoints = {"http": f"http://{server.http_url}", "grpc": server.grpc_url, "metrics": server.metrics_url,
                 "models": server.models, "pid": server.process.pid}
    if gateway is not None:
        endpoints["openai"] = gateway.url
    if as_json:
        print(json.dumps(endpoints), flush=True)
        return
    print(f"Triton ready (pid {endpoints['pid']}); Ctrl-C stops it", flush=True)
    print(f"  HTTP     {endpoints['http']}   (health: {endpoints['http']}/v2/health/ready)")
    print(f"  gRPC     {endpoints['grpc']}")
    print(f"  metrics  {endpoints['metrics']}")
    if gateway is not None:
        print(f"  OpenAI   {endpoints['openai']}   (gateway: POST /v1/embeddings, GET /v1/models)")
    for model in server.manifest["models"]:
        print(f"  model    {model['name']}: TEXT (BYTES [n,1]) -> EMBEDDING (FP32 [n,{model['dim']}]), "
              f"{model['precision']} via {model['route']}", flush=True)

"""What the OpenAI-compatible gateway costs: its throughput against the project's client calling Triton directly,
and the latency it adds to one short text. One run, one Triton, one gateway process, the same texts.

    python -m bench.gateway --repository model_repository   # writes docs/benchmarks/<host>-<date>-gateway.{json,png}

On a shared 2-core machine the load moves figures by 2x within a minute, so nothing is compared across minutes:

- throughput: ``--rounds`` rounds, each one window (:func:`bench.measure.measure`) of every runner in turn:
  ``direct`` (``client.EmbeddingClient`` to Triton), ``gateway`` (the official openai SDK through
  ``python -m gateway``, its default base64 encoding) and ``gateway-float`` (``encoding_format="float"``);
  ``--concurrency`` threads with a client each, one batch of ``--batch-size`` STS-B dev sentences per request. The
  ratio is the median over rounds of gateway / direct within the round.
- latency: one thread sends one short text ``--pairs`` times, alternating direct (EmbeddingClient), gateway via the
  SDK, and gateway via plain HTTP (``http.client``, keep-alive: the server's share without the SDK's); added
  latency = p50(gateway) - p50(direct).

Targets (issue 14): gateway texts/s >= 0.9x direct; added p50 for one short text <= 3 ms. Computed and reported
PASS/FAIL, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench import DEFAULT_STSB, REPO
from bench.machine import machine, today
from bench.measure import Batches, Settings, measure
from bench.report import saved_figure
from bench.workloads import STSB_NAME, load_tokenizer, make_batches

log = logging.getLogger("exporter.bench.gateway")

THROUGHPUT_TARGET = 0.9
ADDED_LATENCY_TARGET_MS = 3.0
SHORT_TEXT = "A man is playing a guitar."
OUT_DIR = REPO / "docs" / "benchmarks"
RUNNERS = ("direct", "gateway", "gateway-float")
SINGLES = ("direct", "gateway-sdk", "gateway-http")


def direct_calls(url: str, model: str, concurrency: int, batch_size: int, stack: ExitStack) -> list[Callable]:
    from client import EmbeddingClient

    clients = [stack.enter_context(EmbeddingClient(url, model=model, batch_size=batch_size, max_concurrency=1))
               for _ in range(concurrency)]
    return [c.embed for c in clients]


def gateway_calls(base_url: str, model: str, concurrency: int, stack: ExitStack,
                  encoding: str | None = None) -> list[Callable]:
    import openai

    extra = {} if encoding is None else {"encoding_format": encoding}
    clients = [stack.enter_context(openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0))
               for _ in range(concurrency)]
    return [lambda batch, c=c: c.embeddings.create(model=model, input=batch, **extra) for c in clients]


def http_call(host: str, port: int, model: str, stack: ExitStack) -> Callable:
    """One keep-alive connection posting the short text: the gateway's cost without the openai SDK's."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    stack.callback(connection.close)
    body = json.dumps({"model": model, "input": [SHORT_TEXT], "encoding_format": "base64"}).encode()

    def call(_batch: list[str]) -> None:
        connection.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}: {response.read()[:200]!r}")
        response.read()

    return call


def throughput(calls: dict[str, list[Callable]], batches: Batches, rounds: int, window_s: float
               ) -> dict[str, list[dict[str, Any]]]:
    """Per runner, one :func:`measure` result per round; the runners take turns within each round."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
    settings = Settings(repeats=1, window_s=window_s, warmup_requests=2)
    for round_ in range(rounds):
        for name, runner in calls.items():
            results[name].append(measure(runner, batches, settings))
            log.info("round %d %s: %.1f texts/s", round_ + 1, name, results[name][-1]["texts_per_s"]["median"])
    return results


def latency(calls: dict[str, Callable], pairs: int, warmup: int = 20) -> dict[str, list[float]]:
    """Milliseconds per call of one short text, the callers alternating call by call."""
    for call in calls.values():
        for _ in range(warmup):
            call([SHORT_TEXT])
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(pairs):
        for name, call in calls.items():
            start = time.perf_counter()
            call([SHORT_TEXT])
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def run(repository: Path, model: str, batches: Batches, concurrency: int, batch_size: int, rounds: int,
        window_s: float, pairs: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
    """Start Triton and the gateway; the throughput rounds, then the latency pairs."""
    from exporter.serve import ServerSettings, TritonServer
    from gateway.process import GatewayProcess

    with TritonServer(ServerSettings(repository, http_port=0, grpc_port=0, metrics_port=0)) as server, \
            GatewayProcess(server.http_url, args=["--log-level", "WARNING"]) as gateway, ExitStack() as stack:
        calls = {"direct": direct_calls(server.http_url, model, concurrency, batch_size, stack),
                 "gateway": gateway_calls(gateway.url, model, concurrency, stack),
                 "gateway-float": gateway_calls(gateway.url, model, concurrency, stack, "float")}
        rounds_ = throughput(calls, batches, rounds, window_s)
        singles = {"direct": direct_calls(server.http_url, model, 1, 1, stack)[0],
                   "gateway-sdk": gateway_calls(gateway.url, model, 1, stack)[0],
                   "gateway-http": http_call("127.0.0.1", gateway.port, model, stack)}
        return rounds_, latency(singles, pairs)


def summarize(rounds: dict[str, list[dict[str, Any]]], times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians per runner, the per-round ratios, the latency percentiles, and the two targets' verdicts."""
    tps = {name: [r["texts_per_s"]["median"] for r in results] for name, results in rounds.items()}
    ratios = {name: [g / d for g, d in zip(tps[name], tps["direct"])] for name in ("gateway", "gateway-float")}
    p50 = {name: statistics.median(values) for name, values in times.items()}
    added = p50["gateway-sdk"] - p50["direct"]
    ratio = statistics.median(ratios["gateway"])
    return {
        "texts_per_s": {name: {"median": statistics.median(v), "per_round": v} for name, v in tps.items()},
        "ratio_per_round": ratios,
        "latency_ms": {name: {"p50": p50[name], "p95": float(np.percentile(v, 95, method="nearest")),
                              "mean": statistics.fmean(v)} for name, v in times.items()},
        "targets": {
            "throughput_ratio": {"value": ratio, "threshold": THROUGHPUT_TARGET, "passed": ratio >= THROUGHPUT_TARGET},
            "added_p50_ms": {"value": added, "threshold": ADDED_LATENCY_TARGET_MS,
                             "passed": added <= ADDED_LATENCY_TARGET_MS},
        },
        "float_throughput_ratio": statistics.median(ratios["gateway-float"]),
        "added_p50_ms_without_sdk": p50["gateway-http"] - p50["direct"],
    }


def render_plot(report: dict[str, Any], path: Path) -> Path:
    """Two panels: texts/s per runner (median over rounds, a dot per round) and p50 latency of one short text."""
    s, m = report["summary"], report["machine"]
    with saved_figure(path, 1, 2, figsize=(11, 4.2)) as (fig, (left, right)):
        for i, name in enumerate(RUNNERS):
            left.bar(i, s["texts_per_s"][name]["median"], color=f"C{i}")
            left.plot([i] * len(s["texts_per_s"][name]["per_round"]), s["texts_per_s"][name]["per_round"], "k.")
        left.set_xticks(range(len(RUNNERS)), RUNNERS)
        t = s["targets"]
        left.set_title(f"texts/s, STS-B batches of {report['settings']['batch_size']}, concurrency "
                       f"{report['settings']['concurrency']} (dots: rounds)\ngateway/direct = "
                       f"{t['throughput_ratio']['value']:.2f}x (target >= {THROUGHPUT_TARGET}x)", fontsize=9)
        right.bar(SINGLES, [s["latency_ms"][n]["p50"] for n in SINGLES], color=["C0", "C1", "C3"])
        right.set_title(f"p50 ms, one short text, one client\nadded through the gateway (openai SDK): "
                        f"{t['added_p50_ms']['value']:.2f} ms (target <= {ADDED_LATENCY_TARGET_MS} ms)", fontsize=9)
        for ax in (left, right):
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{report['model']} ({report['precision']}) via the OpenAI-compatible gateway vs "
                     f"client.EmbeddingClient; {m['cpu']} x{m['cores']}", fontsize=9)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="repository built by 'exporter build' (default ./model_repository)")
    parser.add_argument("--model", help="served model name (default: the repository's first)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads for the throughput runs (default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per request (default 64)")
    parser.add_argument("--texts", type=int, default=1024, help="unique STS-B dev sentences used (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (default 5)")
    parser.add_argument("--window", type=float, default=4.0, metavar="S", help="seconds per window (default 4)")
    parser.add_argument("--pairs", type=int, default=500, help="single-text calls per caller (default 500)")
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB, help="STS-B dev csv")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="report directory (default docs/benchmarks)")
    parser.add_argument("--stem", help="report file name without extension (default <host>-<date>-gateway)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the openai SDK's transport logs every request
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from exporter.models import DEFAULT_MODEL, resolve_model_dir
    from exporter.stsb import load_stsb
    from exporter.triton.repository import read_manifest

    manifest = read_manifest(args.repository)
    entry = next((m for m in manifest["models"] if args.model in (None, m["name"])), None)
    if entry is None:
        parser.error(f"model {args.model!r} is not in {args.repository}; it serves "
                     f"{[m['name'] for m in manifest['models']]}")
    tokenizer = load_tokenizer(resolve_model_dir(DEFAULT_MODEL))
    sentences = load_stsb(args.stsb).sentences[:args.texts]
    batches = make_batches(STSB_NAME, sentences, args.batch_size, tokenizer, int(entry.get("max_seq_length") or 256))

    host = machine()
    started = time.perf_counter()
    rounds, times = run(args.repository, entry["name"], batches, args.concurrency, args.batch_size, args.rounds,
                        args.window, args.pairs)
    host["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "schema": "emb-provider-gateway-benchmark/2", "created": today(), "model": entry["name"],
        "precision": entry.get("precision"), "machine": host,
        "settings": {"concurrency": args.concurrency, "batch_size": args.batch_size, "texts": len(sentences),
                     "rounds": args.rounds, "window_s": args.window, "pairs": args.pairs, "short_text": SHORT_TEXT,
                     "gateway": "python -m gateway, defaults (uvicorn, one process), same host as Triton"},
        "command": "python -m bench.gateway " + " ".join(argv if argv is not None else sys.argv[1:]),
        "duration_s": time.perf_counter() - started,
        "summary": summarize(rounds, times), "rounds": rounds,
    }
    stem = args.stem or f"{host['host']}-{today()}-gateway"
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = f"{stem}.png"
    render_plot(report, args.out / f"{stem}.png")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    s, t = report["summary"], report["summary"]["targets"]
    verdict = {True: "PASS", False: "FAIL"}
    print(f"gateway/direct texts/s: {t['throughput_ratio']['value']:.2f}x ({verdict[t['throughput_ratio']['passed']]}"
          f", target >= {THROUGHPUT_TARGET}x); float encoding {s['float_throughput_ratio']:.2f}x")
    print(f"one short text, p50: direct {s['latency_ms']['direct']['p50']:.2f} ms, gateway via the SDK "
          f"{s['latency_ms']['gateway-sdk']['p50']:.2f} ms: +{t['added_p50_ms']['value']:.2f} ms "
          f"({verdict[t['added_p50_ms']['passed']]}, target <= {ADDED_LATENCY_TARGET_MS} ms); via plain HTTP "
          f"+{s['added_p50_ms_without_sdk']:.2f} ms")
    print(f"report: {args.out / stem}.json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

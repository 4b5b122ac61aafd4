"""Load test of a served embedding model: nothing lost, nothing mixed up, no unexpected errors.

``--clients`` threads, each with its own ``client.EmbeddingClient`` (retries off, so every failure is counted),
send ``--requests`` requests each, with random batch sizes in ``[--min-batch, --max-batch]`` drawn from a pool of
mixed-length texts (STS-B dev sentences, multi-sentence paragraphs, texts longer than the model's 256 tokens, and
edge cases: empty, emoji/CJK/RTL). Every returned vector is compared with the single-text reference (each pool
text sent alone, before the load): cosine >= ``--min-cosine``. Reported: lost texts, mismatched vectors, errors by
type, throughput, per-request latency p50/p95/p99, and the server's RSS (whole process group: core + python
stubs) before and after.

Loopback only: the command starts its own local Triton (``exporter.serve``) on 127.0.0.1 over ``--repository``.
Bounded: at most clients x requests requests, and ``--time-limit`` seconds (requests not sent by then count as
a failure). Exit status 0 only when nothing was lost, mismatched, failed or left unsent.

    python -m bench.load --repository model_repository          # the issue's 4 x 500, batches 1-32
    python -m bench.load --requests 50 --json /tmp/load.json    # a quick run
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import DEFAULT_STSB
from exporter.stsb import load_stsb

log = logging.getLogger("exporter.loadtest")

EDGE_TEXTS = ("", "   ", "emoji 😀🚀, CJK 中文字符, RTL שלום עולם مرحبا بالعالم", "NUL\x00inside")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LoadSettings:
    """The load to send; the defaults are issue 7's: 4 clients x 500 requests, batches of 1-32 texts."""

    clients: int = 4
    requests: int = 500
    min_batch: int = 1
    max_batch: int = 32
    pool: int = 256
    seed: int = 0
    min_cosine: float = 0.99999
    time_limit: float = 3600.0
    request_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name, low in (("clients", 1), ("requests", 1), ("min_batch", 1), ("pool", len(EDGE_TEXTS) + 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
        if not self.min_batch <= self.max_batch <= self.pool:
            raise ValueError(f"batch sizes {self.min_batch}-{self.max_batch}: allowed 1 <= min <= max <= pool "
                             f"({self.pool})")
        if self.time_limit <= 0 or self.request_timeout <= 0:
            raise ValueError("time_limit and request_timeout must be > 0 seconds")


@dataclass
class LoadReport:
    """What happened; ``passed`` is the verdict the exit status reports."""

    settings: dict[str, Any]
    model: str
    requests_planned: int
    requests_sent: int = 0
    texts_sent: int = 0
    vectors_ok: int = 0
    lost: int = 0
    mismatched: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    min_cosine_seen: float = 1.0
    seconds: float = 0.0
    texts_per_s: float = 0.0
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    server_rss_mb: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (self.requests_sent == self.requests_planned and self.lost == 0 and self.mismatched == 0
                and not self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        rss, lat = self.server_rss_mb, self.latency_ms
        return "\n".join([
            f"model {self.model}: {self.requests_sent}/{self.requests_planned} requests, {self.texts_sent} texts "
            f"in {self.seconds:.1f} s -> {self.texts_per_s:.1f} texts/s, {self.requests_per_s:.1f} requests/s",
            f"latency per request (ms): p50 {lat.get('p50', 0):.1f}  p95 {lat.get('p95', 0):.1f}"
            f"  p99 {lat.get('p99', 0):.1f}  max {lat.get('max', 0):.1f}",
            f"lost {self.lost}, mismatched {self.mismatched} (min cosine {self.min_cosine_seen:.7f}), "
            f"errors {self.errors or 0}",
            f"server RSS (MB): before {rss.get('before', 0):.0f}, half-way {rss.get('half', 0):.0f}, "
            f"after {rss.get('after', 0):.0f}, growth {rss.get('growth', 0):+.0f} "
            f"(second half {rss.get('second_half_growth', 0):+.0f})",
            "PASS" if self.passed else "FAIL",
        ])


def text_pool(size: int, seed: int, stsb: Path = DEFAULT_STSB) -> list[str]:
    """``size`` distinct texts of mixed length: 70% sentences, 20% paragraphs, 10% over 256 tokens, plus edges."""
    sentences = load_stsb(stsb).sentences
    rng = random.Random(seed)
    pool = list(EDGE_TEXTS)
    while len(pool) < size:
        kind = rng.random()
        count = 1 if kind < 0.7 else rng.randint(3, 8) if kind < 0.9 else rng.randint(15, 25)
        start = rng.randrange(len(sentences) - count)
        text = " ".join(sentences[start:start + count])
        if text not in pool:
            pool.append(text)
    return pool


def server_rss_mb(pgid: int | None) -> float:
    """Resident memory of a process group (the server and its python stubs), in MB; 0 when unknown."""
    if pgid is None:
        return 0.0
    import psutil

    from exporter.serve import group_members

    total = 0
    for pid in group_members(pgid):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def _client(http_url: str, model: str, settings: LoadSettings):
    from client import EmbeddingClient, Retry, Timeouts

    return EmbeddingClient(http_url, model=model, max_concurrency=1, retry=Retry(attempts=1),
                           timeouts=Timeouts(connect=5.0, request=settings.request_timeout))


def references(http_url: str, model: str, pool: list[str], settings: LoadSettings) -> np.ndarray:
    """Each pool text embedded alone (one request per text, nothing else in flight): the vectors to match."""
    with _client(http_url, model, settings) as client:
        return np.stack([client.embed([text])[0] for text in pool])


class _Tally:
    """Thread-safe counters shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.requests = self.texts = self.ok = self.lost = self.mismatched = 0
        self.min_cosine = 1.0


def _worker(http_url: str, model: str, pool: list[str], refs: np.ndarray, settings: LoadSettings, requests: int,
            seed: int, deadline: float, tally: _Tally) -> None:
    rng = random.Random(seed)
    with _client(http_url, model, settings) as client:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            picks = [rng.randrange(len(pool)) for _ in range(rng.randint(settings.min_batch, settings.max_batch))]
            start = time.perf_counter()
            try:
                vectors = client.embed([pool[i] for i in picks])
            except Exception as exc:  # noqa: BLE001 - every failure is a finding, counted by type
                with tally.lock:
                    tally.requests += 1
                    tally.texts += len(picks)
                    tally.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                continue
            elapsed = time.perf_counter() - start
            rows = min(len(vectors), len(picks)) if vectors.ndim == 2 else 0
            cos = np.nan_to_num(_cosine(vectors[:rows], refs[picks[:rows]]), nan=-1.0)
            bad = int((cos < settings.min_cosine).sum())
            with tally.lock:
                tally.requests += 1
                tally.texts += len(picks)
                tally.latencies.append(elapsed)
                tally.lost += len(picks) - rows
                tally.mismatched += bad
                tally.ok += rows - bad
                tally.min_cosine = min([tally.min_cosine, *cos.tolist()])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, dim] arrays (NaN for an all-zero row)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _phase(http_url: str, model: str, pool: list[str], refs: np.ndarray, settings: LoadSettings, requests: int,
           phase: int, deadline: float, tally: _Tally) -> bool:
    """``settings.clients`` threads, ``requests`` each; False when a thread outlived the time limit."""
    threads = [threading.Thread(target=_worker, name=f"load-{phase}-{i}", daemon=True,
                                args=(http_url, model, pool, refs, settings, requests,
                                      settings.seed * 1000 + phase * 100 + i, deadline, tally))
               for i in range(settings.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + settings.request_timeout + 10)
    return not any(thread.is_alive() for thread in threads)


def run_load(http_url: str, model: str, settings: LoadSettings = LoadSettings(), *, server_pgid: int | None = None,
             stsb: Path = DEFAULT_STSB) -> LoadReport:
    """Send the load to ``http_url`` (host:port, loopback) and check every vector; see the module docstring.

    The load runs in two halves with the server's RSS read before, between and after: the first half grows the
    runtime's memory pools to the largest batch shapes, so growth in the second half is what a leak would show.
    """
    host = http_url.rsplit(":", 1)[0].strip("[]")
    if host not in LOOPBACK:
        raise ValueError(f"load tests run on loopback only; got host {host!r}, allowed: {', '.join(LOOPBACK)}")
    pool = text_pool(settings.pool, settings.seed, stsb)
    refs = references(http_url, model, pool, settings)
    log.info("references: %d texts embedded one by one", len(pool))
    report = LoadReport(asdict(settings), model, settings.clients * settings.requests)
    tally = _Tally()
    rss = [server_rss_mb(server_pgid)]
    deadline = time.monotonic() + settings.time_limit
    start = time.perf_counter()
    for phase, requests in enumerate((settings.requests // 2, settings.requests - settings.requests // 2)):
        if not _phase(http_url, model, pool, refs, settings, requests, phase, deadline, tally):
            tally.errors["client thread still running after the time limit"] += 1
        rss.append(server_rss_mb(server_pgid))
        log.info("half %d done after %.0f s: %d requests, %d texts, %d mismatched, %d lost, %d errors", phase + 1,
                 time.perf_counter() - start, tally.requests, tally.texts, tally.mismatched, tally.lost,
                 sum(tally.errors.values()))
    report.seconds = time.perf_counter() - start
    with tally.lock:
        report.requests_sent, report.texts_sent = tally.requests, tally.texts
        report.vectors_ok, report.lost, report.mismatched = tally.ok, tally.lost, tally.mismatched
        report.errors = dict(tally.errors)
        report.min_cosine_seen = tally.min_cosine
        latencies = np.array(tally.latencies) * 1000
    report.texts_per_s = report.texts_sent / report.seconds
    report.requests_per_s = report.requests_sent / report.seconds
    if latencies.size:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        report.latency_ms = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(latencies.max())}
    if server_pgid is not None:
        report.server_rss_mb = {"before": rss[0], "half": rss[1], "after": rss[2], "growth": rss[2] - rss[0],
                                "second_half_growth": rss[2] - rss[1]}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.splitlines()[0])
    defaults = LoadSettings()
    parser.add_argument("--repository", default="model_repository", help="repository built by 'exporter build'")
    parser.add_argument("--model", help="public model name to load (default: the repository's fp32 model)")
    for name in ("clients", "requests", "min_batch", "max_batch", "pool", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--min-cosine", type=float, default=defaults.min_cosine)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit, metavar="S")
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB, help="STS-B dev csv (sentence source)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = LoadSettings(args.clients, args.requests, args.min_batch, args.max_batch, args.pool, args.seed,
                                args.min_cosine, args.time_limit)
    except ValueError as exc:
        parser.error(str(exc))
    from exporter.serve import ServerSettings, TritonServer

    with TritonServer(ServerSettings(Path(args.repository), host="127.0.0.1", http_port=0, grpc_port=0,
                                     metrics_port=0)) as server:
        model = args.model or _fp32_model(server.manifest)
        log.info("load: %d clients x %d requests, batches %d-%d, against %s on %s", settings.clients,
                 settings.requests, settings.min_batch, settings.max_batch, model, server.http_url)
        report = run_load(server.http_url, model, settings, server_pgid=server.process.pid, stsb=args.stsb)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if report.passed else 1


def _fp32_model(manifest: dict[str, Any]) -> str:
    names = [m["name"] for m in manifest["models"] if m["precision"] == "fp32"]
    if not names:
        raise SystemExit(f"the repository serves no fp32 model ({[m['name'] for m in manifest['models']]}); "
                         "pass --model NAME")
    return names[0]


if __name__ == "__main__":
    sys.exit(main())

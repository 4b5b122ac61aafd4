"""Benchmark every precision the host supports against the unconverted model, in-process and served.

Baseline: sentence-transformers in-process (fp32 on CPU, fp16 on GPU), same texts, same batches. For each
precision: the repository ``exporter build`` publishes (one repository per precision, so each server's memory
is that precision's own), its encoder run in-process through the runtime loader the server uses, then served by
the real local Triton and driven through ``client.EmbeddingClient`` at several concurrencies. Quality (STS-B dev
Spearman, cosine vs fp32) comes from the project's eval step. Writes ``<out>/<host>-<date>.{json,md,png}``.

    python -m bench.cpu                 # full CPU run (~10 min on 2 cores)
    python -m bench.cpu --quick --out /tmp/bench   # smoke run (< 1 min)
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from bench import DEFAULT_STSB, REPO
from bench.machine import today
from bench.measure import Settings
from bench.report import BASELINE, SCHEMA, write_report
from exporter.errors import ConfigError, ModelError

log = logging.getLogger("exporter.bench")

DEFAULT_OUT = REPO / "docs" / "benchmarks"
COMMAND = "python -m bench.cpu"


@dataclass(frozen=True)
class Profile:
    """The size of a run: what ``--quick`` shrinks."""

    batch_size: int
    token_budget: int  # synthetic workloads: at most this many tokens per request
    stsb_texts: int
    synthetic: dict[int, int]  # tokens -> number of texts
    settings: Settings
    concurrency: tuple[int, ...]
    headline_concurrency: int
    stsb_pairs: int | None  # quality: STS-B pairs (None: the whole dev split)
    verification_limit: int | None  # gate sentences per build (None: the whole shipped set; the gate's own
    # figures live in each artefact's report.json, the benchmark's quality figures come from STS-B)
    precisions: tuple[str, ...] | None  # None: every precision the host supports


FULL = Profile(batch_size=64, token_budget=4096, stsb_texts=1024, synthetic={128: 128, 256: 64, 512: 32},
               settings=Settings(repeats=3, window_s=2.0, warmup_requests=1), concurrency=(1, 4, 16),
               headline_concurrency=4, stsb_pairs=None, verification_limit=64, precisions=None)
QUICK = Profile(batch_size=32, token_budget=4096, stsb_texts=64, synthetic={128: 8}, settings=Settings(1, 0.3, 1),
                concurrency=(1, 2), headline_concurrency=2, stsb_pairs=40, verification_limit=16,
                precisions=("fp32", "int8"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fp32 + int8, tiny workloads (< 1 min)")
    parser.add_argument("--model", help="hub id or local model dir (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precisions", help="comma-separated subset, e.g. fp32,int8 (default: every precision "
                        "the device supports; --quick: fp32,int8)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report directory (default {DEFAULT_OUT})")
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB, help="STS-B dev csv (tab-separated)")
    parser.add_argument("--max-length", type=int, default=512,
                        help="max tokens per text for every runner (default 512, so the 512-token workload is "
                             "not truncated; the model's own default is 256)")
    parser.add_argument("--batch-size", type=int, help="texts per request (default 64; --quick 32); synthetic "
                        "workloads cap it at 4,096 tokens per request")
    parser.add_argument("--concurrency", help="comma-separated served concurrencies (default 1,4,16)")
    parser.add_argument("--repeats", type=int, help="timed windows per figure (default 3)")
    parser.add_argument("--window", type=float, help="seconds per timed window (default 2)")
    parser.add_argument("--warmup", type=int, help="untimed requests before each figure (default 1; on a GPU the "
                        "first requests also pay for CUDA kernel selection, so bench.gpu_served uses more)")
    parser.add_argument("--no-served", action="store_true", help="skip the Triton runs (and the peers')")
    parser.add_argument("--infinity-python", metavar="PYTHON",
                        help="an interpreter whose environment has infinity-emb (scripts/gpu.sh makes one): serve "
                             "the same model with Infinity's defaults and measure it like ours, in this run")
    parser.add_argument("--work", type=Path, help="keep built repositories here (default: a temp dir, removed)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser.parse_args(argv)


def _int_list(raw: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"error: {flag}={raw!r} is not a comma-separated list of integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise SystemExit(f"error: {flag}={raw!r}: allowed: positive integers, e.g. 1,4,16")
    return values


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The base profile with command-line overrides applied and validated."""
    base = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise SystemExit(f"error: --batch-size={args.batch_size}: allowed: >= 1")
        changes["batch_size"] = args.batch_size
    if args.concurrency:
        conc = _int_list(args.concurrency, "--concurrency")
        changes["concurrency"] = conc
        changes["headline_concurrency"] = base.headline_concurrency if base.headline_concurrency in conc else conc[0]
    if args.repeats is not None or args.window is not None or args.warmup is not None:
        try:
            changes["settings"] = replace(base.settings, repeats=args.repeats or base.settings.repeats,
                                          window_s=args.window or base.settings.window_s,
                                          warmup_requests=base.settings.warmup_requests if args.warmup is None
                                          else args.warmup)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    return replace(base, **changes)


def main(argv: list[str] | None = None, *, server_options: Mapping[str, Any] | None = None,
         stem: str | None = None, command: str = COMMAND) -> int:
    """The CLI; ``server_options`` are extra :class:`exporter.serve.ServerSettings` fields for the served runs,
    ``stem`` the report's file name (default ``<host>-<date>``)."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a running tritonserver is stopped and temp dirs are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    profile = profile_from_args(args)
    from bench.run import run_benchmark

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emb-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            report = run_benchmark(args, profile, work, server_options=server_options or {})
        except (ConfigError, ModelError) as exc:  # a bad --model / --stsb / environment: say which, exit 2
            print(f"error: {exc}", file=sys.stderr)
            return 2
    line = " ".join([command, shlex.join(sys.argv[1:] if argv is None else argv)])
    report.update(schema=SCHEMA, command=line.strip(),
                  duration_s=time.perf_counter() - started, baseline_label=BASELINE)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    stem = (stem or f"{report['machine']['host']}-{today()}") + ("-quick" if args.quick else "")
    paths = write_report(report, args.out, stem)
    for target in report["targets"]:
        print(f"target {target['name']}: {target['value']:.2f}x (>= {target['threshold']}x) "
              f"{'PASS' if target['passed'] else 'FAIL'}")
    print(f"report: {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

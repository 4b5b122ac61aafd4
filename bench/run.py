"""The benchmark's steps in order: workloads -> baseline -> per precision (build, in-process, served, quality)
-> ratios and targets. Returns the report record that :mod:`bench.report` writes.

A precision whose build fails is reported under ``errors`` and the run goes on with the others: a benchmark
that dies on int4 would publish nothing about fp32 and int8.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tqdm import tqdm

from bench.inprocess import run_inprocess
from bench.machine import machine, today
from bench.measure import Batches
from bench.peers import PEERS, Peer, measure_peer
from bench.quality import StsbQuality
from bench.report import BASELINE, BASELINE_END
from bench.served import serve_and_measure
from bench.workloads import STSB_NAME, build_workloads, describe, load_tokenizer

log = logging.getLogger("exporter.bench.run")

@dataclass(frozen=True)
class Target:
    """A served figure over another, measured in the same run. ``versus``: ``baseline`` (sentence-transformers
    in-process), ``inprocess`` (the runner's own in-process figure) or ``served:<runner>`` (a peer's or another
    precision's served figure at the same concurrency). ``concurrency`` None: the run's headline concurrency."""

    name: str
    runner: str
    versus: str
    threshold: float
    gpu: bool  # the device kind the target is set for
    concurrency: int | None = None


TARGETS = (
    # issue 8, CPU
    Target("served int8 vs sentence-transformers fp32 (STS-B, c={c})", "int8", "baseline", 2.0, gpu=False),
    Target("served fp32 vs in-process ONNX Runtime fp32 (STS-B, c={c})", "fp32", "inprocess", 0.9, gpu=False),
    # issue 17, GPU: the bge-large-shape figure is the first, the MiniLM figure the second
    Target("served fp16 vs sentence-transformers fp16 in-process (STS-B, c={c})", "fp16", "baseline", 1.3,
           gpu=True, concurrency=16),
    Target("served fp16 vs Infinity served (STS-B, c={c})", "fp16", "served:infinity", 1.5, gpu=True,
           concurrency=16),
)
INPROCESS_TIMEOUT_S = 900.0


def _plan(model: str, model_dir: Path, precision: str, device: Any, max_length: int) -> Any:
    """The exporter's own plan for ``precision`` (a per-model setting, so environment overrides cannot swap
    it); the repository name carries the precision so reports and servers never mix them up."""
    from exporter.config import Config
    from exporter.models import ModelSpec, derive_name, native_dtype
    from exporter.plan import resolve

    spec = ModelSpec(model, f"{derive_name(model)[:50]}-{precision}", max_length=max_length, precision=precision)
    return resolve(spec, Config.from_env({}), device, native_dtype(model_dir))


def _build(plan: Any, model_dir: Path, repository: Path, batch_size: int, verification_limit: int | None) -> dict:
    """``exporter build`` for one plan; returns the manifest entry of the model it published."""
    from exporter.artefact import ExportOptions
    from exporter.build import build_repository
    from exporter.triton.config import ServingOptions

    size = max(64, batch_size)
    options = ServingOptions(max_batch_size=size, max_texts_per_request=size)
    result = build_repository([plan], {plan.model: model_dir}, repository, options,
                              ExportOptions(verification_limit=verification_limit))
    [entry] = result.manifest["models"]
    return {**entry, "build_s": result.seconds}


def _artefact_dirs(repository: Path, entry: dict[str, Any]) -> tuple[Path, Path]:
    """(encoder files, tokenizer files) of a published model: the very files the server loads."""
    from exporter.artefact import TOKENIZER_DIR

    models, version = entry["triton_models"], str(entry.get("version", 1))
    return repository / models["encoder"] / version, repository / models["tokenizer"] / version / TOKENIZER_DIR


def _precision_info(encoder_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    from exporter import read_report

    report = read_report(encoder_dir)  # the published copy: the build's record is not kept past the build
    return {"route": entry["route"], "runtime": entry["runtime"], "weights_bytes": report["weights_bytes"],
            "size_ratio": report["size_ratio_vs_fp32"], "gate": {k: report["gate"][k] for k in
                                                                  ("min_cosine", "mean_cosine", "passed")},
            "build_s": round(entry["build_s"], 1)}


def _inprocess_spec(label: str, runner: str, path: Path, workloads: list[Batches], args: argparse.Namespace,
                    profile: Any, tokenizer: Path | None = None) -> dict[str, Any]:
    s = profile.settings
    return {"label": label, "runner": runner, "path": str(path), "tokenizer": str(tokenizer or ""),
            "device": args.device, "max_length": args.max_length, "workloads": [w.to_dict() for w in workloads],
            "settings": {"repeats": s.repeats, "window_s": s.window_s, "warmup_requests": s.warmup_requests}}


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the wall time of ``step`` (seconds, rounded) into ``timings``, even when it fails."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - start, 1)


def _served_runs(workloads: list[Batches], profile: Any) -> list[tuple[Batches, int]]:
    """STS-B at every concurrency, the synthetic workloads at the headline concurrency only (time budget)."""
    runs = [(workloads[0], c) for c in profile.concurrency]
    return runs + [(w, profile.headline_concurrency) for w in workloads[1:]]


def _add_ratios(report: dict[str, Any]) -> None:
    """Ratios to the baseline (mean of its start and end figures per workload) and to the same precision
    in-process; records how far the baseline drifted between start and end."""
    medians = {(r["runner"], r["workload"]): r["texts_per_s"]["median"] for r in report["inprocess"]}
    base: dict[str, float] = {}
    report["baseline_drift"] = {}
    for (runner, workload), start in medians.items():
        if runner != BASELINE:
            continue
        end = medians.get((BASELINE_END, workload), start)
        base[workload] = (start + end) / 2
        report["baseline_drift"][workload] = end / start - 1
    for result in report["inprocess"] + report["served"]:
        reference = None if result["runner"] in (BASELINE, BASELINE_END) else base.get(result["workload"])
        result["ratio_to_baseline"] = result["texts_per_s"]["median"] / reference if reference else None
    for result in report["served"]:
        own = medians.get((result["runner"], result["workload"]))
        result["ratio_to_inprocess"] = result["texts_per_s"]["median"] / own if own else None


def _targets(report: dict[str, Any], headline: int, gpu: bool) -> list[dict[str, Any]]:
    """The device kind's targets whose figures this run has."""
    found = []
    for target in TARGETS:
        concurrency = target.concurrency or headline
        served = _served(report, target.runner, concurrency)
        if target.gpu != gpu or served is None:
            continue
        if target.versus.startswith("served:"):
            other = _served(report, target.versus.split(":", 1)[1], concurrency)
            value = served["texts_per_s"]["median"] / other["texts_per_s"]["median"] if other else None
        else:
            value = served["ratio_to_baseline" if target.versus == "baseline" else "ratio_to_inprocess"]
        if value is not None:
            found.append({"name": target.name.format(c=concurrency), "value": value, "threshold": target.threshold,
                          "passed": value >= target.threshold})
    return found


def _served(report: dict[str, Any], runner: str, concurrency: int) -> dict[str, Any] | None:
    """The served STS-B result of ``runner`` at ``concurrency``, if measured."""
    return next((r for r in report["served"] if r["runner"] == runner and r["workload"] == STSB_NAME
                 and r["concurrency"] == concurrency), None)


@dataclass
class _Run:
    """What every step of one benchmark run shares."""

    args: argparse.Namespace
    profile: Any
    work: Path
    model: str
    model_dir: Path
    device: Any
    workloads: list[Batches]
    report: dict[str, Any]
    server_options: Mapping[str, Any] = field(default_factory=dict)
    quality: StsbQuality | None = None

    def timed(self, step: str) -> Any:
        return _timed(self.report["timings"], step)

    @contextmanager
    def served_step(self, label: str, runs: list[tuple[Batches, int]]) -> Iterator[Callable[[], None]]:
        """Time ``label``'s served step and show its windows' progress; yields the callback for each window."""
        with self.timed(f"{label}: served"), tqdm(total=len(runs) * self.profile.settings.repeats,
                                                  desc=f"served {label}", unit="window", file=sys.stderr,
                                                  leave=False) as bar:
            yield lambda: bar.update(1)

    def served_failed(self, label: str, exc: Exception) -> None:
        """Record a served step that failed: a finding of the benchmark, not its end."""
        log.error("%s: served run failed: %s", label, exc)
        self.report["errors"].append(f"{label}: served run failed: {str(exc).splitlines()[0]}")


def run_benchmark(args: argparse.Namespace, profile: Any, work: Path, *,
                  server_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every step of the benchmark; returns the report record (without the run's command and duration).
    ``server_options``: extra :class:`exporter.serve.ServerSettings` fields for every served run."""
    from exporter.devices import parse_device
    from exporter.models import DEFAULT_MODEL, resolve_model_dir
    from exporter.stsb import load_stsb

    model = args.model or DEFAULT_MODEL
    model_dir = resolve_model_dir(model)
    device = parse_device(args.device)
    precisions = _precisions(args, profile, device)
    tokenizer = load_tokenizer(model_dir)
    pairs = load_stsb(args.stsb, profile.stsb_pairs)
    workloads = build_workloads(load_stsb(args.stsb).sentences, tokenizer, stsb_texts=profile.stsb_texts,
                                synthetic=profile.synthetic, batch_size=profile.batch_size,
                                max_length=args.max_length, token_budget=profile.token_budget)
    baseline_kind = "fp16" if device.is_gpu else "fp32"
    report: dict[str, Any] = {
        "schema": None, "created": today(), "mode": "quick" if args.quick else "full", "model": model,
        "baseline": f"sentence-transformers {baseline_kind} in-process", "machine": machine(),
        "settings": {"device": args.device, "batch_size": profile.batch_size, "max_length": args.max_length,
                     "repeats": profile.settings.repeats, "window_s": profile.settings.window_s,
                     "warmup_requests": profile.settings.warmup_requests, "concurrency": list(profile.concurrency),
                     "headline_concurrency": profile.headline_concurrency, "precisions": list(precisions)},
        "workloads": [describe(w) for w in workloads], "precisions": {}, "inprocess": [], "served": [],
        "quality": {}, "targets": [], "errors": [], "timings": {}, "peers": {},
    }
    run = _Run(args, profile, work, model, model_dir, device, workloads, report, dict(server_options or {}))
    with run.timed("baseline in-process"):
        spec = _inprocess_spec(BASELINE, "sentence-transformers", model_dir, workloads, args, profile)
        report["inprocess"] += run_inprocess(spec, work, INPROCESS_TIMEOUT_S)["results"]
    with run.timed("quality: fp32 reference"):
        run.quality = StsbQuality(model_dir, pairs, args.max_length)
    report["quality"] = run.quality.summary()
    for precision in precisions:
        _precision_steps(run, precision)
    if args.infinity_python and not args.no_served:
        _peer_steps(run, PEERS["infinity"], args.infinity_python)
    with run.timed("baseline in-process, again at the end"):
        spec = _inprocess_spec(BASELINE_END, "sentence-transformers", model_dir, workloads, args, profile)
        report["inprocess"] += run_inprocess(spec, work, INPROCESS_TIMEOUT_S)["results"]
    _add_ratios(report)
    report["targets"] = _targets(report, profile.headline_concurrency, device.is_gpu)
    return report


def _precision_steps(run: _Run, precision: str) -> None:
    """Build, quality, in-process and served figures for one precision, appended to ``run.report``."""
    report, profile = run.report, run.profile
    plan = _plan(run.model, run.model_dir, precision, run.device, run.args.max_length)
    repository = run.work / f"repository-{precision}"
    try:
        with run.timed(f"{precision}: build"):
            entry = _build(plan, run.model_dir, repository, profile.batch_size, profile.verification_limit)
    except Exception as exc:  # a failed route is a finding of the benchmark, not the end of it
        log.error("%s: build failed: %s", precision, exc)
        report["errors"].append(f"{precision}: build failed: {str(exc).splitlines()[0]}")
        return
    encoder_dir, tokenizer_dir = _artefact_dirs(repository, entry)
    report["precisions"][precision] = _precision_info(encoder_dir, entry)
    with run.timed(f"{precision}: quality"):
        report["quality"]["precisions"][precision] = scores = run.quality.score(encoder_dir, tokenizer_dir)
    log.info("%s: STS-B Spearman %.4f (reference %.4f), min cosine vs fp32 %.4f", precision,
             scores["spearman"], run.quality.reference_spearman, scores["min_cosine"])
    with run.timed(f"{precision}: in-process"):
        spec = _inprocess_spec(precision, "artefact", encoder_dir, run.workloads, run.args, profile, tokenizer_dir)
        report["inprocess"] += run_inprocess(spec, run.work, INPROCESS_TIMEOUT_S)["results"]
    if run.args.no_served:
        return
    served_runs = _served_runs(run.workloads, profile)
    try:
        with run.served_step(precision, served_runs) as on_window:
            report["served"] += serve_and_measure(repository, entry["name"], served_runs, profile.settings,
                                                  precision, on_window=on_window, server_options=run.server_options)
    except Exception as exc:  # a model the server cannot load is a finding too; the other precisions still run
        run.served_failed(precision, exc)


def _peer_steps(run: _Run, peer: Peer, python: str) -> None:
    """The same model served by a peer (bench/peers.py): its STS-B quality, and STS-B served at every concurrency."""
    # STS-B only: a peer truncates to the model's own max_seq_length, ours to --max-length, so the long synthetic
    # workloads would not be the same work
    runs = [(run.workloads[0], c) for c in run.profile.concurrency]
    try:
        with run.served_step(peer.name, runs) as on_window:
            done = measure_peer(peer, python, run.model_dir, run.model_dir.name, runs, run.profile.settings,
                                on_window, list(run.quality.sentences), run.profile.batch_size, run.device.is_gpu)
        quality = run.quality.score_vectors(done.vectors)
    except Exception as exc:  # a peer that cannot start or serves other vectors is reported; our figures stand
        run.served_failed(peer.name, exc)
        return
    run.report["served"] += done.results
    run.report["peers"][peer.name] = done.info
    run.report["quality"]["precisions"][peer.name] = quality


def _precisions(args: argparse.Namespace, profile: Any, device: Any) -> tuple[str, ...]:
    """The precisions to measure: asked for (validated against the device) or every one it supports."""
    if args.precisions:
        asked = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    else:
        asked = profile.precisions or device.supported
    unknown = [p for p in asked if p not in device.supported]
    if unknown or not asked:
        raise SystemExit(f"error: --precisions={args.precisions!r}: {', '.join(unknown) or 'none'} not available on "
                         f"{device.label}; allowed: {', '.join(device.supported)}")
    return asked

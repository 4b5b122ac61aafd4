"""Write the benchmark report: ``<stem>.json`` (the record), ``<stem>.md`` (tables) and ``<stem>.png`` (plot).

The JSON is the source of truth; the Markdown and the plot are rendered from it alone, so a report can be
re-rendered later (``render_markdown(json.load(...))``) without re-measuring.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from exporter.cpu import int8_expectation, int8_summary
from exporter.precisions import PRECISIONS

log = logging.getLogger("exporter.bench.report")

SCHEMA = "emb-provider-benchmark/1"
BASELINE = "baseline"
BASELINE_END = "baseline-end"  # the same baseline measured again after everything else: the load-drift check
DRIFT_LIMIT = 0.15
REQUIRED_KEYS = ("schema", "machine", "settings", "workloads", "inprocess", "served", "quality", "targets",
                 "precisions")


@contextmanager
def saved_figure(path: Path, *grid: int, layout_rect: tuple[float, float, float, float] | None = None,
                 **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*grid, **subplots)`` on the headless Agg backend: the figure and its axes for the block to
    draw on; on leaving it, laid out (``tight_layout(rect=layout_rect)``), saved to ``path`` at the reports' 110
    dpi, and closed (on an error too). Every benchmark plot goes through here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, **subplots)
    try:
        yield fig, axes
        fig.tight_layout(rect=layout_rect)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: ``–`` for a missing figure, floats with ``digits`` decimals and thousands separators."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def _speed_row(label: str, result: dict[str, Any]) -> list[Any]:
    tps, lat = result["texts_per_s"], result["latency_ms"]
    return [label, result["workload"], tps["median"], f"{tps['min']:,.1f}–{tps['max']:,.1f}",
            f"{100 * tps['spread']:.0f}%", result["tokens_per_s"]["median"], lat["p50"], lat["p95"], lat["p99"],
            _ratio(result.get("ratio_to_baseline"))]


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _cpu_label(machine: dict[str, Any]) -> str:
    """The CPU model with its int8 features and kind (they decide ONNX Runtime's int8 kernel, so every figure
    names them); reports written before they were recorded show the model alone."""
    if "int8_kind" not in machine:
        return machine["cpu"]
    return f"{machine['cpu']} ({int8_summary(machine['int8_features'], machine['int8_kind'])})"


def _machine_label(machine: dict[str, Any]) -> str:
    """What the figures ran on, for the plot title: the GPU when there is one (the host CPU is in the tables)."""
    gpus = machine.get("gpus") or []
    if gpus:
        return f"{gpus[0]['name']} (host: {machine['cpu']} x{machine['cores']})"
    return f"{_cpu_label(machine)} x{machine['cores']}"


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: machine, settings, targets, quality, in-process and served tables, the plot."""
    m, s = report["machine"], report["settings"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    out = [f"# Benchmark: {report['model']} on {m['host']} ({report['created']})", "",
           f"- Machine: {_cpu_label(m)}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
           f"Python {m['python']}",
           *[f"- GPU: {g['name']}, {g['memory_mib']:,} MiB, driver {g['driver']}" for g in m.get("gpus", [])],
           f"- Load average (1/5/15 min) at start {m['load_average_start']}, at end {m.get('load_average_end')}",
           *([f"- int8 kernel on this CPU: {int8_expectation(m['int8_kind'])}"] if "int8_kind" in m else []),
           f"- Libraries: {libs}",
           f"- Mode: {report['mode']}; device {s['device']}; max_length {s['max_length']}; {s['repeats']} windows "
           f"of {s['window_s']} s per figure after {s['warmup_requests']} warm-up requests; served concurrency "
           f"{s['concurrency']}",
           "- Workloads: " + "; ".join(f"{w['name']} {w['texts']} texts, batch {w['batch_size']}, "
                                       f"{w['mean_tokens']:.1f} tokens/text" for w in report["workloads"]),
           f"- Baseline: {report['baseline']}",
           *[f"- Peer {name}: {info['version']}, served as `{info['command']}`"
             for name, info in (report.get("peers") or {}).items()],
           f"- Reproduce: `{report['command']}` ({report['duration_s']:.0f} s)", ""]
    drift = report.get("baseline_drift") or {}
    if drift:
        out += ["- Baseline drift (measured again at the end, vs the start): "
                + ", ".join(f"{w} {100 * d:+.0f}%" for w, d in drift.items())
                + "; ratios use the mean of both", ""]
    if any(abs(d) > DRIFT_LIMIT for d in drift.values()):
        out += [f"**Warning: the baseline moved by more than {100 * DRIFT_LIMIT:.0f}% during the run: the machine's "
                "load changed, so the ratios below are not reliable. Re-run on a quiet machine.**", ""]
    if report["targets"]:
        out += ["## Targets", ""]
        out += _table(["target", "measured", "required", "result"],
                      [[t["name"], _ratio(t["value"]), f">= {t['threshold']:.2f}x",
                        "PASS" if t["passed"] else "FAIL"] for t in report["targets"]])
    out += ["## Precisions: the guide's promise next to what was measured", "",
            "Speed = texts/s on STS-B sentences relative to the baseline (in-process; served at the concurrency in "
            "the column). Size = artefact file(s) relative to the fp32 export.", ""]
    out += _table(["precision", "route", "size", "guide size", "speed in-process", "speed served",
                   "guide speed", "STS-B Spearman", "min cos", "mean cos", "guide loss"],
                  _summary_rows(report))
    if report["quality"]:
        q = report["quality"]
        out += ["## Quality (STS-B dev)", "", f"Reference (sentence-transformers fp32): Spearman "
                f"{fmt(q.get('reference_spearman'), 4)} over {q.get('pairs')} pairs ({q.get('sentences')} unique "
                "sentences); cosines are per sentence against the fp32 reference vector.", ""]
        out += _table(["precision", "Spearman", "delta", "min cos vs fp32", "p1 cos", "mean cos"],
                      [[p, fmt(r.get("spearman"), 4), fmt(r.get("delta"), 4), fmt(r.get("min_cosine"), 5),
                        fmt(r.get("p1_cosine"), 5), fmt(r.get("mean_cosine"), 5)]
                       for p, r in q["precisions"].items()])
    header = ["runner", "workload", "texts/s", "range", "spread", "tokens/s", "p50 ms", "p95 ms", "p99 ms",
              "vs baseline"]
    out += ["## In-process (one request = one batch)", ""]
    out += ["RSS = peak resident memory of the runner's own process; model = peak minus the process after importing "
            "its libraries (sentence-transformers/torch, or ONNX Runtime + tokenizer).", ""]
    out += _table(header + ["RSS MiB", "model MiB"],
                  [_speed_row(r["runner"], r) + [fmt(r.get("rss_mb")), fmt(r.get("model_rss_mb"))]
                   for r in report["inprocess"]])
    if report["served"]:
        out += ["## Served: Triton + client.EmbeddingClient, peers over their own HTTP API", "",
                "RSS = the server's process group (tritonserver + python stubs for every model it holds; a peer's "
                "server and its workers). GPU MiB = the card's memory in use at the peak, above what it held before "
                "that server started.", ""]
        out += _table(header + ["vs in-process", "server RSS MiB", "server GPU MiB"],
                      [_speed_row(f"{r['runner']} c={r['concurrency']}", r)
                       + [_ratio(r.get("ratio_to_inprocess")), fmt(r.get("server_rss_mb")),
                          fmt(r.get("server_gpu_mib"))]
                       for r in report["served"]])
    if report.get("timings"):
        out += ["## Where the time went", ""]
        out += _table(["step", "seconds"], [[k, v] for k, v in report["timings"].items()])
    for problem in report.get("errors", []):
        out.append(f"- **not measured**: {problem}")
    if report.get("plot"):
        out += ["", f"![throughput and p95 per precision]({report['plot']})"]
    return "\n".join(out).rstrip() + "\n"


def _find(results: list[dict[str, Any]], runner: str, workload: str, concurrency: int | None = None):
    for r in results:
        if r["runner"] == runner and r["workload"] == workload and concurrency in (None, r.get("concurrency")):
            return r
    return None


def _summary_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    headline = report["settings"]["headline_concurrency"]
    for precision, info in report["precisions"].items():
        inproc = _find(report["inprocess"], precision, "stsb")
        served = _find(report["served"], precision, "stsb", headline)
        quality = report["quality"].get("precisions", {}).get(precision, {}) if report["quality"] else {}
        size = info.get("size_ratio")
        # the precision guide's promise (memory, speed, loss), printed next to what was measured
        guide = PRECISIONS[precision].guide if precision in PRECISIONS else ("–", "–", "–")
        rows.append([precision, info.get("route", "–"), "–" if size is None else f"{100 * size:.1f}%", guide[0],
                     _ratio(inproc and inproc.get("ratio_to_baseline")),
                     f"{_ratio(served and served.get('ratio_to_baseline'))} (c={headline})", guide[1],
                     fmt(quality.get("spearman"), 4), fmt(quality.get("min_cosine"), 5),
                     fmt(quality.get("mean_cosine"), 5), guide[2]])
    return rows


def render_plot(report: dict[str, Any], path: Path) -> Path:
    """On the STS-B workload: texts/s and p95 latency per precision (in-process and served) vs the baseline,
    drawn as a dashed line; and, when anything was served, texts/s per served runner (ours and the peers') by
    concurrency."""
    import numpy as np

    precisions = list(report["precisions"])
    headline = report["settings"]["headline_concurrency"]
    base = _find(report["inprocess"], BASELINE, "stsb")
    base_end = _find(report["inprocess"], BASELINE_END, "stsb")
    series = {"in-process": [_find(report["inprocess"], p, "stsb") for p in precisions],
              f"served c={headline}": [_find(report["served"], p, "stsb", headline) for p in precisions]}
    served_runners = list(dict.fromkeys(r["runner"] for r in report["served"] if r["workload"] == "stsb"))
    panels = 3 if served_runners else 2
    levels: dict[str, float] = {}  # the baseline per metric: mean of its start and end figures
    with saved_figure(path, 1, panels, figsize=(5.5 * panels, 4.2), layout_rect=(0, 0.06, 1, 1)) as (fig, axes):
        x = np.arange(len(precisions))
        width = 0.38
        for ax, (metric, label) in zip(axes, [("texts_per_s", "texts/s (higher is better)"),
                                              ("latency_ms", "p95 latency per request, ms (lower is better)")]):
            def value(r: dict[str, Any] | None) -> float:
                if r is None:
                    return float("nan")
                return r[metric]["median"] if metric == "texts_per_s" else r[metric]["p95"]

            for i, (name, results) in enumerate(series.items()):
                ax.bar(x + (i - 0.5) * width, [value(r) for r in results], width, label=name)
            if base is not None:
                levels[metric] = np.nanmean([value(base), value(base_end)])
                ax.axhline(levels[metric], color="black", linestyle="--", label=f"baseline ({report['baseline']})")
            ax.set_xticks(x, precisions)
            ax.set_title(label, fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        if served_runners:
            ax = axes[2]
            for runner in served_runners:
                points = sorted((r["concurrency"], r["texts_per_s"]["median"]) for r in report["served"]
                                if r["runner"] == runner and r["workload"] == "stsb")
                ax.plot(*zip(*points), marker="o", label=runner if runner in precisions else f"{runner} (peer)")
            if "texts_per_s" in levels:
                ax.axhline(levels["texts_per_s"], color="black", linestyle="--")
            ax.set_xscale("log", base=2)
            ax.set_xticks(report["settings"]["concurrency"], [str(c) for c in report["settings"]["concurrency"]])
            ax.set_xlabel("concurrent clients")
            ax.set_title("served texts/s by concurrency", fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.suptitle(f"{report['model']}, STS-B dev sentences, batch {report['settings']['batch_size']}, "
                     f"{_machine_label(report['machine'])}", fontsize=10)
    return path


def check_report(report: dict[str, Any]) -> None:
    """Raise ValueError when ``report`` lacks a top-level key or a result lacks its figures."""
    missing = [k for k in REQUIRED_KEYS if k not in report]
    if missing or report["schema"] != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report: missing {missing} or schema {report.get('schema')!r}")
    for result in report["inprocess"] + report["served"]:
        for key in ("runner", "workload", "texts_per_s", "tokens_per_s", "latency_ms"):
            if key not in result:
                raise ValueError(f"result {result.get('runner')}/{result.get('workload')} lacks {key!r}")


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.json``, ``.png`` and ``.md`` under ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    report["plot"] = paths["png"].name
    check_report(report)
    render_plot(report, paths["png"])
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    log.info("report written: %s", ", ".join(str(p) for p in paths.values()))
    return paths

"""The GPU benchmark's report: the results JSON as written, a Markdown table per shape and workload (ratio to
the torch fp16 SDPA baseline), and a PNG of tokens/s per variant. Rendering reads only the JSON, so a report can
be redrawn on another machine (``python -m bench.gpu --report FILE.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import fmt, saved_figure  # the CPU benchmark's formatter and plot frame: both reports alike


def _rows(shape: dict[str, Any], workload: str, baseline: str) -> list[dict[str, Any]]:
    """One row per variant for ``workload``: speed, ratio to the baseline, memory, agreement with fp32."""
    base = shape["results"].get(baseline, {}).get("workloads", {}).get(workload, {}).get("tokens_per_s")
    rows = []
    for name, result in shape["results"].items():
        timing = result.get("workloads", {}).get(workload, {})
        speed = timing.get("tokens_per_s")
        rows.append({"variant": name, "tokens_per_s": speed, "ms_median": timing.get("ms_median"),
                     "ms_p10": timing.get("ms_p10"), "ms_p90": timing.get("ms_p90"),
                     "ratio": speed / base if speed and base else None, "gpu_mem_mib": result.get("gpu_mem_mib"),
                     "min_cos": result.get("min_cos"), "mean_cos": result.get("mean_cos"),
                     "error": timing.get("error") or result.get("error")})
    return rows


def workloads(report: dict[str, Any]) -> list[str]:
    return [f"{w['batch']}x{w['seq']}" for w in report["meta"]["workloads"]]


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    libs = ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items())
    lines = [f"# GPU benchmark, {meta.get('gpu') or meta['device']}, {meta['date']}", "",
             f"Driver {meta.get('driver', '–')}; Python {meta.get('python')}; {libs}.", "",
             f"Warm-up {meta['warmup']} calls, then up to {meta['repeats']} timed calls per variant and workload; "
             "ms per batch as median (p10–p90); tokens/s at the median; memory = NVML device memory the "
             "variant's process added (CUDA context included); cos = vectors vs torch fp32 on the exporter's "
             "verification sentences, padded batches.", ""] + [f"Note: {n}" for n in meta.get("notes", [])] + [""]
    for label, shape in report["shapes"].items():
        lines += [f"## {label}", "", f"Model dir: `{shape['model_dir']}`; artefact builds in this call: "
                  f"{shape.get('build_s')} s (artefacts an earlier `--build-only` call finished are reused; "
                  "build s below is each one's own, parallel builds).", "",
                  "| artefact | fused operators | optimizer's onnxruntime | size MB | build s | error |",
                  "|---|---|---|---|---|---|"]
        for kind, art in shape.get("artefacts", {}).items():
            fused = ", ".join(f"{k} {v}" for k, v in (art.get("fused") or {}).items()) or "–"
            lines.append(f"| {kind} | {fused} | {art.get('optimizer_onnxruntime', '–')} | {fmt(art.get('mb'))} | "
                         f"{fmt(art.get('build_s'))} | {art.get('error') or ''} |")
        for workload in workloads(report):
            lines += ["", f"### {label}, batch {workload.replace('x', ' x ')} tokens", "",
                      "| variant | what | k tokens/s | vs baseline | ms median (p10–p90) | GPU MiB | min cos | "
                      "mean cos |", "|---|---|---|---|---|---|---|---|"]
            for row in _rows(shape, workload, meta["baseline"]):
                what = meta["variants"].get(row["variant"], "")
                if row["tokens_per_s"] is None:
                    lines.append(f"| {row['variant']} | {what} | – | – | {row['error']} | | | |")
                    continue
                lines.append(
                    f"| {row['variant']} | {what} | {row['tokens_per_s'] / 1000:,.0f} | {row['ratio']:.2f}x | "
                    f"{row['ms_median']:.2f} ({row['ms_p10']:.2f}–{row['ms_p90']:.2f}) | "
                    f"{fmt(row['gpu_mem_mib'], 0)} | {fmt(row['min_cos'], 6)} | {fmt(row['mean_cos'], 6)} |")
    return "\n".join(lines) + "\n"


def render_plot(report: dict[str, Any], path: Path) -> Path:
    """Horizontal bars of tokens/s per variant, one panel per shape (first workload), baseline marked."""
    shapes = list(report["shapes"].items())
    workload = workloads(report)[0]
    with saved_figure(path, 1, len(shapes), figsize=(7 * len(shapes), 5.5), squeeze=False) as (fig, axes):
        for ax, (label, shape) in zip(axes[0], shapes):
            rows = [r for r in _rows(shape, workload, report["meta"]["baseline"]) if r["tokens_per_s"]]
            names = [r["variant"] for r in rows]
            speeds = [r["tokens_per_s"] / 1000 for r in rows]
            colors = ["tab:gray" if n.startswith("torch") else "tab:blue" for n in names]
            ax.barh(names, speeds, color=colors)
            base = next((r["tokens_per_s"] / 1000 for r in rows if r["variant"] == report["meta"]["baseline"]), None)
            if base:
                ax.axvline(base, color="tab:red", linestyle="--", label=f"{report['meta']['baseline']} (baseline)")
                ax.legend(loc="lower right")
            for y, (speed, row) in enumerate(zip(speeds, rows)):
                ax.text(speed, y, f" {speed:,.0f}" + (f" ({row['ratio']:.2f}x)" if row["ratio"] else ""),
                        va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("thousand tokens/s (higher is better)")
            ax.set_title(f"{label}, batch {workload}")
            ax.set_xlim(0, max(speeds or [1]) * 1.3)
        fig.suptitle(f"{report['meta'].get('gpu') or report['meta']['device']}, {report['meta']['date']}")
    return path


def summary(report: dict[str, Any]) -> str:
    """A short plain table for the end of the console output."""
    lines = []
    for label, shape in report["shapes"].items():
        for workload in workloads(report):
            for row in _rows(shape, workload, report["meta"]["baseline"]):
                speed = f"{row['tokens_per_s'] / 1000:9.0f}k {row['ratio']:.2f}x" if row["tokens_per_s"] else \
                    f"ERROR {str(row['error'])[:70]}"
                lines.append(f"{label:9} {workload:7} {row['variant']:26} {speed}  mem {fmt(row['gpu_mem_mib'], 0)}"
                             f"  cos {fmt(row['min_cos'], 4)}")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path, stem: str, json_too: bool = True) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    if json_too:
        paths["json"] = out / f"{stem}.json"
        paths["json"].write_text(json.dumps(report, indent=1, default=str))
    paths["md"].write_text(render_markdown(report))
    render_plot(report, paths["png"])
    return paths

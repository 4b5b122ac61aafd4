"""What ``EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION`` saves: device memory of a served encoder after a run of
mixed batch shapes, with the setting off and on, in one run on one card.

The serving runtimes (:class:`~exporter.triton.runtime.onnx_encoder.OnnxEncoder`,
:class:`~exporter.triton.runtime.torch_encoder.TorchEncoder`) are loaded exactly as the python-backend runner
loads them (``memory_optimization`` is the runner's switch), each in a fresh process so the figure is its own;
the same sequence of batch shapes is run through each and NVML's device memory in use is read after every batch
(neither ONNX Runtime's arena nor torch's cache give memory back, so the last reading is the peak).

    python -m bench.gpu_memory --artefact fp16=/path/to/fp16 --artefact int4=/path/to/int4 --out $OUT
    python -m bench.gpu_memory --report docs/benchmarks/gpu-2026-12-01-memory.json   # redraw Markdown + PNG
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_workers import isolated_arguments, random_feeds, run_isolated, worker_or_report
from bench.machine import nvml_used_mib
from bench.report import saved_figure

log = logging.getLogger("exporter.gpu_bench.memory")

# what a server sees over a day: short and long, small and large batches, in no particular order
SEQUENCE = ((1, 16), (8, 128), (32, 256), (64, 512), (16, 64), (128, 128), (4, 512), (64, 256), (256, 64),
            (32, 512))


def _encoder(path: str, device: str, memory_optimization: bool):
    """The served runtime's class over ``path`` (bench.gpu's artefacts have no report.json naming the runtime: an
    ONNX graph says it)."""
    from exporter.triton.config import runtime_class

    runtime = "onnx" if (Path(path) / "model.onnx").is_file() else "torch"
    return runtime_class(runtime)(path, device=device, memory_optimization=memory_optimization)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    base = nvml_used_mib()
    encoder = _encoder(spec["path"], spec["device"], spec["memory_optimization"])
    after_load = nvml_used_mib()
    steps = []
    for batch, seq in SEQUENCE:
        feeds = random_feeds(encoder.input_names, batch, seq, spec["vocab"], seed=batch * seq)
        encoder(feeds)
        used = nvml_used_mib()
        steps.append(None if used is None or base is None else round(used - base, 1))
    return {**spec, "load_mib": None if after_load is None or base is None else round(after_load - base, 1),
            "steps_mib": steps, "peak_mib": max((s for s in steps if s is not None), default=None)}


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    shapes = ", ".join(f"{b}x{t}" for b, t in meta["sequence"])
    lines = [f"# EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION, {meta.get('gpu') or 'cpu'}, {meta['date']}", "",
             f"Device memory (NVML, MiB, the process's CUDA context included) after loading and after each batch of "
             f"the sequence {shapes} (batch x tokens), setting off and on; each row is a fresh process.", "",
             "| artefact | setting | load MiB | peak MiB | peak on / off | error |", "|---|---|---|---|---|---|"]
    off: dict[str, float] = {}
    for row in report["rows"]:
        peak = row.get("peak_mib")
        if not row["memory_optimization"] and peak:
            off[row["label"]] = peak
        ratio = f"{peak / off[row['label']]:.2f}x" if row["memory_optimization"] and peak and off.get(
            row["label"]) else "–"
        lines.append(f"| {row['label']} | {'on' if row['memory_optimization'] else 'off'} | "
                     f"{row.get('load_mib') or '–'} | {peak or '–'} | {ratio} | {row.get('error') or ''} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, stem: str) -> None:
    """``<stem>.md`` and ``<stem>.png`` (memory after each batch, off vs on, per artefact) from the JSON."""
    (out / f"{stem}.md").write_text(render_markdown(report), encoding="utf-8")
    labels = list(dict.fromkeys(r["label"] for r in report["rows"] if r.get("steps_mib")))
    panels = max(1, len(labels))
    with saved_figure(out / f"{stem}.png", 1, panels, figsize=(4.2 * panels, 3.6), squeeze=False) as (fig, axes):
        ticks = [f"{b}x{t}" for b, t in report["meta"]["sequence"]]
        for ax, label in zip(axes[0], labels):
            for row in (r for r in report["rows"] if r["label"] == label and r.get("steps_mib")):
                ax.plot(range(len(ticks)), row["steps_mib"], marker="o",
                        label="optimization on" if row["memory_optimization"] else "off")
            ax.set_xticks(range(len(ticks)), ticks, rotation=60, fontsize=7)
            ax.set_title(label)
            ax.set_ylabel("device MiB")
            ax.legend()
        fig.suptitle(f"{report['meta'].get('gpu')}: device memory after each batch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artefact", action="append", default=[], help="LABEL=artefact dir (repeatable)")
    parser.add_argument("--out", help="directory for gpu-memory.json")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--vocab", type=int, default=30522)
    isolated_arguments(parser)
    args = parser.parse_args(argv)
    done = worker_or_report(args, worker, write_report)
    if done is not None:
        return done
    if not args.out or not args.artefact:
        parser.error("--out and at least one --artefact LABEL=DIR are required")
    from bench.gpu import gpu_facts, host_facts

    report: dict[str, Any] = {"meta": {**host_facts(), **gpu_facts(), "sequence": SEQUENCE}, "rows": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.artefact:
        label, _, path = item.partition("=")
        for optimized in (False, True):
            spec = {"label": label, "path": path, "device": args.device, "vocab": args.vocab,
                    "memory_optimization": optimized}
            row = run_isolated("bench.gpu_memory", spec, args.timeout_s, spec)
            report["rows"].append(row)
            log.info("%s optimization=%s: load %s MiB, peak %s MiB %s", label, optimized, row.get("load_mib"),
                     row.get("peak_mib"), row.get("error") or "")
        off, on = report["rows"][-2].get("peak_mib"), report["rows"][-1].get("peak_mib")
        if off and on:
            log.info("%s: peak with optimization = %.2f x without", label, on / off)
    (out / "gpu-memory.json").write_text(json.dumps(report, indent=1))
    write_report(report, out, "gpu-memory")
    print(render_markdown(report))
    return int(np.any([bool(r.get("error")) for r in report["rows"]]))


if __name__ == "__main__":
    sys.exit(main())

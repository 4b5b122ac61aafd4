"""The encoder's length-bucket token budget (``exporter build --max-batch-tokens``): throughput per budget.

``python -m bench.batch_tokens --out docs/benchmarks/batch-tokens-cpu-<date>`` exports the bundled model at fp32
(or takes ``--artefact DIR``, e.g. a torch-fp16 artefact with ``--device cuda:0``), then feeds dynamic batches as
the served encoder model receives them (64 texts: STS-B dev sentences with some long texts mixed in, each batch
padded to its longest text) through the served ``encoder_model.py``'s own ``_run`` (sorting, length buckets within
the budget, the artefact's runtime loader) at each budget, and writes tokens/s (real tokens, not padding) and the
largest runtime call (rows x width: what the attention buffers scale with) to ``<out>.json`` and ``<out>.png``.
``0`` is no bucketing: each batch in one call.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from bench import DEFAULT_STSB
from bench.machine import machine, today
from bench.report import saved_figure
from bench.workloads import load_tokenizer, synthetic_texts
from exporter.stsb import load_stsb

log = logging.getLogger("exporter.bench.batch_tokens")

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (0, 1024, 2048, 4096, 8192, 16384)


def served_encoder_model(artefact: Path, budget: int, device: str = "cpu") -> Any:
    """The served ``TritonPythonModel`` of encoder_model.py over ``artefact``, without Triton: only its batching
    code runs (``pb_utils`` is an empty stand-in module; ``_run`` never touches it)."""
    from exporter import read_report
    from exporter.triton.config import runtime_class

    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("bench_encoder_model",
                                                  ROOT / "exporter/triton/models/encoder_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    report = read_report(artefact)
    model.encoder = runtime_class(report["runtime"])(str(artefact), device=device)
    model.inputs = list(report["inputs"])
    model.max_batch_tokens = budget or 1 << 40
    return model


def batches(tokenizer_dir: Path, stsb: Path, max_length: int, count: int, long_per_batch: int,
            size: int = 64) -> list[dict]:
    """``count`` dynamic batches of ``size`` texts, ``long_per_batch`` of them long (max_length / 4, / 2 and
    max_length tokens, in turn) and the rest STS-B sentences, each batch tokenized and padded to its longest text as
    the tokenizer model does."""
    tokenizer = load_tokenizer(tokenizer_dir)
    sentences = list(dict.fromkeys(load_stsb(stsb).sentences))
    words = " ".join(sentences).split()
    lengths = (max_length // 4, max_length // 2, max_length)
    by_length = [synthetic_texts(tokenizer, words, n, count * long_per_batch) for n in lengths]
    long_texts = [by_length[i % len(lengths)][i] for i in range(count * long_per_batch)]
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding()
    out = []
    for i in range(count):
        short = sentences[i * (size - long_per_batch):(i + 1) * (size - long_per_batch)]
        texts = short + long_texts[i * long_per_batch:(i + 1) * long_per_batch]
        enc = tokenizer.encode_batch(texts)
        out.append({"input_ids": np.array([e.ids for e in enc], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                    "token_type_ids": np.array([e.type_ids for e in enc], np.int64)})
    return out


def measure(model: Any, feeds: list[dict], repeats: int) -> dict[str, Any]:
    tokens = sum(int(f["attention_mask"].sum()) for f in feeds)
    calls: list[tuple[int, int]] = []
    run = model.encoder

    def recording(batch):
        calls.append(batch[model.inputs[0]].shape)
        return run(batch)

    model.encoder = recording
    model._run({n: feeds[0][n] for n in model.inputs})  # warm-up
    rates = []
    for _ in range(repeats):
        calls.clear()
        start = time.perf_counter()
        for feed in feeds:
            model._run({n: feed[n] for n in model.inputs})
        rates.append(tokens / (time.perf_counter() - start))
    model.encoder = run
    return {"tokens_per_s_median": round(statistics.median(rates)), "tokens_per_s": [round(r) for r in rates],
            "calls_per_pass": len(calls), "largest_call_rows_x_width": max(r * w for r, w in calls),
            "padded_tokens_per_pass": sum(r * w for r, w in calls), "real_tokens_per_pass": tokens}


def plot(result: dict[str, Any], path: Path) -> None:
    rows = result["results"]
    labels = [str(r["budget"]) if r["budget"] else "none" for r in rows]
    with saved_figure(path, figsize=(7, 4)) as (fig, ax):
        ax.bar(labels, [r["tokens_per_s_median"] for r in rows], color="#4c72b0")
        ax.set_xlabel("--max-batch-tokens (none: each batch in one call)")
        ax.set_ylabel("real tokens / s (median)")
        where = result["gpu"] or f"{result['machine']['cpu']} ({result['machine']['cores']} cores)"
        ax.set_title(f"{result['model']} {result['precision']} ({result['route']}), {where}", fontsize=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artefact", type=Path, help="an exported artefact directory (default: export the "
                        "bundled model at fp32 into a temporary directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks" / f"batch-tokens-cpu-{today()}")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--device", default="cpu", help="where the runtime runs, e.g. cuda:0 (default cpu)")
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB, help="STS-B dev csv (tab-separated)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--long-per-batch", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        artefact = args.artefact or _export_bundled(Path(tmp))
        from exporter import read_report

        report = read_report(artefact)
        feeds = batches(artefact / "tokenizer", args.stsb, report["max_seq_length"], args.batches,
                        args.long_per_batch)
        results = []
        for budget in args.budgets:
            model = served_encoder_model(artefact, budget, args.device)
            row = {"budget": budget, **measure(model, feeds, args.repeats)}
            log.info("budget %s: %s", budget or "none", row)
            results.append(row)
    result = {"date": today(), "machine": machine(), "device": args.device, "gpu": _gpu_name(args.device),
              "model": report["model"], "precision": report["precision"], "route": report["route"],
              "max_seq_length": report["max_seq_length"], "batch_texts": 64, "long_per_batch": args.long_per_batch,
              "batches": args.batches, "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(results, indent=2))
    return 0


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def _export_bundled(tmp: Path) -> Path:
    from exporter.artefact import export_artefact
    from exporter.models import DEFAULT_MODEL, ModelSpec, resolve_model_dir
    from exporter.options import ExportOptions
    from exporter.plan import make_plans

    plan = make_plans([ModelSpec(DEFAULT_MODEL, "minilm")], device="cpu", precision="fp32").plans[0]
    return export_artefact(plan, resolve_model_dir(DEFAULT_MODEL), tmp, ExportOptions(verification_limit=16)).path


if __name__ == "__main__":
    sys.exit(main())

"""Large decoder shapes on the GPU: Qwen3-Embedding-8B and -4B architectures with random weights, per precision.

What it answers: how much GPU memory the weights take at load and at peak, and how fast a batch goes, for bf16,
the int4 route (bitsandbytes NF4 through the runtime's own loader: :func:`~exporter.triton.runtime.torch_encoder.
apply_weights`, int8 word-embedding table included) and the candidate GPU int8 layers (:mod:`bench.lowbit`).
Random weights: the speed and memory of a shape do not depend on its values (quality is measured on real small
models: docs/benchmarks/families-*.md). Each (shape, precision) runs in its own process, so memory figures are
its own. The model is built directly on the GPU in bf16 (8B in fp32 on a host would be 30 GB for nothing).

    python -m bench.gpu_large --out $OUT                       # on the GPU machine
    python -m bench.gpu_large --device cpu --shapes tiny --out /tmp/large   # smoke run
    python -m bench.gpu_large --report docs/benchmarks/gpu-2026-12-01-large.json   # redraw Markdown + PNG
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_workers import isolated_arguments, run_isolated, time_calls, worker_or_report
from bench.report import saved_figure

log = logging.getLogger("exporter.gpu_bench.large")

SHAPES: dict[str, dict[str, int]] = {
    # config.json of Qwen/Qwen3-Embedding-8B and -4B (the sizes that decide memory and speed)
    "qwen3-8b": {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 12288, "head_dim": 128, "vocab_size": 151665},
    "qwen3-4b": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 9728, "head_dim": 128, "vocab_size": 151665},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "head_dim": 16, "vocab_size": 1000},
}
PRECISIONS = ("bf16", "int4", "w8a8", "fp8")
MIB = 1024 * 1024


def build_encoder(shape: dict[str, int], device: str):
    """The sentence encoder the exporter serves for Qwen3 (last-token pooling, normalized), random bf16 weights."""
    import torch
    from transformers import AutoModel, Qwen3Config

    from exporter.triton.runtime.torch_encoder import SentenceEncoder

    torch.manual_seed(0)
    config = Qwen3Config(max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False, **shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            transformer = AutoModel.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    return SentenceEncoder(transformer, ["lasttoken"], [], True, ["input_ids", "attention_mask"]).eval()


def to_int4(encoder, device: str) -> dict[str, Any]:
    """The int4 route's tensors (plain NF4: activation-aware scales add one vector per layer, nothing to memory)
    loaded back by the serving runtime's loader, in place: the bf16 layers are freed as their NF4 copies go in."""
    import torch

    from exporter.precisions.int4 import Recipe, quantize
    from exporter.triton.runtime.torch_encoder import apply_weights

    tensors, _ = quantize(encoder, Recipe(alphas=(0.0,)))
    apply_weights(encoder, tensors, torch.float16, device)
    return {"recipe": Recipe(alphas=(0.0,)).describe(), "embeddings": "int8 rows (Int8Embedding)"}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    device, precision = spec["device"], spec["precision"]
    cuda = device.startswith("cuda")
    result: dict[str, Any] = {"shape": spec["shape"], "precision": precision}
    start = time.perf_counter()
    encoder = build_encoder(SHAPES[spec["shape"]], device)
    result["params_b"] = round(sum(p.numel() for p in encoder.parameters()) / 1e9, 3)
    if precision == "int4":
        result["details"] = to_int4(encoder, device)
    elif precision in ("w8a8", "fp8"):
        from bench.lowbit import swap_linears

        encoder = encoder.half()
        result["details"] = {"linears": swap_linears(encoder, precision)}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        result["load_mib"] = round(torch.cuda.memory_allocated() / MIB, 1)
        torch.cuda.reset_peak_memory_stats()
    result["load_s"] = round(time.perf_counter() - start, 1)
    batch, seq = spec["batch"], spec["seq"]
    rng = np.random.default_rng(7)
    ids = torch.as_tensor(rng.integers(100, SHAPES[spec["shape"]]["vocab_size"], size=(batch, seq)), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        vectors = encoder(ids, mask)
        times = time_calls(lambda: encoder(ids, mask), spec["warmup"], spec["repeats"], budget_s=float("inf"))
    median = float(np.median(times))
    result.update(batch=batch, seq=seq, ms_median=round(median * 1000, 2), tokens_per_s=round(batch * seq / median))
    if cuda:
        result["peak_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
    np.save(spec["vectors"], vectors.float().cpu().numpy())
    result["vectors"] = spec["vectors"]
    return result


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    libs = ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items())
    lines = [f"# Large decoder shapes, {meta.get('gpu') or 'cpu'}, {meta['date']}", "",
             f"Random weights of each shape, built on the device in bf16; batch {meta['batch']} x {meta['seq']} "
             "tokens (no padding), last-token pooling; median of the timed calls. Load = torch's allocated device "
             "memory once the model is in place; peak = torch's peak during the batches. cos = min cosine vs the "
             "bf16 vectors of the same random weights (a numerical check, not quality: random deep decoders "
             "amplify any rounding). Driver " + str(meta.get("driver", "–")) + f"; {libs}.", "",
             "| shape | precision | params (B) | load MiB | vs bf16 | peak MiB | k tokens/s | vs bf16 | min cos | "
             "error |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["shape"]: r for r in report["rows"] if r.get("precision") == "bf16" and not r.get("error")}
    for row in report["rows"]:
        ref = base.get(row["shape"], {})

        def ratio(key: str) -> str:
            return f"{row[key] / ref[key]:.1%}" if row.get(key) and ref.get(key) else "–"

        speed = row.get("tokens_per_s")
        lines.append(f"| {row['shape']} | {row['precision']} | {row.get('params_b', '–')} | {row.get('load_mib', '–')}"
                     f" | {ratio('load_mib')} | {row.get('peak_mib', '–')} | "
                     f"{'–' if speed is None else round(speed / 1000, 1)} | {ratio('tokens_per_s')} | "
                     f"{row.get('min_cos_vs_bf16', '–')} | {row.get('error') or ''} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, stem: str) -> None:
    """``<stem>.md`` and ``<stem>.png`` (load memory and tokens/s per shape and precision) from the JSON."""
    (out / f"{stem}.md").write_text(render_markdown(report), encoding="utf-8")
    rows = [r for r in report["rows"] if not r.get("error")]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    with saved_figure(out / f"{stem}.png", 1, 2, figsize=(11, 4)) as (fig, axes):
        width = 0.8 / max(1, len(precisions))
        for i, precision in enumerate(precisions):
            for ax, key, scale in ((axes[0], "load_mib", 1 / 1024), (axes[1], "tokens_per_s", 1 / 1000)):
                values = [next(((r.get(key) or 0) * scale for r in rows
                                if r["shape"] == s and r["precision"] == precision), 0) for s in shapes]
                ax.bar([j + i * width for j in range(len(shapes))], values, width, label=precision)
        for ax, title in ((axes[0], "GPU memory at load (GiB)"), (axes[1], "k tokens/s")):
            ax.set_xticks([j + width * (len(precisions) - 1) / 2 for j in range(len(shapes))], shapes)
            ax.set_title(title)
            ax.legend()
        fig.suptitle(f"{report['meta'].get('gpu')}: batch {report['meta']['batch']} x {report['meta']['seq']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_large", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="directory for gpu-large.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shapes", default="qwen3-8b,qwen3-4b")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    isolated_arguments(parser)
    args = parser.parse_args(argv)
    done = worker_or_report(args, worker, write_report)
    if done is not None:
        return done
    if not args.out:
        parser.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bench.gpu import gpu_facts, host_facts

    report: dict[str, Any] = {"meta": {**host_facts(), **gpu_facts(), "batch": args.batch, "seq": args.seq},
                              "rows": []}
    for shape in args.shapes.split(","):
        reference = None
        for precision in args.precisions.split(","):
            spec = {"shape": shape, "precision": precision, "device": args.device, "batch": args.batch,
                    "seq": args.seq, "warmup": args.warmup, "repeats": args.repeats,
                    "vectors": str(out / f"{shape}-{precision}.npy")}
            row = run_isolated("bench.gpu_large", spec, args.timeout_s, spec)
            if row.get("vectors") and not row.get("error"):
                got = np.load(row.pop("vectors"))
                if reference is None and precision == "bf16":
                    reference = got
                elif reference is not None:
                    cos = np.sum(reference * got, axis=1) / (np.linalg.norm(reference, axis=1) *
                                                             np.linalg.norm(got, axis=1))
                    row["min_cos_vs_bf16"] = round(float(cos.min()), 6)
            report["rows"].append(row)
            log.info("%s", row)
            (out / "gpu-large.json").write_text(json.dumps(report, indent=1))  # partial report survives a kill
    for f in out.glob("*.npy"):
        f.unlink()
    write_report(report, out, "gpu-large")
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

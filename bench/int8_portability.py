"""int8 on this CPU: the vectors an int8 artefact gives here, their speed, and how they compare across machines.

ONNX Runtime picks its int8 GEMM kernel by CPUID, so an int8 artefact is checked on each kind of CPU it may be
served on (docs/quality.md, "int8 on every CPU"). Two steps, run with the project's venv:

1. on each machine::

       python -m bench.int8_portability measure ARTEFACT_DIR --stsb sts-dev.csv --out cpuA.npz [--threads 2]
           [--u8u8] [--baseline MODEL_DIR]

   embeds the verification set one sentence at a time (as the gate's worst cases are found) and the STS-B dev
   sentences in length-sorted batches of 64, tokenization included, timing the latter; records the CPU and its
   int8 features. ``--u8u8`` first rewrites the int8 weights as uint8 (zero point 128), the other exact recipe,
   to time it on the same graph. ``--baseline`` also times sentence-transformers fp32 on the same sentences in the
   same process (a model dir whose weights may be random: the speed depends on the shapes only).
2. anywhere::

       python -m bench.int8_portability compare cpuA.npz cpuB.npz --model MODEL_DIR --stsb sts-dev.csv
           [--write docs/benchmarks/NAME]

   prints the cosine between the first run's vectors and each other's (min, mean, count below 0.9999) and each run's
   cosine to sentence-transformers fp32 and STS-B Spearman; ``--write`` also saves NAME.json and a NAME.png bar
   chart of each run's texts/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import saved_figure
from exporter.cpu import cpu_info
from exporter.stsb import load_stsb, spearman
from exporter.verification_set import verification_sentences
from exporter.verify import cosines, encode

BATCH = 64


def _as_u8u8(model_path: Path, out_dir: Path) -> Path:
    """A copy of the artefact's graph whose int8 GEMM weights are uint8 with zero point 128 (same integers)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    weights = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            continue
        tensor = weights[node.input[1]]
        shifted = (numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8)
        tensor.CopyFrom(numpy_helper.from_array(shifted, tensor.name))
        zero_point = f"{tensor.name}_zero_point"
        model.graph.initializer.append(numpy_helper.from_array(np.full(shifted.shape[1], 128, np.uint8),
                                                               zero_point))
        node.input.extend([""] * (6 - len(node.input)))
        node.input[5] = zero_point
    onnx.save(model, str(out_dir / "model.onnx"))
    return out_dir


def _st_baseline(model_dir: Path, sentences: list[str], threads: int) -> float:
    """sentence-transformers fp32 texts/s on ``sentences`` (batch 64)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(sentences[:BATCH], batch_size=BATCH)
    start = time.perf_counter()
    model.encode(sentences, batch_size=BATCH)
    return len(sentences) / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> int:
    from exporter.triton.runtime.onnx_encoder import OnnxEncoder

    artefact = Path(args.artefact)
    tokenizer = artefact / "tokenizer"
    if args.u8u8:
        with tempfile.TemporaryDirectory(prefix="u8u8-") as tmp:
            encoder = OnnxEncoder(str(_as_u8u8(artefact / "model.onnx", Path(tmp))), threads=args.threads)
    else:
        encoder = OnnxEncoder(str(artefact), threads=args.threads)
    verification = verification_sentences()
    single = np.concatenate([encode(encoder, tokenizer, [t], args.max_length) for t in verification])
    stsb = load_stsb(Path(args.stsb)).sentences
    encode(encoder, tokenizer, stsb[:BATCH], args.max_length, batch=BATCH)  # warm-up
    start = time.perf_counter()
    batched = encode(encoder, tokenizer, stsb, args.max_length, batch=BATCH)
    result = {"cpu": cpu_info().to_dict(), "threads": args.threads, "graph": "u8u8" if args.u8u8 else "as built",
              "int8_texts_per_s": round(len(stsb) / (time.perf_counter() - start), 1)}
    if args.baseline:
        result["st_fp32_texts_per_s"] = round(_st_baseline(Path(args.baseline), stsb, args.threads), 1)
        result["ratio"] = round(result["int8_texts_per_s"] / result["st_fp32_texts_per_s"], 2)
    np.savez(args.out, verification=single, stsb=batched, meta=json.dumps(result))
    print(json.dumps(result))
    return 0


def compare(args: argparse.Namespace) -> int:
    from exporter.verify import reference_embeddings

    runs = [np.load(path) for path in args.runs]
    pairs = load_stsb(Path(args.stsb))
    sets = {"verification": verification_sentences(), "stsb": pairs.sentences}
    report = {"machines": [json.loads(str(run["meta"])) for run in runs], "sets": {}}
    for name, sentences in sets.items():
        reference = reference_embeddings(Path(args.model), sentences, args.max_length)
        row = {"sentences": len(sentences)}
        for index, run in enumerate(runs):
            cos = cosines(run[name], reference)
            row[f"machine{index}_vs_fp32"] = {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 4),
                                              "p1": round(float(np.percentile(cos, 1)), 4)}
            if name == "stsb":
                row[f"machine{index}_spearman"] = round(spearman(pairs, dict(zip(sentences, run[name]))), 4)
        for index, run in enumerate(runs[1:], start=1):
            across = cosines(runs[0][name], run[name])
            row[f"machine{index}_vs_machine0"] = {"min": round(float(across.min()), 6),
                                                  "mean": round(float(across.mean()), 6),
                                                  "below_0.9999": int((across < 0.9999).sum())}
        report["sets"][name] = row
    print(json.dumps(report, indent=2))
    if args.write:
        Path(f"{args.write}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _plot(report["machines"], Path(f"{args.write}.png"))
    return 0


def _plot(machines: list[dict], path: Path) -> None:
    """Bars of texts/s per run: the int8 graph and, where measured, sentence-transformers fp32 beside it."""
    labels, int8, baseline = [], [], []
    for run in machines:
        labels.append(f"{run['cpu']['model']}\n{run['cpu']['int8_kind']}, {run['threads']} thr, {run['graph']}")
        int8.append(run["int8_texts_per_s"])
        baseline.append(run.get("st_fp32_texts_per_s", 0))
    x = np.arange(len(labels))
    with saved_figure(path, figsize=(2.2 * len(labels) + 2, 4.5)) as (fig, ax):
        ax.bar(x - 0.2, baseline, 0.4, label="sentence-transformers fp32")
        ax.bar(x + 0.2, int8, 0.4, label="int8 (ONNX Runtime)")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("texts/s (STS-B dev, batch 64)")
        ax.set_title("int8 in-process by CPU kind")
        ax.legend()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.int8_portability", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("measure", help="vectors and speed of an int8 artefact on this CPU")
    run.add_argument("artefact", help="artefact directory (model.onnx + tokenizer/)")
    run.add_argument("--stsb", required=True)
    run.add_argument("--out", required=True, help="write vectors and figures to this .npz")
    run.add_argument("--threads", type=int, default=os.cpu_count())
    run.add_argument("--u8u8", action="store_true", help="time the same graph with uint8 weights")
    run.add_argument("--baseline", help="sentence-transformers model dir to time fp32 on the same sentences")
    run.add_argument("--max-length", type=int, default=256)
    cmp = sub.add_parser("compare", help="cosines between machines and to sentence-transformers fp32")
    cmp.add_argument("runs", nargs="+")
    cmp.add_argument("--model", required=True, help="sentence-transformers model dir (the fp32 reference)")
    cmp.add_argument("--stsb", required=True)
    cmp.add_argument("--max-length", type=int, default=256)
    cmp.add_argument("--write", help="also write WRITE.json and WRITE.png")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return measure(args) if args.command == "measure" else compare(args)


if __name__ == "__main__":
    sys.exit(main())

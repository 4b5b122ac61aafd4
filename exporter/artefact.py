"""The public entry point: build, verify and publish one artefact directory per plan.

``export_artefact(plan, model_dir, out_root, options) -> Artefact`` runs the plan's build
(:mod:`exporter.precisions`), copies the tokenizer, runs the quality gate through the artefact's own runtime loader,
writes ``report.json`` and then publishes ``out_root/<plan.name>/`` atomically: everything is written to a temporary
directory beside it and renamed into place only when complete, so a failed or interrupted build never leaves a
half-written artefact and an existing previous artefact stays intact until the new one is ready. A SIGKILL leaves
that temporary directory behind; the next export of the same name removes it once its owning process is gone.
"""

from __future__ import annotations

import hashlib
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
from .errors import ExporterError, ExportError, GateError
from .export import OUTPUT_NAME, EncoderSpec, copy_tokenizer, read_encoder_spec, spec_summary
from .options import ExportOptions
from .plan import Plan
from .precisions import PRECISIONS, BuildJob, RouteResult
from .provenance import versions
from .records import FORMAT_VERSION, REPORT_FILE, Artefact
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
    builders = {p.route: p.build for p in PRECISIONS.values()}
    builder = builders.get(plan.route)
    if builder is None:
        raise ExportError(f"route {plan.route!r} has no builder; available: {', '.join(sorted(builders))}")
    started = time.perf_counter()
    spec = read_encoder_spec(Path(model_dir), plan.max_length)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_root / plan.name)  # what killed builds of this name left
    # <pid>.<random>: the pid lets a later export see that this build is gone; the suffix keeps two threads apart
    work = Path(tempfile.mkdtemp(prefix=f"{staging_name(out_root / plan.name)}.", dir=out_root))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the published dir must be readable by the server
    try:
        result = builder(BuildJob(plan, spec, options.trust_remote_code), work)
        with result.timed("tokenizer"):
            copy_tokenizer(spec, work / TOKENIZER_DIR)
        with result.timed("gate"):
            gate = _gate(plan, spec, work, options)
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


def _gate(plan: Plan, spec: EncoderSpec, work: Path, options: ExportOptions) -> GateResult:
    sentences = verification_sentences(options.verification_limit)
    reference = reference_embeddings(spec.model_dir, sentences, spec.max_seq_length, options.trust_remote_code)
    encoder = runtime_class(plan.runtime)(str(work))
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


def _file_records(root: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        records[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return records


def _report(plan: Plan, spec: EncoderSpec, work: Path, result: RouteResult, gate: GateResult) -> dict[str, Any]:
    files = _file_records(work)
    weight_bytes = sum(files[f]["bytes"] for f in result.files if f in files)
    return {
        "format_version": FORMAT_VERSION,
        "name": plan.name,
        "model": plan.model,
        "precision": plan.precision,
        "route": plan.route,
        "runtime": plan.runtime,
        "dim": spec.dim,
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

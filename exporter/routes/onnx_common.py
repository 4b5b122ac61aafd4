"""Steps the ONNX routes share: the fp32 export, and ONNX Runtime's transformer graph optimizer."""

from __future__ import annotations

import logging
from pathlib import Path

from ..export import export_onnx, load_encoder
from .base import BuildJob, RouteResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
# HF model_type -> ONNX Runtime transformers-optimizer model type whose fusions match its graph
OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert",
                   "distilbert": "bert", "electra": "bert", "mpnet": "bert", "ernie": "bert",
                   "nomic_bert": "bert", "bart": "bart", "t5": "t5", "mt5": "t5", "qwen3": "qwen3"}


def export_fp32(job: BuildJob, path: Path, result: RouteResult) -> Path:
    """Export the fp32 encoder graph to ``path``, recording time and the fp32 size every ratio is taken to."""
    with result.timed("load"):
        encoder = load_encoder(job.spec, trust_remote_code=job.trust_remote_code)
    with result.timed("export"):
        export_onnx(encoder, job.spec, path)
    result.fp32_bytes = path.stat().st_size
    return path


def optimizer_type(job: BuildJob) -> str | None:
    """The optimizer's model type for this architecture, or None when it has no fusions for it."""
    return OPTIMIZER_TYPES.get(str(job.spec.config.get("model_type", "")))


def optimize(job: BuildJob, source: Path, result: RouteResult):
    """ONNX Runtime's offline transformer optimizer (python fusions only, opt_level 0, so the graph stays
    portable between the CPU and CUDA providers). Returns the ``OnnxModel``; unknown architectures get the
    graph unfused, with a WARNING and a note in the report."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = optimizer_type(job)
    config = job.spec.config
    with result.timed("optimize"):
        if model_type is None:
            log.warning("ONNX Runtime's transformer optimizer has no fusions for model_type=%r; the graph is "
                        "left unfused (plain route)", config.get("model_type"))
            result.details["optimizer"] = f"none (model_type {config.get('model_type')!r} unknown to it)"
            model = optimize_model(str(source), model_type="bert", opt_level=0, optimization_options=_no_fusion())
        else:
            model = optimize_model(str(source), model_type=model_type, opt_level=0,
                                   num_heads=int(config.get("num_attention_heads") or 0),
                                   hidden_size=int(config.get("hidden_size") or 0))
            fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
            result.details["optimizer"] = {"model_type": model_type, "fused": fused}
            log.info("optimizer (%s) fused: %s", model_type, fused)
    return model


def _no_fusion():
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    for name, value in vars(options).items():
        if name.startswith("enable_") and isinstance(value, bool):
            setattr(options, name, False)
    return options

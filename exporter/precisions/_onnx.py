"""Steps the ONNX routes share: the fp32 export, and ONNX Runtime's transformer graph optimizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..errors import OnnxExportError
from ..export import export_onnx, load_encoder
from .base import BuildJob, RouteResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
# HF model_type -> ONNX Runtime transformers-optimizer model type whose fusions match its graph
OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert",
                   "distilbert": "bert", "electra": "bert", "mpnet": "bert", "ernie": "bert",
                   "nomic_bert": "bert", "bart": "bart"}
# Left out on purpose, so that their graphs stay unfused (WARNING): "qwen3", whose fusion writes RotaryEmbedding
# nodes with batch-1 position_ids (a decoder-with-past layout) that ONNX Runtime rejects for a batch > 1 here; and
# "t5"/"mt5", whose fusion writes RelativePositionBias, a contrib op with a CUDA kernel only.


def export_fp32(job: BuildJob, path: Path, result: RouteResult) -> Path:
    """Export the fp32 encoder graph to ``path``, recording time and the fp32 size every ratio is taken to."""
    with result.timed("load"):
        encoder = load_encoder(job.spec, trust_remote_code=job.trust_remote_code)
    with result.timed("export"):
        try:
            export_onnx(encoder, job.spec, path)
        except OSError:
            raise  # writing the graph failed (full disk, read-only): the build names the place, no torch fallback
        except Exception as exc:  # the tracer's own errors have no common base class
            model_type = job.spec.config.get("model_type")
            raise OnnxExportError(f"{job.spec.model_dir} (model_type {model_type!r}) cannot be exported to ONNX: "
                                  f"{type(exc).__name__}: {exc}") from exc
    result.fp32_bytes = path.stat().st_size
    return path


def build_optimized(job: BuildJob, work: Path, finish: Callable[[Any, RouteResult], None] | None = None) -> RouteResult:
    """The ONNX routes' common build: export fp32, run the transformer optimizer, let ``finish`` change the
    optimized model (e.g. cast it to float16), and write ``model.onnx``."""
    result = RouteResult(files=[MODEL_FILE], fp32_bytes=0)
    raw = export_fp32(job, work / "raw.onnx", result)
    model = optimize(job, raw, result)
    if finish is not None:
        finish(model, result)
    model.save_model_to_file(str(work / MODEL_FILE))
    raw.unlink()
    return result


def optimizer_type(job: BuildJob) -> str | None:
    """The optimizer's model type for this architecture, or None when it has no fusions for it."""
    return OPTIMIZER_TYPES.get(str(job.spec.config.get("model_type", "")))


def optimize(job: BuildJob, source: Path, result: RouteResult, *, keep_projections: bool = False):
    """ONNX Runtime's offline transformer optimizer (python fusions only, opt_level 0, so the graph stays
    portable between the CPU and CUDA providers). Returns the ``OnnxModel``; unknown architectures get the
    graph unfused, with a WARNING and a note in the report.

    ``keep_projections``: fuse attention into ``MultiHeadAttention`` (scores, softmax and context only) so the
    Q/K/V projections stay plain ``MatMul`` nodes a quantizer can rewrite, and leave the embedding lookup
    unfused so its table stays a ``Gather`` the quantizer can shrink."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = optimizer_type(job)
    config = job.spec.config
    with result.timed("optimize"):
        if model_type is None:
            log.warning("ONNX Runtime's transformer optimizer has no fusions usable for model_type=%r; the graph "
                        "is left unfused (same numbers, more nodes, slower)", config.get("model_type"))
            result.details["optimizer"] = f"none (no usable fusions for model_type {config.get('model_type')!r})"
            model = optimize_model(str(source), model_type="bert", opt_level=0, optimization_options=_no_fusion())
        else:
            options = FusionOptions(model_type)
            if keep_projections:
                options.use_multi_head_attention = True
                options.enable_embed_layer_norm = False
            model = optimize_model(str(source), model_type=model_type, opt_level=0,
                                   num_heads=int(config.get("num_attention_heads") or config.get("n_heads") or 0),
                                   hidden_size=int(config.get("hidden_size") or config.get("dim") or 0),
                                   optimization_options=options)
            fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
            result.details["optimizer"] = {"model_type": model_type, "fused": fused}
            log.info("optimizer (%s) fused: %s", model_type, fused)
            check_attention_fusion(model_type, fused, config, result)
    return model


def check_attention_fusion(model_type: str, fused: dict[str, int], config: dict, result: RouteResult) -> None:
    """Record how many layers got a fused attention node, and WARN when some did not.

    Without the fusion ONNX Runtime runs attention as separate MatMul/Softmax kernels, and the fp16 graph on a GPU
    falls behind torch fp16 instead of beating it (docs/benchmarks/gpu.md). Whether it fuses depends
    on the optimizer's version (onnxruntime 1.30 misses the mask pattern of a transformers 5.x export, 1.32 fuses
    it) and on eager attention at export time, so it is checked on every build rather than assumed."""
    layers = int(config.get("num_hidden_layers") or 0)
    if model_type != "bert" or layers < 1:
        return
    found = fused.get("Attention", 0) + fused.get("MultiHeadAttention", 0)
    result.details["optimizer"]["attention_fused_layers"] = f"{found}/{layers}"
    if found < layers:
        import onnxruntime
        import transformers

        log.warning("attention fused in %d of %d layers (optimizer of onnxruntime %s, transformers %s): on a GPU "
                    "this graph runs attention unfused, ~0.7-0.8x of torch fp16 (docs/benchmarks/gpu.md); "
                    "onnxruntime>=1.32 with eager attention at export fuses every layer",
                    found, layers, onnxruntime.__version__, transformers.__version__)


def _no_fusion():
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    for name, value in vars(options).items():
        if name.startswith("enable_") and isinstance(value, bool):
            setattr(options, name, False)
    return options

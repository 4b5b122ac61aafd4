"""The ``config.pbtxt`` of each generated Triton model, built as ``inference.ModelConfig`` protobuf messages.

Per repository name ``<name>`` three models are generated (the public contract is the ensemble's tensors):

- ``<name>``: ensemble, ``TEXT`` (TYPE_STRING, dims [1]) -> ``EMBEDDING`` (TYPE_FP32, dims [dim]); optional inputs
  ``PROMPT_NAME`` / ``PROMPT`` (TYPE_STRING, dims [1], one per text) and a second output ``TOKEN_COUNT`` (TYPE_INT64,
  dims [1]): callers that send TEXT alone and ask for EMBEDDING alone see the original contract;
- ``<name>_tokenizer``: python backend running Hugging Face ``tokenizers`` (CPU); it applies the prompts;
- ``<name>_encoder``: ONNX routes use the NGC image's native ``onnxruntime_onnx`` platform; torch routes use a
  python-backend model that loads the safetensors artefact.

The published configs are NGC-native. :func:`python_runner_config` derives the python-backend variant of a native
ONNX encoder, which the local launcher needs because the pip ``tritonserver`` binary has only the python backend.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..plan import Plan
from .schema import model_config_pb2

TEXT_INPUT = "TEXT"
EMBEDDING_OUTPUT = "EMBEDDING"
PROMPT_INPUTS = ("PROMPT_NAME", "PROMPT")  # optional; at most one per request
TOKEN_COUNT_OUTPUT = "TOKEN_COUNT"
ENCODER_OUTPUT = "sentence_embedding"
TOKENIZER_DIR = "tokenizer"
WARMUP_SEQ_LEN = 16
CONTAINER_TRT_CACHE = "/trt-cache"  # the native backend's TensorRT engine cache, a volume in docker-compose.yml
# The python-backend encoder's length-bucket budget (padded tokens per runtime call) when --max-batch-tokens is not
# given. The budget caps a call's size, and a larger one lets short texts join long ones' calls: more padding.
# CPU: 2048, the fastest of 1024-16384 on a 2-core EPYC (docs/benchmarks/batch-tokens-cpu-2026-12-01.json: 1.7x
# the old fixed 4096 on mixed-length batches, padding 1.27x the real tokens instead of 2.4x). GPU: 8192, not yet
# measured as a budget on a GPU: half the 64 x 256 batch that docs/benchmarks/gpu.md ran near the card's fp16
# throughput, so per-call overhead stays small while mixed batches are not padded to their longest text.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "gpu": 8192}

# The python-backend encoder model loads its runtime class from a file copied next to it: runtime -> (file, class).
# A precision names its runtime (exporter.precisions); this says which loader serves that runtime.
RUNTIME_LOADERS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx_encoder.py", "OnnxEncoder"),
    "torch": ("torch_encoder.py", "TorchEncoder"),
}


def runtime_class(runtime: str) -> Any:
    """The loader class of ``runtime`` (:data:`RUNTIME_LOADERS`), imported from ``exporter/triton/runtime/``: the class
    the python-backend encoder model runs, so the gate, eval and the benchmarks run what is served. Only that
    runtime's libraries are imported (an ONNX artefact does not pull in torch)."""
    loader, name = RUNTIME_LOADERS[runtime]
    return getattr(importlib.import_module(f".runtime.{Path(loader).stem}", __package__), name)


@dataclass(frozen=True)
class ServingOptions:
    """Knobs of the generated configs; defaults suit a CPU box and a single GPU alike."""

    max_batch_size: int = 64
    queue_delay_us: int = 500
    tensorrt: bool = False
    max_texts_per_request: int = 64
    max_text_bytes: int = 65536
    encoder_threads: int = 0  # ORT intra-op threads; 0 = let the runtime pick (the number of cores)
    max_batch_tokens: int = 0  # padded tokens per encoder call (length buckets); 0 = DEFAULT_BATCH_TOKENS per target

    def __post_init__(self) -> None:
        _check_range("--max-batch-size", self.max_batch_size, 1, 4096)
        _check_range("--queue-delay-us", self.queue_delay_us, 0, 10_000_000)
        _check_range("--max-texts-per-request", self.max_texts_per_request, 1, self.max_batch_size,
                     hint="(at most --max-batch-size)")
        _check_range("--max-text-bytes", self.max_text_bytes, 1, 64 * 1024 * 1024)
        _check_range("--encoder-threads", self.encoder_threads, 0, 1024)
        _check_range("--max-batch-tokens", self.max_batch_tokens, 0, 1 << 24, hint="(0: the target's default)")

    def batch_tokens(self, gpu: bool) -> int:
        """The length-bucket token budget for a CPU or GPU encoder: the option, else the target's default."""
        return self.max_batch_tokens or DEFAULT_BATCH_TOKENS["gpu" if gpu else "cpu"]


def _check_range(flag: str, value: int, low: int, high: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{flag}={value!r} is out of range; allowed: an integer from {low} to {high} {hint}".rstrip())


@dataclass(frozen=True)
class ArtefactInfo:
    """What the configs need to know about one artefact (read from its report.json), with the plan's serving
    overrides (models file ``prompts`` / ``truncate_dim``) applied by :meth:`with_plan`."""

    dim: int
    max_seq_length: int
    inputs: tuple[str, ...]
    runtime: str
    route: str = ""  # the route built (differs from the plan's after a torch fallback); "" in older reports
    normalized: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None
    graph_sha256: str = ""  # model.onnx's, from report.json's files ("" for torch routes and older reports)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> "ArtefactInfo":
        missing = [k for k in ("dim", "max_seq_length", "inputs", "runtime", "output") if k not in report]
        if missing:
            raise ConfigError(f"artefact report.json lacks {missing}; re-export the artefact")
        if report["output"] != ENCODER_OUTPUT:
            raise ConfigError(f"artefact output {report['output']!r} is not {ENCODER_OUTPUT!r}")
        if report["runtime"] not in RUNTIME_LOADERS:
            raise ConfigError(f"artefact runtime {report['runtime']!r} is not one of {sorted(RUNTIME_LOADERS)}")
        encoder = report.get("encoder") or {}
        return cls(int(report["dim"]), int(report["max_seq_length"]), tuple(report["inputs"]), report["runtime"],
                   str(report.get("route") or ""), normalized=bool(encoder.get("normalize", True)),
                   prompts=dict(encoder.get("prompts") or {}), default_prompt_name=encoder.get("default_prompt_name"),
                   graph_sha256=str(((report.get("files") or {}).get("model.onnx") or {}).get("sha256") or ""))

    def with_plan(self, plan: Plan) -> "ArtefactInfo":
        """The plan's overrides on top of the model's own settings: its ``prompts`` replace or add names (as
        ``SentenceTransformer(prompts=...)`` does), its ``truncate_dim`` becomes the default output width."""
        prompts = {**self.prompts, **(plan.prompts or {})}
        truncate_dim = plan.truncate_dim
        if truncate_dim is not None and not 1 <= truncate_dim <= self.dim:
            raise ConfigError(f"{plan.name}: truncate_dim={truncate_dim} is out of range; allowed: an integer from 1 "
                              f"to the model's dimension {self.dim}")
        return replace(self, prompts=prompts, truncate_dim=truncate_dim)


def _pb():
    return model_config_pb2()


def _set_parameters(config, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _token_tensors(container, names: tuple[str, ...], *, ragged: bool = False) -> None:
    for name in names:
        tensor = container.add(name=name, data_type=_pb().TYPE_INT64, dims=[-1])
        if ragged:
            tensor.allow_ragged_batch = True


def _instance_group(config, gpu: bool, count: int) -> None:
    kind = _pb().ModelInstanceGroup.KIND_GPU if gpu else _pb().ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=count)


def _public_parameters(plan: Plan, spec: ArtefactInfo) -> dict[str, Any]:
    """Recorded on the ensemble and the encoder so that clients can read them from the model config."""
    return {"precision": plan.precision, "route": spec.route or plan.route, "dim": spec.dim, "model": plan.model,
            "max_seq_length": spec.max_seq_length, "target_device": plan.device}


def _prompt_parameters(spec: ArtefactInfo) -> dict[str, Any]:
    """The model's prompts (JSON) and default prompt name: the tokenizer applies them, clients list them."""
    params: dict[str, Any] = {"prompts": json.dumps(spec.prompts, ensure_ascii=False, sort_keys=True)}
    if spec.default_prompt_name:
        params["default_prompt_name"] = spec.default_prompt_name
    return params


def _output_parameters(spec: ArtefactInfo) -> dict[str, Any]:
    """What the output is: normalized or not, and the width clients truncate to by default (Matryoshka)."""
    params: dict[str, Any] = {"normalized": "true" if spec.normalized else "false"}
    if spec.truncate_dim is not None:
        params["truncate_dim"] = spec.truncate_dim
    return params


def _optional_prompt_inputs(container) -> None:
    for name in PROMPT_INPUTS:
        container.add(name=name, data_type=_pb().TYPE_STRING, dims=[1], optional=True)


def ensemble_config(plan: Plan, spec: ArtefactInfo, options: ServingOptions):
    """The public entry point: TEXT (and optionally PROMPT_NAME or PROMPT) in, EMBEDDING and TOKEN_COUNT out,
    tokenizer then encoder."""
    pb = _pb()
    config = pb.ModelConfig(name=plan.name, platform="ensemble", max_batch_size=options.max_batch_size)
    config.input.add(name=TEXT_INPUT, data_type=pb.TYPE_STRING, dims=[1])
    _optional_prompt_inputs(config.input)
    config.output.add(name=EMBEDDING_OUTPUT, data_type=pb.TYPE_FP32, dims=[spec.dim])
    config.output.add(name=TOKEN_COUNT_OUTPUT, data_type=pb.TYPE_INT64, dims=[1])
    tokenize = config.ensemble_scheduling.step.add(model_name=tokenizer_name(plan.name), model_version=-1)
    for tensor in (TEXT_INPUT, *PROMPT_INPUTS):
        tokenize.input_map[tensor] = tensor
    tokenize.output_map[TOKEN_COUNT_OUTPUT] = TOKEN_COUNT_OUTPUT
    encode = config.ensemble_scheduling.step.add(model_name=encoder_name(plan.name), model_version=-1)
    for tensor in spec.inputs:
        tokenize.output_map[tensor] = tensor
        encode.input_map[tensor] = tensor
    encode.output_map[ENCODER_OUTPUT] = EMBEDDING_OUTPUT
    _set_parameters(config, {**_public_parameters(plan, spec), **_output_parameters(spec), **_prompt_parameters(spec)})
    return config


def tokenizer_config(plan: Plan, spec: ArtefactInfo, options: ServingOptions):
    """Python-backend tokenizer; limits live in its parameters and are enforced per request."""
    pb = _pb()
    config = pb.ModelConfig(name=tokenizer_name(plan.name), backend="python", max_batch_size=options.max_batch_size)
    config.input.add(name=TEXT_INPUT, data_type=pb.TYPE_STRING, dims=[1])
    _optional_prompt_inputs(config.input)
    _token_tensors(config.output, spec.inputs)
    config.output.add(name=TOKEN_COUNT_OUTPUT, data_type=pb.TYPE_INT64, dims=[1])
    config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    _instance_group(config, gpu=False, count=1)
    _set_parameters(config, {"max_seq_length": spec.max_seq_length, "tokenizer_dir": TOKENIZER_DIR,
                             "max_texts_per_request": options.max_texts_per_request,
                             "max_text_bytes": options.max_text_bytes, **_prompt_parameters(spec)})
    warmup = config.model_warmup.add(name="empty_text", batch_size=1)
    warmup.inputs[TEXT_INPUT].CopyFrom(pb.ModelWarmup.Input(data_type=pb.TYPE_STRING, dims=[1], zero_data=True))
    return config


def encoder_config(plan: Plan, spec: ArtefactInfo, options: ServingOptions, *, gpu: bool):
    """The encoder: native ONNX Runtime for onnx routes, the python-backend runner for torch routes."""
    pb = _pb()
    config = pb.ModelConfig(name=encoder_name(plan.name), max_batch_size=options.max_batch_size)
    if spec.runtime == "onnx":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
        _set_parameters(config, _ort_parameters(plan, options, gpu))
        if options.tensorrt:
            check_options(plan, options)
            trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            trt.parameters["precision_mode"] = "FP16"
            trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
            trt.parameters["trt_engine_cache_enable"] = "1"
            # docker-compose.yml mounts a named volume there, so a restarted container loads its engines; keyed by
            # the graph's bytes, since TensorRT's cache key does not cover the weights: a rebuild gets new engines
            trt.parameters["trt_engine_cache_path"] = f"{CONTAINER_TRT_CACHE}/{plan.name}/{engine_key(spec)}"
    else:
        config.backend = "python"
        _set_parameters(config, _runner_parameters(spec.runtime, options))
    # read by the python-backend runner (torch routes, and ONNX ones in the local view); the native backend ignores them
    _set_parameters(config, {"max_batch_tokens": options.batch_tokens(gpu),
                             "memory_optimization": "true" if gpu and plan.memory.enabled else "false"})
    _token_tensors(config.input, spec.inputs, ragged=spec.runtime != "onnx")
    config.output.add(name=ENCODER_OUTPUT, data_type=pb.TYPE_FP32, dims=[spec.dim])
    config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    _instance_group(config, gpu=gpu, count=plan.memory.instance_count)
    _set_parameters(config, _public_parameters(plan, spec))
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    for tensor in spec.inputs:
        warmup.inputs[tensor].CopyFrom(
            pb.ModelWarmup.Input(data_type=pb.TYPE_INT64, dims=[WARMUP_SEQ_LEN], zero_data=True))
    return config


def check_options(plan: Plan, options: ServingOptions) -> None:
    """Options that cannot apply to this plan's target; called before any export work starts."""
    if options.tensorrt and plan.device in ("cpu", "rocm"):
        raise ConfigError(f"--tensorrt needs an NVIDIA GPU target; {plan.name} targets {plan.device} "
                          "(pass --device cuda or drop --tensorrt)")


def _ort_parameters(plan: Plan, options: ServingOptions, gpu: bool) -> dict[str, Any]:
    """onnxruntime backend parameters: threads, and the plan's memory settings on GPU targets."""
    params: dict[str, Any] = {"intra_op_thread_count": options.encoder_threads}
    if gpu:
        strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}[plan.memory.ort_arena_extend_strategy]
        params["arena_extend_strategy"] = strategy
        if plan.memory.ort_gpu_mem_limit_bytes:
            params["gpu_mem_limit"] = plan.memory.ort_gpu_mem_limit_bytes
    return params


def _runner_parameters(runtime: str, options: ServingOptions) -> dict[str, Any]:
    loader, cls = RUNTIME_LOADERS[runtime]
    return {"runtime_loader": loader, "runtime_class": cls, "threads": options.encoder_threads}


def engine_key(spec: ArtefactInfo) -> str:
    """The TensorRT engine cache's directory for one build of a graph: its sha256, shortened."""
    return spec.graph_sha256[:16] or "unversioned"


def local_tensorrt_cache(model: str, key: str) -> str:
    """Where the local runner keeps the TensorRT engines of ``model``'s graph ``key`` (:func:`engine_key`): outside
    the served copy (``exporter serve`` works in a temporary directory), so a restart loads them instead of building
    them again: ``$XDG_CACHE_HOME/emb-provider/tensorrt/<model>/<key>`` (``~/.cache`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "emb-provider", "tensorrt", model, key)


def python_runner_config(native, runtime: str = "onnx", threads: int = 0):
    """A python-backend copy of a native ONNX encoder config (same tensors, batching, warm-up and parameters).

    Inputs become ragged-batchable: the runner pads the requests of a dynamic batch to one length itself, which
    the native backend cannot do. A TensorRT accelerator becomes the runner's ``tensorrt_cache`` parameter
    (:func:`local_tensorrt_cache`): the runner puts ONNX Runtime's TensorRT provider first, as the native
    backend would.
    """
    accelerators = native.optimization.execution_accelerators.gpu_execution_accelerator
    tensorrt = [a for a in accelerators if a.name == "tensorrt"]
    config = _pb().ModelConfig()
    config.CopyFrom(native)
    config.ClearField("platform")
    config.ClearField("default_model_filename")
    config.optimization.ClearField("execution_accelerators")
    if not config.optimization.ListFields():
        config.ClearField("optimization")
    config.backend = "python"
    for tensor in config.input:
        tensor.allow_ragged_batch = True
    _set_parameters(config, _runner_parameters(runtime, ServingOptions(encoder_threads=threads)))
    if tensorrt:
        key = os.path.basename(tensorrt[0].parameters["trt_engine_cache_path"])  # the native config's engine key
        _set_parameters(config, {"tensorrt_cache": local_tensorrt_cache(native.name, key)})
    return config


def tokenizer_name(name: str) -> str:
    return f"{name}_tokenizer"


def encoder_name(name: str) -> str:
    return f"{name}_encoder"

"""One measurement of the GPU benchmark, run in its own process (``python -m bench.gpu --worker SPEC``).

Each variant gets a fresh process so that its GPU memory figure is its own (ONNX Runtime's arena and torch's
caching allocator never give memory back inside a process) and a crash or a CUDA error in one variant cannot
take the others down. The worker imports only the runtime it measures, times fixed-shape batches of random token
ids (warm-up excluded, device synchronised after every call), then embeds the quality sentences once with
padding so the orchestrator can compare every variant's vectors with torch fp32.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.machine import MIB, nvml_used_mib

log = logging.getLogger("exporter.gpu_bench.worker")

Feeds = dict[str, np.ndarray]
RESULT_PREFIX = "GPU_BENCH_RESULT "


def _sync() -> None:
    """Wait for every stream on the device, so host timers see finished work (no-op without CUDA torch)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def random_feeds(names: list[str], batch: int, seq: int, vocab: int, seed: int) -> Feeds:
    """Full-length rows of random token ids (no padding: every variant sees exactly batch x seq tokens)."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, seq), dtype=np.int64),
             "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
    return {name: feeds[name] for name in names}


def time_calls(run: Callable[[], Any], warmup: int, repeats: int, budget_s: float) -> list[float]:
    """Seconds per call after ``warmup`` untimed calls; stops early once ``budget_s`` is spent (slow variants)."""
    for _ in range(warmup):
        run()
    _sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (spent < budget_s or len(times) < 3):
        start = time.perf_counter()
        run()
        _sync()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return times


def stats(times: list[float], tokens: int) -> dict[str, Any]:
    """Median and spread of per-batch milliseconds, and tokens/s at the median."""
    ms = np.asarray(times) * 1000.0
    median = float(np.median(ms))
    return {"ms_median": median, "ms_p10": float(np.percentile(ms, 10)), "ms_p90": float(np.percentile(ms, 90)),
            "ms_min": float(ms.min()), "ms_max": float(ms.max()), "repeats": int(ms.size),
            "tokens_per_s": tokens / (median / 1000.0)}


# --- torch variants -------------------------------------------------------------------------------------------

def _torch_encoder(spec: dict[str, Any]):
    """The module to time: the exporter's sentence encoder (AutoModel + pooling/normalize) in the asked dtype
    (the unconverted model), or a torch-route artefact rebuilt by its own runtime loader."""
    import torch

    if spec["runtime"] == "artefact":
        from exporter.triton.runtime.torch_encoder import load_encoder as load_artefact

        module, meta = load_artefact(spec["path"], spec["device"])
        return module, list(meta["inputs"])
    from exporter.export import load_encoder, read_encoder_spec

    encoder_spec = read_encoder_spec(Path(spec["model_dir"]), max_length=spec["max_length"])
    encoder = load_encoder(encoder_spec, attn_implementation="sdpa")
    dtype, *levers = spec["dtype"].split("+")  # e.g. "float16+w8a8+compile"
    encoder = encoder.to(spec["device"], getattr(torch, dtype)).eval()
    for lever in levers:
        if lever == "compile":
            encoder = torch.compile(encoder)
        else:
            from bench.lowbit import swap_linears

            log.info("%s: %d linear layers -> %s", spec["variant"], swap_linears(encoder, lever), lever)
    return encoder, list(encoder_spec.inputs)


class TorchVariant:
    """Eager torch: the unconverted model (fp32/fp16, SDPA attention) or a torch-route artefact (bf16, NF4)."""

    def __init__(self, spec: dict[str, Any]):
        import torch

        self.torch = torch
        self.device = spec["device"]
        self.encoder, self.inputs = _torch_encoder(spec)
        self.providers = [f"torch {torch.__version__} {self.device}"]

    def _forward(self, args: list[Any]) -> Any:
        with self.torch.inference_mode():
            return self.encoder(*args)

    def _tensors(self, feeds: Feeds) -> list[Any]:
        return [self.torch.from_numpy(feeds[name]).to(self.device) for name in self.inputs]

    def prepare(self, feeds: Feeds) -> Callable[[], Any]:
        """Inputs moved to the device once, outside the timed call (as IO binding does for ORT)."""
        args = self._tensors(feeds)
        return lambda: self._forward(args)

    def embed(self, feeds: Feeds) -> np.ndarray:
        return self._forward(self._tensors(feeds)).float().cpu().numpy()


class OrtVariant:
    """An ONNX graph on ONNX Runtime: CUDA execution provider on a GPU (CPU provider for what it lacks), with
    numpy I/O (copies in and out on every call), IO binding (inputs and output live on the device) or IO binding
    plus a captured CUDA graph (``enable_cuda_graph``: one replay per call, fixed shapes)."""

    def __init__(self, spec: dict[str, Any]):
        import onnxruntime as ort

        self.io = spec["io"]
        self.on_gpu = spec["device"].startswith("cuda")
        if self.io == "cudagraph" and not self.on_gpu:
            raise RuntimeError("CUDA graphs need the CUDA execution provider (device is cpu)")
        options = {"device_id": 0}
        if self.io == "cudagraph":
            options["enable_cuda_graph"] = "1"
        providers: list[Any] = [("CUDAExecutionProvider", options), "CPUExecutionProvider"] if self.on_gpu \
            else ["CPUExecutionProvider"]
        self.ort = ort
        self.session = ort.InferenceSession(os.path.join(spec["path"], "model.onnx"), ort.SessionOptions(),
                                            providers=providers)
        self.providers = self.session.get_providers()
        if self.on_gpu and "CUDAExecutionProvider" not in self.providers:
            raise RuntimeError(f"CUDAExecutionProvider unavailable (onnxruntime has {ort.get_available_providers()})")
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0]

    def prepare(self, feeds: Feeds) -> Callable[[], Any]:
        if self.io == "numpy":
            return lambda: self.session.run(None, feeds)
        where = "cuda" if self.on_gpu else "cpu"
        binding = self.session.io_binding()
        for name in self.inputs:
            binding.bind_ortvalue_input(name, self.ort.OrtValue.ortvalue_from_numpy(feeds[name], where, 0))
        out_dtype = np.float16 if self.output.type == "tensor(float16)" else np.float32
        batch = feeds[self.inputs[0]].shape[0]
        out = self.ort.OrtValue.ortvalue_from_shape_and_type([batch, int(self.output.shape[1])], out_dtype, where, 0)
        binding.bind_ortvalue_output(self.output.name, out)
        self._keep = (binding, out)  # the bound buffers must outlive every replay
        return lambda: self.session.run_with_iobinding(binding)

    def embed(self, feeds: Feeds) -> np.ndarray:
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


def build_variant(spec: dict[str, Any]) -> TorchVariant | OrtVariant:
    return OrtVariant(spec) if spec["runtime"] == "ort" else TorchVariant(spec)


def _quality(variant: TorchVariant | OrtVariant, npz_path: str) -> np.ndarray:
    """Vectors for the padded quality batches saved by the orchestrator (``b<i>.<input name>`` arrays)."""
    data = np.load(npz_path)
    count = len({key.split(".")[0] for key in data.files})
    return np.concatenate([variant.embed({name: data[f"b{i}.{name}"] for name in variant.inputs})
                           for i in range(count)])


def _measure(spec: dict[str, Any], result: dict[str, Any], base_mib: float | None) -> None:
    variant = build_variant(spec)
    result["providers"] = variant.providers
    for workload in spec["workloads"]:
        name = f"{workload['batch']}x{workload['seq']}"
        try:
            if spec.get("io") == "cudagraph" and result["workloads"]:
                variant = build_variant(spec)  # a captured graph is bound to one shape: a session per shape
            feeds = random_feeds(variant.inputs, workload["batch"], workload["seq"], spec["vocab"], seed=7)
            times = time_calls(variant.prepare(feeds), spec["warmup"], spec["repeats"], spec["budget_s"])
            result["workloads"][name] = stats(times, workload["batch"] * workload["seq"])
            log.info("%s %s: %.2f ms", spec["variant"], name, result["workloads"][name]["ms_median"])
        except Exception as exc:  # one failing shape (OOM, unsupported op) must not hide the others
            log.exception("%s %s failed", spec["variant"], name)
            result["workloads"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    used = nvml_used_mib()  # while the session / model still holds its memory
    result["gpu_mem_mib"] = None if base_mib is None or used is None else round(used - base_mib, 1)
    if spec.get("quality_in") and spec.get("io") != "cudagraph":
        np.save(spec["quality_out"], _quality(variant, spec["quality_in"]))
        result["quality_out"] = spec["quality_out"]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one variant; never raises (errors are part of the result)."""
    base = nvml_used_mib()
    result: dict[str, Any] = {"variant": spec["variant"], "workloads": {}, "error": None, "gpu_mem_mib": None}
    try:
        _measure(spec, result, base)
    except Exception as exc:
        log.exception("%s failed", spec["variant"])
        result["error"] = f"{type(exc).__name__}: {exc}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        result["torch_peak_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
    return result


def main(spec_json: str) -> int:
    return report_result(spec_json, worker)


def report_result(spec_json: str, measure: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The worker side of :func:`run_isolated`: ``measure(spec)`` printed on one tagged stdout line; an exception
    becomes the row's ``error`` (a failed measurement is a row, not a lost run)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = json.loads(spec_json)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        result = measure(spec)
    except Exception as exc:
        log.exception("measurement failed: %s", spec)
        result = {**spec, "error": f"{type(exc).__name__}: {exc}"}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def isolated_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark built on :func:`run_isolated`: per-measurement timeout, report redraw, worker."""
    parser.add_argument("--timeout-s", type=float, default=240.0, help="per measurement process")
    parser.add_argument("--report", help="redraw <stem>.md and <stem>.png beside this results JSON and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def worker_or_report(args: argparse.Namespace, measure: Callable[[dict[str, Any]], dict[str, Any]],
                     write_report: Callable[[dict[str, Any], Path, str], None]) -> int | None:
    """Handle ``--report`` (redraw from the JSON) or ``--worker`` (one measurement); ``None``: run the benchmark."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.report:
        path = Path(args.report)
        write_report(json.loads(path.read_text()), path.parent, path.stem)
        return 0
    if args.worker:
        return report_result(args.worker, measure)
    return None


def run_isolated(module: str, spec: dict[str, Any], timeout_s: float, row: dict[str, Any]) -> dict[str, Any]:
    """``python -m <module> --worker SPEC`` in a fresh interpreter (its GPU memory figure is its own, a crash
    cannot take other measurements down); its tagged line is the result, else ``row`` with the error."""
    command = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return {**row, "error": f"worker exited {done.returncode} with no result"}

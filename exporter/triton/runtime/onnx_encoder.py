"""Run an ONNX-route artefact (``model.onnx``): token ids in, float32 sentence vectors out.

Self-contained on purpose: the Triton repository writer copies this file verbatim into a python-backend model
directory, so it imports only numpy and onnxruntime — never ``exporter``. The exporter's quality gate runs the
artefact through this same class, so what is verified is what is served.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
OUTPUT_NAME = "sentence_embedding"


def device_index(device: str) -> int:
    """The GPU ordinal of ``cuda[:N]`` (0 when not given)."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def execution_providers(device: str, available: list[str], memory_optimization: bool = False,
                        tensorrt_cache: str | None = None) -> list:
    """ONNX Runtime's providers for ``device``, most preferred first; CPU always last (the fallback for nodes the
    others do not take).

    ``tensorrt_cache`` (a directory; GPU only) puts the TensorRT provider first, in FP16, with its engine and
    timing caches there, so a restart loads the engines instead of building them again. Nodes TensorRT cannot
    take run on the CUDA provider; where onnxruntime has no TensorRT provider at all, a WARNING says so and the
    model runs on CUDA alone."""
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    index = device_index(device)
    cuda_options: dict = {"device_id": index}
    if memory_optimization:
        cuda_options["arena_extend_strategy"] = "kSameAsRequested"
    providers: list = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    if tensorrt_cache is None:
        return providers
    if "TensorrtExecutionProvider" not in available:
        log.warning("TensorRT was asked for, but this onnxruntime has no TensorrtExecutionProvider (available: %s): "
                    "running on the CUDA provider; install onnxruntime-gpu with TensorRT's libraries to use it",
                    ", ".join(available))
        return providers
    os.makedirs(tensorrt_cache, exist_ok=True)
    trt_options = {"device_id": index, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": tensorrt_cache, "trt_timing_cache_enable": True,
                   "trt_timing_cache_path": tensorrt_cache}
    return [("TensorrtExecutionProvider", trt_options), *providers]


class OnnxEncoder:
    """ONNX Runtime session over ``<artefact_dir>/model.onnx``.

    On ``cuda[:N]`` the CUDA execution provider is used (CPU provider as fallback for unsupported nodes) and the
    output is bound with IO binding, so the vectors come back in one copy; on CPU ``threads`` sets intra-op
    threads (``None``: ONNX Runtime's default, one per core). ``memory_optimization`` (the plan's GPU memory
    setting) makes the CUDA arena grow by what is requested instead of doubling (``kSameAsRequested``), so a
    large batch does not leave a power-of-two arena behind (measured in docs/benchmarks/gpu.md).
    ``tensorrt_cache``: see :func:`execution_providers`.
    """

    def __init__(self, artefact_dir: str, device: str = "cpu", threads: int | None = None,
                 memory_optimization: bool = False, tensorrt_cache: str | None = None):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.device = device
        self.cuda = device.startswith("cuda")
        self.device_id = device_index(device)
        path, available = os.path.join(artefact_dir, MODEL_FILE), ort.get_available_providers()
        providers = execution_providers(device, available, memory_optimization, tensorrt_cache)
        self.session = ort.InferenceSession(path, options, providers=providers)
        asked_trt = any(p[0] == "TensorrtExecutionProvider" for p in providers if isinstance(p, tuple))
        if asked_trt and "TensorrtExecutionProvider" not in self.session.get_providers():
            # onnxruntime-gpu lists the provider even where TensorRT's libraries (libnvinfer) cannot be loaded, and
            # its own fallback drops our CUDA options (device_id, arena): build the CUDA session ourselves
            log.warning("the TensorRT provider did not start (are TensorRT's libraries installed and on "
                        "LD_LIBRARY_PATH?): running on the CUDA provider")
            providers = execution_providers(device, available, memory_optimization)
            self.session = ort.InferenceSession(path, options, providers=providers)
        if self.cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            raise RuntimeError(f"device {device!r} asked for CUDA but onnxruntime has no CUDAExecutionProvider "
                               f"(available: {available}); install onnxruntime-gpu")
        self.input_names: list[str] = [i.name for i in self.session.get_inputs()]

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise KeyError(f"missing encoder inputs {missing}; the graph takes {self.input_names}")
        return {name: np.ascontiguousarray(feeds[name], dtype=np.int64) for name in self.input_names}

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        arrays = self._feeds(feeds)
        if not self.cuda:
            return self.session.run([OUTPUT_NAME], arrays)[0]
        binding = self.session.io_binding()
        for name, array in arrays.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(OUTPUT_NAME, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

"""exporter/triton/runtime/onnx_encoder.py's provider choice, per device and option. The GPU providers cannot run
here; the choice is a plain function of the device and what onnxruntime offers, so it is checked as such (the
served GPU figures in docs/benchmarks/gpu.md ran through it)."""

from __future__ import annotations

import logging

from exporter.triton.runtime.onnx_encoder import execution_providers

CUDA_ONLY = ["CUDAExecutionProvider", "CPUExecutionProvider"]
WITH_TRT = ["TensorrtExecutionProvider", *CUDA_ONLY]


def test_cpu_runs_on_the_cpu_provider_alone_whatever_else_is_asked():
    assert execution_providers("cpu", WITH_TRT, memory_optimization=True, tensorrt_cache="/x") == [
        "CPUExecutionProvider"]


def test_cuda_names_its_device_and_keeps_the_cpu_fallback():
    assert execution_providers("cuda:1", CUDA_ONLY) == [("CUDAExecutionProvider", {"device_id": 1}),
                                                        "CPUExecutionProvider"]
    [(name, options), _] = execution_providers("cuda", CUDA_ONLY, memory_optimization=True)
    assert options == {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}


def test_tensorrt_goes_first_in_fp16_with_its_caches_in_the_given_directory(tmp_path):
    cache = tmp_path / "engines" / "m"
    [(name, options), cuda, cpu] = execution_providers("cuda:0", WITH_TRT, tensorrt_cache=str(cache))
    assert name == "TensorrtExecutionProvider" and cache.is_dir()
    assert options["trt_fp16_enable"] and options["trt_engine_cache_enable"]
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(cache)
    assert cuda[0] == "CUDAExecutionProvider" and cpu == "CPUExecutionProvider"


def test_tensorrt_without_the_provider_warns_and_runs_on_cuda(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        providers = execution_providers("cuda", CUDA_ONLY, tensorrt_cache=str(tmp_path / "c"))
    assert providers == execution_providers("cuda", CUDA_ONLY)
    assert "no TensorrtExecutionProvider (available: CUDAExecutionProvider, CPUExecutionProvider)" in caplog.text
    assert not (tmp_path / "c").exists()

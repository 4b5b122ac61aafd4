"""exporter/triton/runtime/torch_encoder.py's architecture step on its own: an 8B decoder's skeleton costs no
weights (the artefact's are loaded into it), while the buffers the artefact does not carry are real. Loading and
serving every torch route end to end: tests/test_routes_torch.py and tests/test_families.py."""

from __future__ import annotations

import pytest
import torch

from bench.gpu_large import SHAPES
from exporter.triton.runtime.torch_encoder import apply_weights, build_module

QWEN3_8B = {"model_type": "qwen3", **SHAPES["qwen3-8b"]}


def _meta(config: dict) -> dict:
    return {"config": config, "pooling": ["lasttoken"], "dense": [], "normalize": True,
            "inputs": ["input_ids", "attention_mask"]}


def test_an_8b_skeleton_has_empty_parameters_and_real_buffers():
    module = build_module(_meta(QWEN3_8B))
    params = list(module.parameters())
    assert sum(p.numel() for p in params) > 7e9 and all(p.is_meta for p in params)  # nothing allocated or drawn
    buffers = dict(module.named_buffers())
    rotary = [b for name, b in buffers.items() if name.endswith("inv_freq")]
    assert rotary and all(not b.is_meta and torch.isfinite(b).all() and b.abs().sum() > 0 for b in rotary)


def test_a_parameter_the_artefact_lacks_is_an_error_not_a_meta_tensor():
    tiny = {"model_type": "qwen3", **SHAPES["tiny"]}
    tensors = {k: torch.zeros(v.shape) for k, v in build_module(_meta(tiny)).state_dict().items()
               if "layers.1." not in k}
    with pytest.raises(ValueError, match=r"weights do not match the architecture: .*layers\.1\."):
        apply_weights(build_module(_meta(tiny)), tensors, torch.float32, "cpu")

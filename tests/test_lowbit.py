"""bench.lowbit: the GPU int8 candidates compute what the fp layer computes, up to their rounding, on any row count
(cuBLASLt wants padded rows) and are swapped in for the transformer's linears only. Run on CPU (torch has CPU
kernels for both products); their GPU speed is a benchmark figure (docs/benchmarks/gpu.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.lowbit import FP8Linear, W8A8Linear, swap_linears


@pytest.mark.parametrize("layer, floor", [(W8A8Linear, 0.9995), (FP8Linear, 0.998)])
@pytest.mark.parametrize("rows", [1, 17, 40])
def test_quantized_layers_follow_the_linear_they_replace(layer, floor, rows):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(rows, 3, 64)
    with torch.inference_mode():
        got, want = layer(linear)(x), linear(x)
    assert got.shape == want.shape == (rows, 3, 48)
    cos = nn.functional.cosine_similarity(got.reshape(-1, 48), want.reshape(-1, 48), dim=1)
    assert float(cos.min()) >= floor, float(cos.min())


def test_without_bias_and_int8_weights_are_stored_int8():
    linear = nn.Linear(32, 16, bias=False)
    layer = W8A8Linear(linear)
    assert layer.bias is None and layer.weight_t.dtype == torch.int8 and tuple(layer.weight_t.shape) == (32, 16)
    assert FP8Linear(linear).weight_t.dtype == torch.float8_e4m3fn


def test_swap_replaces_the_transformers_linears_only():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
            self.dense = nn.Linear(16, 8)  # a Dense head after pooling stays as it is

    encoder = Encoder()
    assert swap_linears(encoder, "w8a8") == 2
    assert [type(m).__name__ for m in encoder.transformer] == ["W8A8Linear", "ReLU", "W8A8Linear"]
    assert type(encoder.dense) is nn.Linear

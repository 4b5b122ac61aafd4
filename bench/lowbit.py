"""Candidate GPU int8 routes for the benchmark: linear layers whose matrix products run on the GPU in 8 bits.

ONNX Runtime's CUDA provider has no dynamic-int8 kernels, so the exporter's int8 graph cannot put its GEMMs on a
GPU. These two torch layers are what a GPU int8 route would run, measured against fp16 before any route is built
on them (``python -m bench.gpu --variants torch-w8a8,torch-fp8,...``):

- :class:`W8A8Linear`: int8 weights (symmetric, per output channel) and int8 activations (symmetric, per token,
  quantized at run time), int32 accumulation in ``torch._int_mm`` (cuBLASLt IMMA on the GPU), rescaled to fp16.
- :class:`FP8Linear`: the same scheme in float8 e4m3 with ``torch._scaled_mm`` (row-wise scales; Hopper and
  Ada GPUs, compute capability 8.9+).

Both run on CPU too (slowly), which is how the benchmark's smoke run checks them.
"""

from __future__ import annotations

import torch
from torch import nn

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8 e4m3fn


def _rows(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int]:
    """``x`` flattened to [tokens, features] and padded with zero rows to a multiple of ``multiple`` (cuBLASLt's
    int8 and fp8 kernels want more than 16 rows and aligned shapes); also the real row count."""
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    padded = max(multiple, -(-rows // multiple) * multiple)
    if padded != rows:
        flat = nn.functional.pad(flat, (0, 0, 0, padded - rows))
    return flat, rows


class _Linear8(nn.Module):
    """An ``nn.Linear`` in 8 bits: weights quantized per output channel once, activations per token on every call,
    both symmetric to ``LIMIT``; the subclass says how values are stored (:meth:`quantize`) and multiplied
    (:meth:`product`, which returns the rescaled result) and how many rows its kernel pads to (``ROWS``)."""

    LIMIT: float
    ROWS: int

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / self.LIMIT).clamp(min=1e-12)
        self.register_buffer("weight_t", self.quantize(weight / scale[:, None]).t())
        self.register_buffer("weight_scale", scale[None, :].contiguous())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.out_features = linear.out_features

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def product(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat, rows = _rows(x, self.ROWS)
        scale = (flat.abs().amax(dim=1, keepdim=True).float() / self.LIMIT).clamp(min=1e-12)
        y = self.product(self.quantize(flat.float() / scale), scale)[:rows].to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class W8A8Linear(_Linear8):
    """int8 x int8 -> int32 GEMM with per-token activation and per-channel weight scales."""

    LIMIT, ROWS = INT8_MAX, 32

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        return torch.round(values).clamp(-127, 127).to(torch.int8)

    def product(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch._int_mm(q, self.weight_t).float() * scale * self.weight_scale


class FP8Linear(_Linear8):
    """float8 e4m3 x float8 e4m3 GEMM (``torch._scaled_mm``) with per-token and per-channel scales."""

    LIMIT, ROWS = FP8_MAX, 16

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        return values.to(torch.float8_e4m3fn)

    def product(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch._scaled_mm(q, self.weight_t, scale_a=scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16)


LAYERS = {"w8a8": W8A8Linear, "fp8": FP8Linear}


def swap_linears(module: nn.Module, kind: str, prefix: str = "transformer.") -> int:
    """Replace every ``nn.Linear`` under ``prefix`` (the transformer, not the Dense head) by the ``kind`` layer,
    in place, freeing each original weight as it goes; returns how many were replaced."""
    layer = LAYERS[kind]
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix)]
    for name in names:
        module.set_submodule(name, layer(module.get_submodule(name)))
    return len(names)

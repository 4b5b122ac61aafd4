"""Steps the torch routes share: load the fp32 encoder, write ``model.safetensors`` + ``encoder.json``.

The files are read back by :mod:`exporter.triton.runtime.torch_encoder` (the python-backend model's loader), which
recognises each tensor's storage format by its key, so a route only decides *how* each tensor is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..export import copy_remote_code, encoder_metadata, load_encoder
from ..triton.runtime.torch_encoder import ENCODER_JSON, WEIGHTS_FILE, SentenceEncoder
from .base import BuildJob, RouteResult


def load_fp32(job: BuildJob, result: RouteResult) -> SentenceEncoder:
    """The fp32 encoder; its parameter bytes are the fp32 size the route's size ratio is taken to."""
    with result.timed("load"):
        encoder = load_encoder(job.spec, trust_remote_code=job.trust_remote_code, attn_implementation=None)
    result.fp32_bytes = sum(t.numel() * 4 for t in encoder.state_dict().values() if t.is_floating_point())
    return encoder


def save(job: BuildJob, work: Path, tensors: dict[str, torch.Tensor], compute_dtype: dict[str, str],
         result: RouteResult, **extra: Any) -> None:
    """Write the weights (safetensors, never pickle) and the metadata the runtime loader rebuilds from."""
    from safetensors.torch import save_file

    with result.timed("save"):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(work / WEIGHTS_FILE))
        meta = encoder_metadata(job.spec, job.trust_remote_code)
        meta.update(weights=WEIGHTS_FILE, compute_dtype=compute_dtype, **extra)
        if job.spec.remote_code:  # the server rebuilds the architecture from this copy, never from the hub
            meta["code_dir"] = copy_remote_code(job.spec, work)
        (work / ENCODER_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    result.files[:] = [WEIGHTS_FILE, ENCODER_JSON]


def build_cast(job: BuildJob, work: Path, storage: str, compute_dtype: dict[str, str]) -> RouteResult:
    """A torch route that stores every floating tensor as ``storage`` (``"float32"``, ``"bfloat16"`` ...) and
    computes in ``compute_dtype`` per device kind."""
    dtype = getattr(torch, storage)
    result = RouteResult(files=[], fp32_bytes=0)
    encoder = load_fp32(job, result)
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    save(job, work, tensors, compute_dtype, result)
    return result

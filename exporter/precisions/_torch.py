"""Steps the torch routes share: load the fp32 encoder, write ``model.safetensors`` + ``encoder.json``.

The files are read back by :mod:`exporter.triton.runtime.torch_encoder` (the python-backend model's loader), which
recognises each tensor's storage format by its key, so a route only decides *how* each tensor is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..export import encoder_metadata, load_encoder
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
        (work / ENCODER_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    result.files[:] = [WEIGHTS_FILE, ENCODER_JSON]

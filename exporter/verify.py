"""The quality gate: every artefact is compared with sentence-transformers fp32 on the same weights.

Both sides embed the shipped verification set (:mod:`exporter.verification_set`); the artefact side runs through
its *runtime loader* (the very class the Triton model runs) with the artefact's own tokenizer files, so the gate
checks what is served. Per sentence we take the cosine between the two vectors. The gate compares the **minimum**
cosine with the precision's threshold (docs/quality.md explains why the minimum, on this set); mean and 1st
percentile are reported next to it, with the worst sentences.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]
BATCH = 32
WORST_SHOWN = 5


class ExportError(Exception):
    """An artefact could not be built; nothing was published."""


class GateError(ExportError):
    """The artefact's vectors are further from the fp32 reference than the gate allows (nothing published).
    ``gate`` holds the numbers (a :class:`GateResult`)."""

    def __init__(self, message: str, gate: "GateResult"):
        super().__init__(message)
        self.gate = gate


@dataclass(frozen=True)
class GateResult:
    """The gate's record, serialised into report.json as ``gate``."""

    min_cosine: float
    mean_cosine: float
    p1: float
    threshold: float
    passed: bool
    accepted_degraded: bool
    sentences: int
    statistic: str = "min_cosine"
    worst: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (float64, so the gate's last digits are not rounding noise)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)


@lru_cache(maxsize=4)
def _reference_model(model_dir: str, max_seq_length: int, trust_remote_code: bool):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", trust_remote_code=trust_remote_code)
    model.max_seq_length = max_seq_length
    return model


@lru_cache(maxsize=8)
def _reference_cached(model_dir: str, sentences: tuple[str, ...], max_seq_length: int,
                      trust_remote_code: bool) -> np.ndarray:
    model = _reference_model(model_dir, max_seq_length, trust_remote_code)
    return model.encode(list(sentences), batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False)


def reference_embeddings(model_dir: Path, sentences: list[str], max_seq_length: int,
                         trust_remote_code: bool = False) -> np.ndarray:
    """sentence-transformers fp32 vectors (cached per process: fp32, fp16 and int8 builds share them)."""
    return _reference_cached(str(model_dir), tuple(sentences), max_seq_length, trust_remote_code)


def encode(encoder: Encoder, tokenizer_dir: Path, sentences: list[str], max_seq_length: int,
           batch: int = BATCH) -> np.ndarray:
    """Vectors from a runtime encoder: tokenise with the artefact's tokenizer (length-sorted batches, as
    sentence-transformers does, so padding stays small), return them in input order."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    out: list[np.ndarray] = [None] * len(sentences)  # type: ignore[list-item]
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        feeds = tokenizer([sentences[i] for i in idx], padding=True, truncation=True, max_length=max_seq_length,
                          return_tensors="np")
        vectors = encoder({k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})
        for i, vec in zip(idx, vectors):
            out[i] = vec
    return np.stack(out)


def run_gate(encoder: Encoder, tokenizer_dir: Path, reference: np.ndarray, sentences: list[str],
             max_seq_length: int, threshold: float, *, accept_degraded: bool = False,
             label: str = "artefact") -> GateResult:
    """Compare ``encoder`` with the reference vectors; raise :class:`GateError` (worst sentences listed) when
    the minimum cosine is below ``threshold`` unless ``accept_degraded``."""
    start = time.perf_counter()
    got = encode(encoder, tokenizer_dir, sentences, max_seq_length)
    cos = cosines(got, reference)
    worst_idx = np.argsort(cos)[:WORST_SHOWN]
    worst = [{"cosine": round(float(cos[i]), 6), "text": sentences[i][:120]} for i in worst_idx]
    minimum = float(cos.min())
    passed = bool(minimum >= threshold)
    result = GateResult(
        min_cosine=round(minimum, 7), mean_cosine=round(float(cos.mean()), 7),
        p1=round(float(np.percentile(cos, 1)), 7), threshold=threshold, passed=passed,
        accepted_degraded=not passed and accept_degraded, sentences=len(sentences), worst=worst,
        seconds=round(time.perf_counter() - start, 3))
    if passed:
        log.info("gate passed for %s: min cosine %.6f >= %.6f (mean %.6f)", label, minimum, threshold,
                 result.mean_cosine)
        return result
    listing = "\n".join(f"  {w['cosine']:.6f}  {w['text']!r}" for w in worst)
    message = (f"quality gate failed for {label}: min cosine {minimum:.6f} < threshold {threshold} over "
               f"{len(sentences)} sentences (mean {result.mean_cosine:.6f}, p1 {result.p1:.6f}); worst "
               f"sentences:\n{listing}")
    if accept_degraded:
        log.warning("%s; accepted because of --accept-degraded (recorded in report.json)", message)
        return result
    raise GateError(message + "\npass --accept-degraded to keep it anyway, or --min-cosine PRECISION=VALUE to "
                    "set another threshold", result)

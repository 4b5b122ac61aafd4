"""The quality gate: every artefact is compared with sentence-transformers fp32 on the same weights.

Both sides embed the shipped verification set (:mod:`exporter.verification_set`); the artefact side runs through
its *runtime loader* (the very class the Triton model runs) with the artefact's own tokenizer files, so the gate
checks what is served. Per sentence we take the cosine between the two vectors. The gate compares the **minimum**
cosine with the precision's threshold (docs/quality.md explains why the minimum, on this set); mean and 1st
percentile are reported next to it, with the worst sentences.

One exception, measured and argued in docs/quality.md: 4-bit weights (int4, bitsandbytes NF4) shift *every*
vector a little and the 1-token inputs most, so no NF4 build of a small model meets the minimum a finer precision
does; int4 is gated on the **mean** cosine *and* on a floor for the 1st percentile (a mean alone would pass a build
whose worst 1% fell apart), and its minimum is reported. Each precision declares its statistic, threshold and
optional p1 floor (``gate_statistic``, ``gate_threshold``, ``gate_p1`` in :mod:`exporter.precisions`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import GateError
from .precisions import get

log = logging.getLogger(__name__)

Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]
STATISTICS = ("min_cosine", "mean_cosine", "p1")
BATCH = 8  # small, length-sorted batches: measured fastest on CPU for this set (see _by_length)
WORST_SHOWN = 5


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
    p1_threshold: float | None = None  # the 1st-percentile floor, when the precision has one
    worst: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (float64, so the gate's last digits are not rounding noise)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)


@lru_cache(maxsize=4)
def _reference_model(model_dir: str, max_seq_length: int, trust_remote_code: bool,
                     pooling: tuple[str, ...] | None = None):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    model = SentenceTransformer(model_dir, device="cpu", trust_remote_code=trust_remote_code,
                                model_kwargs={"use_safetensors": True})
    model.max_seq_length = max_seq_length
    if pooling is not None:  # a models file's override: the reference pools as the served graph does
        index = next(i for i, module in enumerate(model) if isinstance(module, Pooling))
        modes = tuple({"mean_sqrt_len": "mean_sqrt_len_tokens"}.get(m, m) for m in pooling)  # its spelling
        model[index] = Pooling(model[index].embedding_dimension, pooling_mode=modes)
    return model


@lru_cache(maxsize=8)
def _reference_cached(model_dir: str, sentences: tuple[str, ...], max_seq_length: int,
                      trust_remote_code: bool, pooling: tuple[str, ...] | None) -> np.ndarray:
    model = _reference_model(model_dir, max_seq_length, trust_remote_code, pooling)
    # prompt="": the bare encoder is gated (sentence-transformers would prepend a default prompt, which the served
    # tokenizer applies per request, not the graph)
    return model.encode(list(sentences), batch_size=32, convert_to_numpy=True, show_progress_bar=False, prompt="")


def reference_embeddings(model_dir: Path, sentences: list[str], max_seq_length: int,
                         trust_remote_code: bool = False, pooling: tuple[str, ...] | None = None) -> np.ndarray:
    """sentence-transformers fp32 vectors (cached per process: fp32, fp16 and int8 builds share them); ``pooling``
    replaces the model's Pooling modes (a models file's override)."""
    return _reference_cached(str(model_dir), tuple(sentences), max_seq_length, trust_remote_code, pooling)


def _by_length(tokenizer: Any, sentences: list[str], max_seq_length: int,
               embed: Callable[[np.ndarray], np.ndarray], batch: int = BATCH) -> np.ndarray:
    """``embed(indices)`` over batches of sentences of similar token length (little padding: the few inputs at
    ``max_seq_length`` do not pad many short ones), reassembled in input order."""
    from tqdm import tqdm

    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=max_seq_length)["input_ids"]]
    order = np.argsort([-n for n in lengths], kind="stable")
    out: list[np.ndarray] = [None] * len(sentences)  # type: ignore[list-item]
    # a progress bar on an interactive stderr only (disable=None), so logs and CI output stay clean
    for start in tqdm(range(0, len(order), batch), desc="embed", unit="batch", disable=None, leave=False):
        idx = order[start:start + batch]
        for i, vec in zip(idx, embed(idx)):
            out[i] = vec
    return np.stack(out)


def encode(encoder: Encoder, tokenizer_dir: Path, sentences: list[str], max_seq_length: int,
           batch: int = BATCH) -> np.ndarray:
    """Vectors from a runtime encoder, tokenised with the artefact's own tokenizer files, in input order."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def embed(idx: np.ndarray) -> np.ndarray:
        feeds = tokenizer([sentences[i] for i in idx], padding=True, truncation=True, max_length=max_seq_length,
                          return_tensors="np")
        return encoder({k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})

    return _by_length(tokenizer, sentences, max_seq_length, embed, batch)


def gate_statistic(precision: str) -> str:
    """Which statistic of the per-sentence cosines the gate compares with the threshold for ``precision``
    (``Precision.gate_statistic``)."""
    return get(precision).gate_statistic


def gate_checks(gate: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """The gate's comparisons as (what, value, floor): its statistic against the threshold, then the 1st percentile
    against its floor where the precision has one. ``gate``: report.json's "gate" (a :class:`GateResult`'s keys)."""
    checks = [(gate["statistic"].replace("_", " "), gate[gate["statistic"]], gate["threshold"])]
    if gate.get("p1_threshold") is not None:
        checks.append(("p1", gate["p1"], gate["p1_threshold"]))
    return checks


def run_gate(encoder: Encoder, tokenizer_dir: Path, reference: np.ndarray, sentences: list[str],
             max_seq_length: int, threshold: float, *, statistic: str = "min_cosine",
             p1_floor: float | None = None, accept_degraded: bool = False, label: str = "artefact") -> GateResult:
    """Compare ``encoder`` with the reference vectors; raise :class:`GateError` (worst sentences listed) when
    ``statistic`` (one of :data:`STATISTICS`) is below ``threshold``, or the 1st percentile below ``p1_floor``,
    unless ``accept_degraded``."""
    if statistic not in STATISTICS:
        raise ValueError(f"gate statistic {statistic!r} is not one of {', '.join(STATISTICS)}")
    start = time.perf_counter()
    got = encode(encoder, tokenizer_dir, sentences, max_seq_length)
    cos = cosines(got, reference)
    worst_idx = np.argsort(cos)[:WORST_SHOWN]
    worst = [{"cosine": round(float(cos[i]), 6), "text": sentences[i][:120]} for i in worst_idx]
    stats = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
             "p1": float(np.percentile(cos, 1))}
    checks = gate_checks({**stats, "statistic": statistic, "threshold": threshold, "p1_threshold": p1_floor})
    passed = all(got >= floor for _, got, floor in checks)
    result = GateResult(
        **{k: round(v, 7) for k, v in stats.items()}, threshold=threshold, passed=passed,
        accepted_degraded=not passed and accept_degraded, sentences=len(sentences), statistic=statistic,
        p1_threshold=p1_floor, worst=worst, seconds=round(time.perf_counter() - start, 3))
    if passed:
        log.info("gate passed for %s: %s (min %.6f)", label,
                 " and ".join(f"{what} {got:.6f} >= {floor}" for what, got, floor in checks), stats["min_cosine"])
        return result
    listing = "\n".join(f"  {w['cosine']:.6f}  {w['text']!r}" for w in worst)
    verdicts = ", ".join(f"{what} {got:.6f} {'<' if got < floor else '>='} threshold {floor}"
                         for what, got, floor in checks)
    message = (f"quality gate failed for {label}: {verdicts} over "
               f"{len(sentences)} sentences (min {result.min_cosine:.6f}, mean {result.mean_cosine:.6f}, "
               f"p1 {result.p1:.6f}); worst sentences:\n{listing}")
    if accept_degraded:
        log.warning("%s; accepted because of --accept-degraded (recorded in report.json)", message)
        return result
    raise GateError(message + "\npass --accept-degraded to keep it anyway, or --min-cosine PRECISION=VALUE "
                    "(PRECISION:p1=VALUE for the p1 floor) to set another threshold", result)

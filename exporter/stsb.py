"""STS-B task metric: Spearman correlation between cosine similarity and the gold scores, per precision.

The quality gate compares vectors; this measures what users care about (ranking sentence pairs) on the STS-B dev
split, for the sentence-transformers fp32 reference and for each artefact run through its own runtime loader.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .precisions import get


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with gold similarity scores (0..5)."""

    first: list[str]
    second: list[str]
    gold: np.ndarray

    @property
    def sentences(self) -> list[str]:
        """Unique sentences, each embedded once."""
        return list(dict.fromkeys(self.first + self.second))


def load_stsb(path: Path, limit: int | None = None) -> StsPairs:
    """Parse the tab-separated STS-B file (no header, no quoting: fields 5-7 are score, sentence 1, sentence 2)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--stsb {str(path)!r} cannot be read: {exc.strerror}") from None
    first, second, gold = [], [], []
    for number, line in enumerate(lines[:limit] if limit else lines, start=1):
        fields = line.split("\t")
        try:
            score = float(fields[4])
            first.append(fields[5])
            second.append(fields[6])
        except (IndexError, ValueError):
            raise ConfigError(f"--stsb {str(path)!r} line {number} is not an STS-B row (genre, file, year, id, "
                              f"score, sentence1, sentence2 separated by tabs): {line[:80]!r}") from None
        gold.append(score)
    if not gold:
        raise ConfigError(f"--stsb {str(path)!r} holds no sentence pairs")
    return StsPairs(first, second, np.asarray(gold))


def spearman(pairs: StsPairs, vectors: dict[str, np.ndarray]) -> float:
    """Spearman rank correlation of the pairs' cosine similarity with the gold scores."""
    from scipy.stats import spearmanr

    a = np.stack([vectors[s] for s in pairs.first]).astype(np.float64)
    b = np.stack([vectors[s] for s in pairs.second]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cos, pairs.gold).statistic)


def timed_vectors(embed, sentences: list[str]) -> tuple[dict[str, np.ndarray], float]:
    """``embed(sentences) -> array``, keyed by sentence, and the seconds it took."""
    start = time.perf_counter()
    array = embed(sentences)
    return dict(zip(sentences, array)), time.perf_counter() - start


def row(precision: str, value: float, reference: float, **extra: Any) -> dict[str, Any]:
    """One table row: the Spearman, its delta to the reference and whether it meets the precision's target
    (``Precision.spearman_tolerance``: fp32 within it either way, the others at most that much below)."""
    delta = value - reference
    tolerance = get(precision).spearman_tolerance
    ok = abs(delta) <= tolerance if precision == "fp32" else delta >= -tolerance
    return {"precision": precision, "spearman": round(value, 4), "delta": round(delta, 4),
            "target": f"{'±' if precision == 'fp32' else '>= -'}{tolerance}", "meets_target": ok, **extra}

"""Quality next to speed: STS-B dev Spearman per precision and cosine vs sentence-transformers fp32.

Everything numeric is the exporter's own verification code (:mod:`exporter.verify`: the fp32 reference, the
artefact encoding through its runtime loader and tokenizer, the cosines), so the benchmark reports what the
quality gate measures, on STS-B instead of the shipped verification set. Spearman is scipy's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from _bench_workloads import stsb_sentences

log = logging.getLogger("exporter.bench.quality")


class StsbQuality:
    """STS-B pairs embedded once by the fp32 reference; each precision is then scored against it."""

    def __init__(self, model_dir: Path, pairs: list[tuple[str, str, float]], max_length: int):
        from exporter.verify import reference_embeddings

        self.pairs, self.max_length = pairs, max_length
        self.sentences = stsb_sentences(pairs)
        self.row = {s: i for i, s in enumerate(self.sentences)}
        self.reference = reference_embeddings(model_dir, self.sentences, max_length)
        self.reference_spearman = self.spearman(self.reference)

    def spearman(self, vectors: np.ndarray) -> float:
        """Spearman correlation of the pairs' cosine similarities with the gold scores."""
        from scipy.stats import spearmanr

        from exporter.verify import cosines

        first = vectors[[self.row[a] for a, _, _ in self.pairs]]
        second = vectors[[self.row[b] for _, b, _ in self.pairs]]
        return float(spearmanr(cosines(first, second), [g for _, _, g in self.pairs]).statistic)

    def score(self, encoder_dir: Path, tokenizer_dir: Path) -> dict[str, float]:
        """Spearman (and its delta to the reference) and min/p1/mean cosine vs fp32 for one built encoder."""
        from exporter.artefact import REPORT_FILE, RUNTIMES
        from exporter.verify import cosines, encode

        report = json.loads((encoder_dir / REPORT_FILE).read_text(encoding="utf-8"))
        encoder = RUNTIMES[report["runtime"]](str(encoder_dir))
        vectors = encode(encoder, tokenizer_dir, self.sentences, report["max_seq_length"])
        cos = cosines(vectors, self.reference)
        spearman = self.spearman(vectors)
        return {"spearman": spearman, "delta": spearman - self.reference_spearman, "min_cosine": float(cos.min()),
                "p1_cosine": float(np.percentile(cos, 1)), "mean_cosine": float(cos.mean())}

    def summary(self) -> dict[str, Any]:
        return {"reference_spearman": self.reference_spearman, "pairs": len(self.pairs),
                "sentences": len(self.sentences), "precisions": {}}

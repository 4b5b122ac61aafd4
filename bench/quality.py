"""Quality next to speed: STS-B dev Spearman per precision and cosine vs sentence-transformers fp32.

Everything numeric is the exporter's own code: :mod:`exporter.verify` (the fp32 reference, the artefact encoding
through its runtime loader and tokenizer, the cosines) and :mod:`exporter.stsb` (the STS-B parser and Spearman
of ``exporter eval``), so the benchmark reports what the quality gate and the eval step measure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("exporter.bench.quality")


class StsbQuality:
    """STS-B pairs embedded once by the fp32 reference; each precision is then scored against it."""

    def __init__(self, model_dir: Path, pairs: Any, max_length: int):
        from exporter.stsb import spearman
        from exporter.verify import reference_embeddings

        self.pairs, self.sentences = pairs, pairs.sentences
        self.reference = reference_embeddings(model_dir, self.sentences, max_length)
        self.reference_spearman = spearman(pairs, dict(zip(self.sentences, self.reference)))

    def score(self, encoder_dir: Path, tokenizer_dir: Path) -> dict[str, float]:
        """Spearman (and its delta to the reference) and min/p1/mean cosine vs fp32 for one built encoder."""
        from exporter import read_report
        from exporter.triton.config import runtime_class
        from exporter.verify import encode

        report = read_report(encoder_dir)
        encoder = runtime_class(report["runtime"])(str(encoder_dir))
        return self.score_vectors(encode(encoder, tokenizer_dir, self.sentences, report["max_seq_length"]))

    def score_vectors(self, vectors: np.ndarray) -> dict[str, float]:
        """The same figures for vectors of :attr:`sentences` in order, however they were made (a peer server's)."""
        from exporter.stsb import spearman
        from exporter.verify import cosines

        cos = cosines(vectors, self.reference)
        value = spearman(self.pairs, dict(zip(self.sentences, vectors)))
        return {"spearman": value, "delta": value - self.reference_spearman, "min_cosine": float(cos.min()),
                "p1_cosine": float(np.percentile(cos, 1)), "mean_cosine": float(cos.mean())}

    def summary(self) -> dict[str, Any]:
        return {"reference_spearman": self.reference_spearman, "pairs": len(self.pairs.gold),
                "sentences": len(self.sentences), "precisions": {}}

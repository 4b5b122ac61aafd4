"""Benchmark workloads: STS-B dev sentences (short, real) and synthetic texts of a set token length.

Synthetic texts are built from STS-B's own words (seeded shuffle), cut at the character offset where the model's
tokenizer reaches the target length, so "256 tokens" means 256 tokens for *this* tokenizer, special tokens
included. Every runner gets the same batches, and token counts are those the model really sees (after
truncation to ``max_length``), so tokens/s is comparable across runners.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from tokenizers import Tokenizer

from bench.measure import Batches

log = logging.getLogger("exporter.bench.workloads")

STSB_NAME = "stsb"
SPECIAL_TOKENS = 2  # [CLS] ... [SEP] for BERT-style tokenizers; measured, not assumed, in token_counts()


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's fast tokenizer (``tokenizer.json``), without truncation or padding."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the benchmark needs the model's fast tokenizer file")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def synthetic_texts(tokenizer: Tokenizer, words: list[str], n_tokens: int, count: int, seed: int = 0) -> list[str]:
    """``count`` texts of ``n_tokens`` tokens each (special tokens included) from seeded shuffles of ``words``."""
    if n_tokens <= SPECIAL_TOKENS:
        raise ValueError(f"synthetic length {n_tokens} is too short; allowed: more than {SPECIAL_TOKENS} tokens")
    rng = random.Random(seed * 1_000_003 + n_tokens)
    content = n_tokens - SPECIAL_TOKENS
    texts = []
    for _ in range(count):
        pool: list[str] = []
        while True:
            rng.shuffle(words)
            pool.extend(words[: content * 2])
            encoding = tokenizer.encode(" ".join(pool), add_special_tokens=False)
            if len(encoding.ids) >= content:
                break
        texts.append(" ".join(pool)[: encoding.offsets[content - 1][1]])
    return texts


def token_counts(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[int]:
    """Tokens the model processes per text: special tokens included, truncated to ``max_length``."""
    return [min(len(e.ids), max_length) for e in tokenizer.encode_batch(texts, add_special_tokens=True)]


def make_batches(name: str, texts: list[str], batch_size: int, tokenizer: Tokenizer, max_length: int) -> Batches:
    """Cut ``texts`` into batches of ``batch_size`` (the last may be shorter) with their token counts."""
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} is not valid; allowed: >= 1")
    counts = token_counts(tokenizer, texts, max_length)
    starts = range(0, len(texts), batch_size)
    return Batches(name, tuple(tuple(texts[i:i + batch_size]) for i in starts),
                   tuple(sum(counts[i:i + batch_size]) for i in starts))


def synthetic_batch_size(batch_size: int, n_tokens: int, token_budget: int) -> int:
    """Texts per request for long texts: ``batch_size``, capped so a request holds about ``token_budget``
    tokens (64 x 512 tokens is ~15 s per request for fp32 on 2 cores: too few requests for percentiles)."""
    return max(1, min(batch_size, token_budget // n_tokens))


def build_workloads(sentences: list[str], tokenizer: Tokenizer, *, stsb_texts: int, synthetic: dict[int, int],
                    batch_size: int, max_length: int, token_budget: int) -> list[Batches]:
    """STS-B (the first ``stsb_texts`` of the unique ``sentences``, ``batch_size`` per request) and one synthetic
    workload per ``{tokens: count}`` made of their words (batches capped by :func:`synthetic_batch_size`)."""
    workloads = [make_batches(STSB_NAME, sentences[:stsb_texts], batch_size, tokenizer, max_length)]
    words = sorted({w for s in sentences for w in s.split()})
    for n_tokens, count in sorted(synthetic.items()):
        if n_tokens > max_length:
            log.warning("synthetic %d-token texts are truncated to max_length %d", n_tokens, max_length)
        texts = synthetic_texts(tokenizer, list(words), n_tokens, count)
        size = synthetic_batch_size(batch_size, n_tokens, token_budget)
        workloads.append(make_batches(f"synth{n_tokens}", texts, size, tokenizer, max_length))
    return workloads


def describe(batches: Batches) -> dict[str, object]:
    """Size of a workload for the report: texts, batches, texts per batch and mean tokens per text."""
    n_texts = sum(len(b) for b in batches.texts)
    return {"name": batches.name, "texts": n_texts, "batches": len(batches.texts),
            "batch_size": max(len(b) for b in batches.texts), "mean_tokens": sum(batches.tokens) / n_texts}

"""The verification set the quality gate runs on: sentences this project wrote (``data/verification.txt``) plus
a few long inputs built from them, so every build is checked from 1 token to beyond ``max_seq_length``
(truncation included), across topics and scripts (Latin, Cyrillic, CJK, emoji, code). The built-in long inputs
reach ~600 word pieces; a model that takes more than :data:`LONG_MODEL` tokens gets one more input, longer than its
``max_seq_length``, so its gate checks its whole position table too."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

_LONG_GROUP = 24  # consecutive lines joined into one input: well over 256 word pieces
_SPAN = 40  # handwritten lines between two long inputs
LONG_MODEL = 512  # max_seq_length above which the set gains an input longer than the model takes


@lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    text = resources.files("exporter").joinpath("data/verification.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    cjk = " ".join(line for line in lines if any("\u3040" <= ch <= "\u9fff" for ch in line))
    extra = [cjk * 3, "token " * 600]
    out: list[str] = []
    for i in range(0, len(lines), _SPAN):  # a long input after every span, so any even subset holds some
        out += lines[i:i + _SPAN]
        out.append(" ".join(lines[i:i + _LONG_GROUP]) if len(lines) - i >= _LONG_GROUP else extra.pop())
    return tuple(dict.fromkeys(out + extra))


def verification_sentences(limit: int | None = None, max_seq_length: int | None = None) -> list[str]:
    """All sentences, or ``limit`` of them spread evenly over the set (so short, long and non-Latin stay in); plus
    one input of at least ``max_seq_length`` words when that is over :data:`LONG_MODEL` (a long-context model)."""
    sentences = _all_sentences()
    long = [_longer_than(max_seq_length)] if max_seq_length and max_seq_length > LONG_MODEL else []
    if limit is None or limit >= len(sentences):
        return list(sentences) + long
    if limit < 1:
        raise ValueError(f"verification_limit={limit!r} must be a positive integer or None (the whole set)")
    step = len(sentences) / limit
    return [sentences[int(i * step)] for i in range(limit)] + long


def _longer_than(words: int) -> str:
    """The handwritten lines joined, repeated as needed, cut at ``words`` words (each word is 1+ word pieces)."""
    pool = " ".join(_all_sentences()).split()
    return " ".join((pool * (words // len(pool) + 1))[:words])

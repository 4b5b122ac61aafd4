"""The verification set the quality gate runs on: sentences this project wrote (``data/verification.txt``) plus
a few long inputs built from them, so every build is checked from 1 token to beyond ``max_seq_length``
(truncation included), across topics and scripts (Latin, Cyrillic, CJK, emoji, code)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

_LONG_GROUP = 24  # consecutive lines joined into one input: well over 256 word pieces
_SPAN = 40  # handwritten lines between two long inputs


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


def verification_sentences(limit: int | None = None) -> list[str]:
    """All sentences, or ``limit`` of them spread evenly over the set (so short, long and non-Latin stay in)."""
    sentences = _all_sentences()
    if limit is None or limit >= len(sentences):
        return list(sentences)
    if limit < 1:
        raise ValueError(f"verification_limit={limit!r} must be a positive integer or None (the whole set)")
    step = len(sentences) / limit
    return [sentences[int(i * step)] for i in range(limit)]

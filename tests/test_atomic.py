"""swap_in: the atomic exchange, the two-rename fallback, and its rollback when the second rename fails."""

import os

import pytest

from exporter import atomic


def make(path, text):
    path.mkdir()
    (path / "f").write_text(text)
    return path


def test_first_publish_and_atomic_exchange(tmp_path):
    dest = tmp_path / "repo"
    assert atomic.swap_in(make(tmp_path / "a", "one"), dest) is None
    previous = atomic.swap_in(make(tmp_path / "b", "two"), dest)
    assert (dest / "f").read_text() == "two" and (previous / "f").read_text() == "one"


def test_fallback_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "rename_exchange", lambda a, b: False)
    dest = make(tmp_path / "repo", "old")
    previous = atomic.swap_in(make(tmp_path / "new", "new"), dest)
    assert (dest / "f").read_text() == "new" and (previous / "f").read_text() == "old"
    assert ".building-" not in previous.name  # never matched by the stale-staging cleanup


def test_fallback_rolls_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "rename_exchange", lambda a, b: False)
    dest = make(tmp_path / "repo", "old")
    real_rename = os.rename
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", flaky)
    with pytest.raises(OSError):
        atomic.swap_in(make(tmp_path / "new", "new"), dest)
    assert (dest / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "repo"]

"""swap_in: the atomic exchange, the two-rename fallback, and its rollback when the second rename fails; the
staging cleanup that removes what killed builds left and nothing a live build or swap_in still needs."""

import os
import subprocess
import sys

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


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_staging_of_gone_builds_is_removed_and_nothing_else(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = dead_pid()
        dest = make(tmp_path / "tiny", "published")
        removed = [make(tmp_path / name, "x") for name in (
            f".tiny.building-{gone}",                 # the repository writer's form
            f".tiny.building-{gone}.k3x_9ab0",        # the artefact writer's form (mkdtemp suffix)
            ".tiny.building-a1b2c3d4",                # from before owners were recorded
        )]
        kept = [make(tmp_path / name, "x") for name in (
            f".tiny.building-{live.pid}.q7w_e8r9",    # a running build
            f".tiny.building-{os.getpid()}.z0y_x9w8", # this process (another thread may be building it)
            ".tiny.previous-0f1e2d3c",                # the parked previous version swap_in protects
            f".tiny-2.building-{gone}",               # another artefact's name
        )]
        assert atomic.remove_stale_staging(dest) == sorted(p.absolute() for p in removed)
        assert all(p.is_dir() for p in kept + [dest]) and not any(p.exists() for p in removed)
    finally:
        live.kill()
        live.wait()


def test_staging_name_carries_this_pid(tmp_path):
    assert atomic.staging_name(tmp_path / "tiny") == f".tiny.building-{os.getpid()}"

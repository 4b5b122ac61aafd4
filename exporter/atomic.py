"""Swapping a finished directory into place, shared by artefact and repository publishing.

Both publish the same way: everything is written to a temporary sibling, then swapped in. On Linux
``renameat2(RENAME_EXCHANGE)`` makes the swap a single atomic step; where the file system lacks it, two renames
are used with a rollback, and the previous directory is parked under a name no staging cleanup ever deletes, so
an interruption can at worst leave it beside ``dest``, never remove it.

Staging siblings are named ``.<name>.building-<pid>[.<suffix>]``: the pid names the build that owns one, so a
later build of the same name can remove what a killed build left (:func:`remove_stale_staging`) without touching
a directory that a running build is still writing.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
STAGING_MARK = ".building-"


def swap_in(new: Path, dest: Path) -> Path | None:
    """Put the complete directory ``new`` at ``dest``; return where the previous ``dest`` now is (None if none).

    The caller removes the returned directory once it no longer needs the previous version.
    """
    new, dest = Path(new).absolute(), Path(dest).absolute()
    if not dest.exists():
        os.rename(new, dest)
        return None
    if rename_exchange(new, dest):
        return new
    log.warning("renameat2(RENAME_EXCHANGE) unavailable; publishing %s with two renames", dest)
    previous = dest.with_name(f".{dest.name}.previous-{uuid.uuid4().hex[:8]}")
    os.rename(dest, previous)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(previous, dest)
        raise
    return previous


def rename_exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE): both paths swap in one atomic step."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, flag = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag) != 0:
        code = ctypes.get_errno()
        if code in _UNSUPPORTED:  # file system or kernel without the flag
            return False
        raise OSError(code, os.strerror(code), str(b))
    return True


def staging_name(dest: Path) -> str:
    """``.<dest name>.building-<this pid>``: the name (or name prefix) of this process's staging sibling of ``dest``.

    The pid is what lets :func:`remove_stale_staging` tell a directory a killed build left from a live one.
    """
    return f".{Path(dest).name}{STAGING_MARK}{os.getpid()}"


def remove_stale_staging(dest: Path) -> list[Path]:
    """Delete the staging siblings of ``dest`` whose owning process is gone (killed or crashed builds).

    Kept: directories of a live process, this one included (another thread may be building the same name), and
    the previous version :func:`swap_in` parks (``.<name>.previous-*``), which this never matches. A staging
    directory whose name carries no pid has no owner to ask: only builds from before owners were recorded made
    such names, so it is treated as abandoned and removed too. Returns the removed paths.
    """
    dest = Path(dest).absolute()
    prefix = f".{dest.name}{STAGING_MARK}"
    removed = []
    for stale in sorted(dest.parent.glob(glob.escape(prefix) + "*")):
        owner = _owner_pid(stale.name[len(prefix):])
        if owner is not None and (owner == os.getpid() or _alive(owner)):
            continue
        log.info("removing stale staging directory %s (its build, pid %s, is gone)", stale, owner or "unknown")
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


def _owner_pid(suffix: str) -> int | None:
    """The pid in a staging name's suffix (``1234`` or ``1234.k3x_9ab0``), None if it holds none."""
    pid = suffix.split(".", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one we may not signal still counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

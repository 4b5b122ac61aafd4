"""Swapping a finished directory into place, shared by artefact and repository publishing.

Both publish the same way: everything is written to a temporary sibling, then swapped in. On Linux
``renameat2(RENAME_EXCHANGE)`` makes the swap a single atomic step; where the file system lacks it, two renames
are used with a rollback, and the previous directory is parked under a name no staging cleanup ever deletes, so
an interruption can at worst leave it beside ``dest``, never remove it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


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

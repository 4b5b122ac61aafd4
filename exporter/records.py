"""What the stages return, and the format version of the files they write.

:func:`exporter.export_artefact` returns an :class:`Artefact` (its directory and the report it wrote), so callers
in the same process use ``artefact.report`` instead of re-reading ``report.json``. Files read back from disk (a
published repository, an artefact another process built) go through :func:`read_report` / :func:`read_json`,
which refuse a ``format_version`` newer than this code understands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

_CHUNK = 1 << 20  # hash in 1 MiB reads: artefacts are up to GBs
FORMAT_VERSION = 1  # of report.json and manifest.json; written as "format_version"
REPORT_FILE = "report.json"


def check_format_version(data: dict[str, Any], where: object) -> dict[str, Any]:
    """``data`` itself, or a ConfigError when its ``format_version`` is newer than :data:`FORMAT_VERSION`.

    Files written before the key existed count as version 1 (manifests then said ``"format": 1``)."""
    version = data.get("format_version", data.get("format", 1))
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(f"{where} has format_version {version!r}; this emb-provider reads up to "
                          f"{FORMAT_VERSION}: upgrade emb-provider, or rebuild it with this one")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """A report.json or manifest.json, its format version checked."""
    return check_format_version(json.loads(Path(path).read_text(encoding="utf-8")), path)


def read_report(artefact_dir: Path) -> dict[str, Any]:
    """The ``report.json`` of an artefact directory (or of a published encoder's version directory)."""
    return read_json(Path(artefact_dir) / REPORT_FILE)


@dataclass(frozen=True)
class Artefact:
    """One published artefact directory and the report written into it (``report.json``)."""

    path: Path
    report: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> "Artefact":
        """The record of an artefact directory on disk (e.g. built by another process)."""
        return cls(Path(path), read_report(path))

    def __fspath__(self) -> str:  # so Path(artefact) and open() keep working where a path was returned before
        return str(self.path)


__all__ = ["FORMAT_VERSION", "REPORT_FILE", "Artefact", "check_format_version", "read_json", "read_report"]


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(root: Path, *, skip_bytecode: bool = False) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` by relative POSIX path, sorted, with its ``bytes`` and ``sha256``: the ``files`` of
    report.json and of an object-store build. ``skip_bytecode`` leaves out ``__pycache__`` directories (what a local
    server or an in-process import wrote into a repository, never part of a build)."""
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and not (skip_bytecode and "__pycache__" in p.parts)}

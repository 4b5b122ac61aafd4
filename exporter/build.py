"""``exporter build``: plans -> one artefact per model (the export step) -> a published Triton repository.

Everything is produced inside the repository's staging directory (see :func:`exporter.triton.repository.staging`), so a
failed quality gate, a crash or a SIGKILL half-way leaves the previously published repository exactly as it was.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ExportError, ModelError
from .plan import Plan
from .triton.config import ServingOptions, check_options
from .triton.repository import ModelEntry, assemble, publish, published_versions, staging

log = logging.getLogger(__name__)

ARTEFACTS = ".artefacts"


@dataclass(frozen=True)
class BuildResult:
    """What a build published: where (a local directory, or the build's URL in an object store), the manifest it
    wrote, and how long it took."""

    repository: Path | str
    manifest: dict[str, Any]
    seconds: float


def build_repository(plans: list[Plan], model_dirs: Mapping[str, object], repository: Path,
                     options: ServingOptions = ServingOptions(), export_options: Any = None) -> BuildResult:
    """Export every planned model and publish the repository atomically; raises before publishing on any error.

    ``model_dirs`` maps model id -> local directory (or the ModelError that says why it is unavailable), as
    :func:`exporter.cli.context.load_context` gives it.
    """
    for plan in plans:
        check_options(plan, options)
    from .artefact import ExportOptions, export_artefact  # heavy (torch, transformers): after checks

    start = time.perf_counter()
    previous = published_versions(Path(repository))
    try:
        with staging(Path(repository)) as root:
            entries = []
            for plan in plans:
                model_dir = model_dirs[plan.model]
                if isinstance(model_dir, ModelError):
                    raise model_dir
                log.info("exporting %s as %s (%s, %s)", plan.model, plan.name, plan.precision, plan.route)
                artefact = export_artefact(plan, Path(model_dir), root / ARTEFACTS,
                                           export_options or ExportOptions())
                entries.append(ModelEntry(plan, artefact))
            manifest = assemble(root, entries, options, previous)
            shutil.rmtree(root / ARTEFACTS, ignore_errors=True)
            publish(root, Path(repository))
    except OSError as exc:  # full disk, read-only or unwritable location: say where and what to do
        raise ExportError(_file_system_error(exc, Path(repository))) from exc
    seconds = time.perf_counter() - start
    log.info("built %s (%d model(s)) in %.1f s", repository, len(plans), seconds)
    return BuildResult(Path(repository).absolute(), manifest, seconds)


_FS_HINTS = {errno.ENOSPC: "free some space there or choose another --repository",
             errno.EDQUOT: "free some space there or choose another --repository",
             errno.EROFS: "choose a writable --repository", errno.EACCES: "choose a writable --repository",
             errno.EPERM: "choose a writable --repository"}


def _file_system_error(exc: OSError, repository: Path) -> str:
    """'cannot build <repo>: <reason> (<path>); <what to do>' for an OSError raised while building."""
    where = exc.filename or f"writing under {repository.absolute().parent}"
    hint = _FS_HINTS.get(exc.errno or 0, "check the path and the file system")
    return f"cannot build {repository}: {exc.strerror or exc} ({where}); {hint}"

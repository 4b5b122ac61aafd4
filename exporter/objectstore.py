"""Publish built repositories to object storage (``s3://``, ``gs://``, ``as://``) so that readers never see half a one.

Object stores cannot rename a prefix atomically, so a local build's swap-in (:mod:`exporter.atomic`) has no
equivalent there. Instead every build is uploaded under its own immutable prefix, and one small object says which
build is current::

    <root>/builds/<build-id>/...            the repository, as ``exporter build`` wrote it locally
    <root>/builds/<build-id>/build.json     written LAST: every file's size and sha256; its presence = complete
    <root>/CURRENT.json                     the pointer: {"build": <build-id>, ...}, replaced in one PUT

A single-object PUT is atomic in S3, GCS and Azure Blob, so a reader of ``CURRENT.json`` sees the old build or the
new one, never a mix. A killed upload leaves a build without ``build.json``, which nothing points at; the
previous build keeps serving, and ``exporter repo gc`` removes the leftovers.

Triton (the NGC image, built with cloud storage) is pointed at one build's prefix, e.g.
``--model-repository=s3://bucket/emb/builds/<build-id>``: rolling to a new build is a deployment change
(``exporter deploy k8s --repository ...``), never an in-place edit. The Triton binary of the pip wheel used here
has no cloud storage, so ``exporter serve --repository s3://...`` first syncs the current build into a local cache
(:func:`sync`), verifying every hash.

Credentials come from each store's standard environment (``AWS_ACCESS_KEY_ID``/``AWS_ENDPOINT_URL``...,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``) through fsspec's s3fs / gcsfs / adlfs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import remove_stale_staging, staging_name
from .errors import ConfigError, ExportError
from .records import file_records, sha256_of
from .triton.repository import MANIFEST, validate_repository

log = logging.getLogger(__name__)

SCHEMES = {"s3": ("s3", "s3fs"), "gs": ("gcs", "gcsfs"), "as": ("abfs", "adlfs")}  # ours -> (fsspec, package)
POINTER = "CURRENT.json"
BUILDS = "builds"
BUILD_RECORD = "build.json"
_URL = re.compile(r"^(?P<scheme>[a-z0-9]+)://(?P<path>[^\s]+?)/?$")


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` locations (object stores); local paths are False."""
    return "://" in str(location)


@dataclass(frozen=True)
class Store:
    """An object-store root: the fsspec file system and the ``bucket/prefix`` path under which builds live."""

    url: str
    fs: Any
    root: str

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def build_url(self, build_id: str) -> str:
        """What Triton's ``--model-repository`` takes for ``build_id``."""
        return f"{self.url.rstrip('/')}/{BUILDS}/{build_id}"


def open_store(url: str) -> Store:
    """The store for ``url``; a ConfigError naming the URL for an unknown scheme or a missing fsspec backend."""
    match = _URL.match(url)
    if not match or match["scheme"] not in SCHEMES:
        raise ConfigError(f"repository URL {url!r}: expected {', '.join(s + '://bucket/prefix' for s in SCHEMES)}")
    protocol, package = SCHEMES[match["scheme"]]
    import fsspec

    try:
        fs = fsspec.filesystem(protocol, skip_instance_cache=True)  # fresh listings: other writers exist
    except ImportError:
        raise ConfigError(f"{url}: reading {match['scheme']}:// needs the {package} package: pip install "
                          f"'emb-provider[storage]' (or pip install {package})") from None
    return Store(url, fs, match["path"].strip("/"))


@dataclass(frozen=True)
class BuildInfo:
    """One build under a store root, as ``exporter repo ls`` shows it."""

    build_id: str
    complete: bool
    current: bool
    created_at: str | None = None
    models: tuple[str, ...] = ()
    size: int = 0

    @classmethod
    def from_record(cls, build_id: str, record: dict[str, Any], current: bool) -> "BuildInfo":
        """A complete build, from its ``build.json``."""
        return cls(build_id, True, current, record.get("created_at"), tuple(record.get("models", [])),
                   sum(f["bytes"] for f in record.get("files", {}).values()))

    def to_dict(self) -> dict[str, Any]:
        return {"build": self.build_id, "complete": self.complete, "current": self.current,
                "created_at": self.created_at, "models": list(self.models), "bytes": self.size}


def new_build_id() -> str:
    """``<UTC time to the microsecond>-<8 random hex>``: sorts by time, and two publishes never share a prefix (not
    even of the same content in the same second from two machines: each build's prefix is immutable)."""
    seconds, micro = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(seconds))}.{micro:06d}Z-{secrets.token_hex(4)}"


def publish(local: Path, url: str) -> BuildInfo:
    """Upload the complete, validated repository ``local`` as a new build, then point ``CURRENT.json`` at it.

    Order is what makes it safe: files, then ``build.json`` (the completeness marker), then a check that every
    object is there at its size, then the pointer. Any failure before the pointer leaves the current build as it
    was; the error says so.
    """
    local = Path(local)
    validate_repository(local)
    return upload(local, open_store(url), json.loads((local / MANIFEST).read_text(encoding="utf-8")))


def upload(local: Path, store: Store, manifest: dict[str, Any]) -> BuildInfo:
    """:func:`publish` of a repository already validated, with its ``manifest`` (``exporter build`` has both)."""
    url = store.url
    build_id = new_build_id()
    files = file_records(local, skip_bytecode=True)
    record = {"build": build_id, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "models": [m["name"] for m in manifest.get("models", [])], "files": files}
    try:
        for rel in files:
            store.fs.put_file(str(local / rel), store.path(BUILDS, build_id, rel))
        store.fs.pipe_file(store.path(BUILDS, build_id, BUILD_RECORD), json.dumps(record, indent=1).encode())
        _check_uploaded(store, build_id, files)
        pointer = {"build": build_id, "url": store.build_url(build_id), "updated_at": record["created_at"]}
        store.fs.pipe_file(store.path(POINTER), json.dumps(pointer).encode())
    except (OSError, ValueError) as exc:
        raise ExportError(f"publishing to {url} failed ({exc}); {POINTER} was not changed, so the current build "
                          f"keeps serving; 'exporter repo gc {url}' removes the partial upload") from exc
    log.info("published %s as build %s (%d files)", url, build_id, len(files))
    return BuildInfo.from_record(build_id, record, current=True)


def _check_uploaded(store: Store, build_id: str, files: dict[str, dict[str, Any]]) -> None:
    prefix = store.path(BUILDS, build_id) + "/"
    listed = {info["name"][len(prefix):]: info["size"] for info in store.fs.find(prefix, detail=True).values()}
    wrong = [rel for rel, meta in files.items() if listed.get(rel) != meta["bytes"]]
    if wrong:
        raise ValueError(f"{len(wrong)} object(s) missing or of the wrong size after upload, e.g. {wrong[0]}")


def current_build(store: Store) -> str | None:
    """The build id ``CURRENT.json`` names, or None when nothing was published yet."""
    try:
        return str(json.loads(store.fs.cat_file(store.path(POINTER)))["build"])
    except FileNotFoundError:
        return None


def _record(store: Store, build_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.fs.cat_file(store.path(BUILDS, build_id, BUILD_RECORD)))
    except FileNotFoundError:
        return None


def list_builds(url: str) -> list[BuildInfo]:
    """Every build under ``url``, oldest first; incomplete ones (killed uploads) included and marked."""
    return _list_builds(open_store(url))


def _list_builds(store: Store) -> list[BuildInfo]:
    current = current_build(store)
    try:
        ids = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(store.path(BUILDS), detail=False))
    except FileNotFoundError:
        ids = []
    builds = []
    for build_id in ids:
        record = _record(store, build_id)
        builds.append(BuildInfo(build_id, False, build_id == current) if record is None
                      else BuildInfo.from_record(build_id, record, build_id == current))
    return builds


def gc(url: str, keep: int = 3, min_age: float = 3600.0) -> list[str]:
    """Delete builds nobody points at: complete ones beyond the newest ``keep``, and incomplete ones older than
    ``min_age`` seconds (younger ones may be uploads in progress). The current build is never deleted."""
    if keep < 1:
        raise ConfigError(f"--keep {keep}: expected >= 1 (the current build is always kept)")
    store = open_store(url)
    builds = _list_builds(store)
    complete = [b for b in builds if b.complete and not b.current]
    survivors = {b.build_id for b in complete[-(keep - 1):]} if keep > 1 else set()
    doomed = [b.build_id for b in complete if b.build_id not in survivors]
    for build in builds:
        if not build.complete and not build.current and _age(store, build.build_id) >= min_age:
            doomed.append(build.build_id)
    for build_id in doomed:
        store.fs.rm(store.path(BUILDS, build_id), recursive=True)
        log.info("deleted build %s from %s", build_id, url)
    return doomed


def _age(store: Store, build_id: str) -> float:
    """Seconds since the newest object of an incomplete build was written (its upload may still be running)."""
    infos = store.fs.find(store.path(BUILDS, build_id), detail=True).values()
    stamps = [info.get("LastModified") or info.get("mtime") for info in infos]
    stamps = [s.timestamp() if hasattr(s, "timestamp") else float(s) for s in stamps if s is not None]
    return time.time() - max(stamps) if stamps else float("inf")


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emb-provider" / "repositories"


def sync(url: str, cache: Path | None = None, build_id: str | None = None) -> Path:
    """A local copy of the current (or the given) build, every file checked against ``build.json``'s sha256.

    The copy lands in ``<cache>/<build-id>`` through a temporary sibling and a rename, so a half-downloaded build
    is never served; an existing verified copy is reused, and partial copies of killed syncs are removed.
    """
    store = open_store(url)
    build_id = build_id or current_build(store)
    if build_id is None:
        raise ConfigError(f"{url} has no {POINTER}: nothing was published there yet ('exporter build "
                          f"--repository {url}' publishes one)")
    record = _record(store, build_id)
    if record is None:
        raise ConfigError(f"{url}: build {build_id} is incomplete (no {BUILD_RECORD}); choose a complete one "
                          f"from 'exporter repo ls {url}'")
    cache = Path(cache or default_cache()) / hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache / build_id
    if (target / BUILD_RECORD).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)  # a sync killed mid-download (SIGKILL, power) left its partial copy here
    tmp = Path(tempfile.mkdtemp(prefix=f"{staging_name(target)}.", dir=cache))
    try:
        for rel, meta in record["files"].items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.fs.get_file(store.path(BUILDS, build_id, rel), str(dest))
            if sha256_of(dest) != meta["sha256"]:
                raise ExportError(f"{url}: {rel} of build {build_id} does not match its sha256 in {BUILD_RECORD}")
        (tmp / BUILD_RECORD).write_text(json.dumps(record), encoding="utf-8")
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synced build %s of %s to %s", build_id, url, target)
    return target

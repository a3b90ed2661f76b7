"""The artifact download cache: `download(ref)` → a verified local folder.

Layout under the root (`WANDB_ARTIFACT_DIR`, else the user cache dir):

- `<entity or local>/<project>/<name>/<version>/` — complete versions only. Each holds
  `.evalwb-complete.json`: the version and every file's size, mtime and digest.
- `.partial/<same path>/` — a download in progress, on the same filesystem so that
  one `rename` publishes it. Its `.evalwb-journal.jsonl` lists the files already
  verified, so a rerun after a crash, a pause or a cancel fetches only the rest; a file
  cut short there is continued from its last byte (a ranged GET for W&B URLs, parts for
  `s3://`), and fetched whole again only when the finished file fails its digest.
- `.locks/<same path>.lock` — `flock`ed by the process downloading that version.
- `.aliases/<ref>.json` — which version an alias last resolved to, and when, for the
  offline fallback.

Digests are checked once, when a file arrives: md5 for stored files and `file://`
references, size and ETag for `s3://` references (a multipart ETag `<hex>-N` is no
content md5, so only the size and the ETag the server returns can be compared). A hit
then compares size and mtime with the marker, so it costs a few `stat` calls however
large the checkpoint is; `verify=True` re-hashes.

W&B stored files stream straight into this cache, so their bytes are stored once; only
with `WANDB_CACHE_SKIP=false` does W&B's own artifact cache serve them by md5 and keep a
copy of each one fetched.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlparse

from tui.services import s3
from tui.services.refs import ArtifactRef, parse_ref
from tui.services.registry.protocol import FileEntry, NotFoundError, RegistryError, Version

if TYPE_CHECKING:
    from tui.services.registry.protocol import Registry
    from tui.services.settings import Settings

MARKER = ".evalwb-complete.json"
JOURNAL = ".evalwb-journal.jsonl"
PARTIAL_DIR = ".partial"
LOCKS_DIR = ".locks"
ALIASES_DIR = ".aliases"
RESERVED = frozenset({MARKER, JOURNAL})
COPY_CHUNK = 8 * 1024 * 1024
HTTP_ATTEMPTS = 4
# Refused or throttled answers worth asking again with fresh URLs (an expired signed URL
# is refused: 400 `ExpiredToken` from GCS, 403 from S3-style stores).
HTTP_RETRY_CODES = frozenset({401, 403, 408, 429})
EXPIRED_MARKERS = (b"ExpiredToken", b"expired")
DEFAULT_POLL_SECONDS = 10.0
LOCK_POLL_SECONDS = 0.05
LOCAL_ENTITY = "local"


class DownloadError(RegistryError):
    """A download cannot be done; the message says why and what to fix, in one line."""


class DownloadCancelled(DownloadError):
    """The caller cancelled the download; what was verified so far is kept."""


class UnsafePathError(DownloadError):
    """A manifest path is absolute or climbs out of the version folder."""


class CheckpointError(DownloadError):
    """The version folder does not hold exactly one `config.json`."""


@runtime_checkable
class EntryDownloader(Protocol):
    """A backend that serves the bytes of its stored files (the W&B backend).

    `download_entry` writes the bytes of `entry` of version `ref` to `dest`, calling
    `progress(n)` with every `n` bytes written. The cache verifies the md5 afterwards.
    """

    def download_entry(
        self, ref: ArtifactRef, entry: FileEntry, dest: Path, progress: Callable[[int], None]
    ) -> None: ...


@runtime_checkable
class FileUrlSource(Protocol):
    """A backend that hands out download URLs of its stored files (the W&B backend).

    The URLs may be signed and expire, so they are asked for right before use and
    asked for again when one is refused.
    """

    def file_urls(self, ref: ArtifactRef | str) -> dict[str, str]: ...


@runtime_checkable
class ObjectStore(Protocol):
    """A backend whose stored files are already on this machine (the local registry)."""

    def object_path(self, entry: FileEntry) -> Path: ...


@dataclass(frozen=True)
class DownloadProgress:
    """One progress event. `phase` is resolving, waiting, locked, verifying, downloading
    or done. `path` is the file the event is about, with `file_done` of its `file_size`
    bytes; `done` of `total` counts the bytes this call transfers; `kept` is what an
    earlier, stopped call left verified or written (so `kept + done` of `kept + total` is
    the whole version's progress); `seconds_left` is set while waiting for an artifact.
    """

    phase: str
    message: str = ""
    path: str = ""
    file_done: int = 0
    file_size: int = 0
    done: int = 0
    total: int = 0
    files_done: int = 0
    files_total: int = 0
    seconds_left: float | None = None
    kept: int = 0


@dataclass(frozen=True)
class DownloadResult:
    """What `download` returns. `path` is the checkpoint folder (or the version folder)."""

    path: Path
    folder: Path
    version: Version
    digest: str
    bytes: int
    files: int
    cache_hit: bool
    seconds: float
    offline_warning: str | None = None
    local_twin: bool = False
    # The `-local` twin (`name-local:vN`) whose files were used in place, if any.
    twin: str | None = None
    # Set when the twin and the named version disagree (or the named one is missing):
    # one line saying which was used.
    twin_note: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields a script wants, as JSON-ready values."""
        return {
            "path": str(self.path),
            "folder": str(self.folder),
            "ref": str(self.version.ref()),
            "version": self.version.version,
            "digest": self.digest,
            "bytes": self.bytes,
            "files": self.files,
            "cache_hit": self.cache_hit,
            "seconds": round(self.seconds, 4),
            "offline_warning": self.offline_warning,
            "local_twin": self.local_twin,
            "twin": self.twin,
            "twin_note": self.twin_note,
        }


ProgressCallback = Callable[[DownloadProgress], None]


def cache_root(settings: Settings) -> Path:
    """The download root: `WANDB_ARTIFACT_DIR` if set, else the user cache dir."""
    return settings.artifact_dir


def ensure_root(root: Path, name: str) -> Path:
    """Create the download root and its lock folder; DownloadError naming `name`, the
    option or variable that chose `root`, when it cannot be used."""
    try:
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        (root / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
        if not os.access(root / LOCKS_DIR, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "it is not writable")
    except OSError as exc:
        reason = exc.strerror or " ".join(str(exc).split())
        raise DownloadError(f"{name} {root}: cannot create the cache folder ({reason})") from None
    return root


def version_folder(root: Path, version: Version) -> Path:
    """`<root>/<entity or local>/<project>/<name>/<version>` for `version`."""
    return root / _relative(version)


def _relative(version: Version) -> Path:
    return Path(
        version.entity or LOCAL_ENTITY, version.project, version.collection, version.version
    )


def download(
    ref: ArtifactRef | str,
    *,
    registry: Registry,
    settings: Settings,
    root: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    verify: bool = False,
    checkpoint: bool = True,
    poll_interval: float = DEFAULT_POLL_SECONDS,
    clock: ModuleType | Any = time,
) -> DownloadResult:
    """Bring the version `ref` names into the cache and return its folder.

    The alias is resolved on the named collection. Its `-local` twin's `file://` files
    are used in place (no copy) when the twin holds the same files as the named version,
    when the user named the twin, or when the named version does not exist; when the twin
    differs, the named version is fetched and `twin_note` says so. With the named version
    missing and the twin's files missing too, waits up to
    `WANDB_ARTIFACT_WAIT_TIMEOUT_SEC` for the named version.
    With `checkpoint`, `path` is the single folder holding `config.json`
    (CheckpointError when there is none or several); else the version folder.
    Falls back to the cached version, with `offline_warning`, when the registry cannot
    be reached and the alias was resolved before. `progress` may be called from worker
    threads; setting `cancel` stops the download with DownloadCancelled, keeping the
    files verified so far for the next call.
    """
    started = clock.monotonic()
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    root_given = root
    root = Path(root) if root is not None else cache_root(settings)
    job = _Job(ref, registry, settings, root, _Reporter(progress), cancel, clock, started)
    job.report.emit("resolving", f"resolving {ref}")
    try:
        twin = _prefer_local_twin(job, checkpoint, poll_interval)
        if twin is not None:
            return twin
        version = registry.resolve(ref)
        entries = registry.files(version.ref())
    except NotFoundError:
        raise
    except (RegistryError, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        return _offline(job, exc, checkpoint)
    ensure_root(job.root, "WANDB_ARTIFACT_DIR" if root_given is None else "cache root")
    result = _fetch_version(job, version, entries, verify=verify)
    _record_alias(root, ref, version)
    return _finish(job, result, entries, checkpoint)


@dataclass
class _Job:
    ref: ArtifactRef
    registry: Registry
    settings: Settings
    root: Path
    report: _Reporter
    cancel: threading.Event | None
    clock: Any
    started: float
    urls: dict[str, str] = field(default_factory=dict)
    twin_note: str | None = None

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(f"download of {self.ref} cancelled")

    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started


class _Reporter:
    """Counts bytes from any thread and forwards events to the caller's callback.

    Events are built and delivered under one lock, so the caller sees `done` grow
    monotonically even when several worker threads report at once.
    """

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.lock = threading.RLock()
        self.done = 0
        self.total = 0
        self.files_done = 0
        self.files_total = 0
        self.kept = 0
        self.sizes: dict[str, int] = {}
        self.per_file: dict[str, int] = {}
        self.prefixes: dict[str, int] = {}

    def start(
        self,
        entries: Sequence[FileEntry],
        files_total: int,
        present: dict[str, int],
        verified: int = 0,
    ) -> None:
        """Begin counting: `entries` to fetch, of which `present` bytes are already here,
        beside `verified` bytes of whole files no longer to fetch."""
        with self.lock:
            self.sizes = {e.path: e.size for e in entries}
            self.per_file = dict(present)
            self.prefixes = dict(present)
            self.total = sum(self.sizes.values()) - sum(present.values())
            self.kept = verified + sum(present.values())
            self.files_total = files_total
            self.files_done = files_total - len(entries)

    def emit(self, phase: str, message: str = "", path: str = "", **extra: Any) -> None:
        if self.callback is None:
            return
        with self.lock:
            event = DownloadProgress(
                phase=phase,
                message=message,
                path=path,
                file_done=self.per_file.get(path, 0),
                file_size=self.sizes.get(path, 0),
                done=self.done,
                total=self.total,
                files_done=self.files_done,
                files_total=self.files_total,
                kept=self.kept,
                **extra,
            )
            self.callback(event)

    def add_bytes(self, path: str, n: int) -> None:
        with self.lock:
            self.done += n
            self.per_file[path] = self.per_file.get(path, 0) + n
            self.emit("downloading", path=path)

    def restart_file(self, path: str) -> None:
        """`path` is fetched again from its first byte: neither what this call wrote of it
        nor what an earlier one left counts any more."""
        with self.lock:
            prefix = self.prefixes.pop(path, 0)
            self.done -= self.per_file.get(path, 0) - prefix
            self.total += prefix
            self.kept -= prefix
            self.per_file[path] = 0

    def file_done(self, path: str) -> None:
        with self.lock:
            self.files_done += 1
            self.emit("downloading", f"verified {path}", path=path)


# -- -local twins -------------------------------------------------------------------


def _prefer_local_twin(job: _Job, checkpoint: bool, poll_interval: float) -> DownloadResult | None:
    """The twin's folder when its files are all there and it may stand in for the named
    version; else None, after waiting for the named version while it is missing and the
    twin's files are too (eval-framework's WANDB_ARTIFACT_WAIT_TIMEOUT_SEC)."""
    if job.ref.is_local_twin:
        return _twin_in_place(job, job.ref, checkpoint)  # asked for the twin itself
    twin_ref = job.ref.local_twin()
    try:
        twin = job.registry.resolve(twin_ref)
    except NotFoundError:
        return None
    entries = job.registry.files(twin.ref())
    missing = [e for e in entries if not _local_ref_present(e)]
    try:
        named = job.registry.resolve(job.ref)
    except NotFoundError:
        named = None
    if named is None and missing:
        _wait_for_real(job, twin_ref, missing, poll_interval)
        return None
    if named is None:
        # Not published yet: the twin is all there is, as eval-framework uses it.
        note = f"{job.ref} does not exist; used its twin {twin_ref.name}:{twin.version}"
        return _in_place(job, twin, twin_ref, entries, checkpoint, note=note)
    if _same_content(entries, job.registry.files(named.ref())):
        if missing:
            return None  # the same checkpoint, but not on this disk: fetch the named one
        return _in_place(job, named, twin_ref, entries, checkpoint, twin=twin)
    job.twin_note = (
        f"{twin_ref} is {twin.version}, whose files differ from {job.ref} ({named.version}); "
        f"used {named.collection}:{named.version}"
    )
    return None


def _twin_in_place(job: _Job, ref: ArtifactRef, checkpoint: bool) -> DownloadResult | None:
    """The twin the user named, in place when its files are all there; else None (copy
    what it refers to, or say what is gone)."""
    twin = job.registry.resolve(ref)
    entries = job.registry.files(twin.ref())
    if not all(_local_ref_present(e) for e in entries):
        return None
    return _in_place(job, twin, ref, entries, checkpoint, twin=twin)


def _in_place(
    job: _Job,
    version: Version,
    twin_ref: ArtifactRef,
    entries: Sequence[FileEntry],
    checkpoint: bool,
    *,
    twin: Version | None = None,
    note: str | None = None,
) -> DownloadResult:
    """`version`, served by the twin's files where they lie, copying nothing."""
    folder = _twin_folder(twin_ref, entries)
    shown = twin or version
    result = DownloadResult(
        path=folder,
        folder=folder,
        version=version,
        digest=version.digest,
        bytes=0,
        files=len(entries),
        cache_hit=True,
        seconds=0.0,
        local_twin=True,
        twin=f"{shown.collection}:{shown.version}",
        twin_note=note,
    )
    return _finish(job, result, entries, checkpoint)


def _same_content(twin: Sequence[FileEntry], named: Sequence[FileEntry]) -> bool:
    """Whether two manifests hold the same files: paths, sizes and digests."""

    def files(entries: Sequence[FileEntry]) -> set[tuple[str, int, str]]:
        return {(e.path, e.size, e.digest) for e in entries}

    return files(twin) == files(named)


def download_candidate(ref: ArtifactRef | str, registry: Registry) -> Version:
    """The version a download of `ref` starts from: the named one, else its `-local` twin
    (which stands in for a version not published yet); NotFoundError, naming `ref`,
    when neither exists."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    try:
        return registry.resolve(ref)
    except NotFoundError:
        if ref.is_local_twin:
            raise
        try:
            return registry.resolve(ref.local_twin())
        except NotFoundError:
            pass
        raise


def _local_path(entry: FileEntry) -> Path | None:
    if entry.ref is None or not entry.ref.startswith("file://"):
        return None
    return Path(unquote(urlparse(entry.ref).path))


def _local_ref_present(entry: FileEntry) -> bool:
    path = _local_path(entry)
    try:
        return path is not None and path.stat().st_size == entry.size
    except OSError:
        return False


def _twin_folder(twin_ref: ArtifactRef, entries: Sequence[FileEntry]) -> Path:
    """The one folder the twin's files were registered from."""
    bases = set()
    for entry in entries:
        local = _local_path(entry)
        assert local is not None  # checked by _local_ref_present
        tail = PurePosixPath(entry.path).parts
        if local.parts[-len(tail) :] != tail:
            raise DownloadError(
                f"{twin_ref}: {entry.path} refers to {local}, which does not end in that path"
            )
        bases.add(Path(*local.parts[: -len(tail)]))
    if len(bases) != 1:
        shown = ", ".join(sorted(str(b) for b in bases)[:3])
        raise DownloadError(f"{twin_ref} refers to files in several folders ({shown})")
    return bases.pop()


def _wait_for_real(
    job: _Job, twin_ref: ArtifactRef, missing: Sequence[FileEntry], poll_interval: float
) -> None:
    """Poll for the real artifact until it exists or the wait timeout passes."""
    timeout = job.settings.wandb_artifact_wait_timeout_sec
    deadline = job.clock.monotonic() + timeout
    example = _local_path(missing[0]) or missing[0].path
    while True:
        note = ""
        try:
            job.registry.resolve(job.ref)
            return
        except NotFoundError:
            pass
        except (RegistryError, OSError) as exc:
            # A blip during an hour-long wait is no reason to give up the wait.
            note = f" (last check failed: {' '.join(str(exc).split())[:200]})"
        left = deadline - job.clock.monotonic()
        if left <= 0:
            raise DownloadError(
                f"{job.ref} did not appear within {timeout:g} s "
                f"(WANDB_ARTIFACT_WAIT_TIMEOUT_SEC), and its twin {twin_ref} misses "
                f"{len(missing)} file(s), e.g. {example}{note}"
            )
        job.report.emit(
            "waiting",
            f"waiting for {job.ref}: {twin_ref} misses {len(missing)} file(s), e.g. "
            f"{example}; {left:.0f} s left{note}",
            seconds_left=left,
        )
        job.check_cancel()
        delay = max(0.0, min(poll_interval, left))
        if job.cancel is not None:
            job.cancel.wait(delay)  # wakes at once on cancel
        else:
            job.clock.sleep(delay)
        job.check_cancel()


# -- the version folder -------------------------------------------------------------


def check_paths(ref: ArtifactRef | str, entries: Iterable[FileEntry]) -> None:
    """UnsafePathError for a manifest path that is absolute, climbs out, is reserved or
    is not written in its one normal form."""
    seen: set[str] = set()
    for entry in entries:
        why = path_problem(entry.path)
        if why is None and entry.path in seen:
            why = "appears twice in the manifest"
        if why:
            raise UnsafePathError(
                f"refusing to download {ref}: its manifest path {entry.path!r} {why}"
            )
        seen.add(entry.path)


def path_problem(path: str) -> str | None:
    """What makes `path` unusable as a file's place under a version folder, in a few
    words; None for a plain relative path in normal form (`a/b`, never `a//b`, `a/./b`,
    `./a` or `a/`: each names the file another way than the folder listing does)."""
    parts = path.split("/")
    if not path or path.startswith(("/", "\\")) or PurePosixPath(path).is_absolute():
        return "is absolute" if path else "is empty"
    if ".." in parts or ".." in path.split("\\"):
        return "climbs out of the version folder with '..'"
    if any(part in ("", ".") for part in parts):
        return "is not in normal form (an empty or '.' part)"
    if ":" in parts[0] or "\0" in path:
        return "is not a plain relative path"
    if parts[-1] in RESERVED or parts[0] in (PARTIAL_DIR, LOCKS_DIR):
        return "uses a name the cache reserves"
    return None


def _fetch_version(
    job: _Job, version: Version, entries: Sequence[FileEntry], *, verify: bool
) -> DownloadResult:
    check_paths(job.ref, entries)
    final = version_folder(job.root, version)
    hit = _hit(job, final, version, entries)
    if hit is not None and not verify:
        return hit
    with _locked(job, _relative(version)):
        # Another process may have finished it while this one waited for the lock.
        hit = _hit(job, final, version, entries)
        if hit is not None and (not verify or _rehash_ok(job, final, version, entries)):
            return hit
        partial = job.root / PARTIAL_DIR / _relative(version)
        _adopt_stale(final, partial, entries)
        transferred = _fill(job, partial, version, entries)
        _publish(partial, final, version, entries)
    return DownloadResult(
        path=final,
        folder=final,
        version=version,
        digest=version.digest,
        bytes=transferred,
        files=len(entries),
        cache_hit=False,
        seconds=job.elapsed(),
    )


def _hit(
    job: _Job, final: Path, version: Version, entries: Sequence[FileEntry]
) -> DownloadResult | None:
    """A result when the marker matches every file's size and mtime; no byte is read."""
    marker = read_marker(final)
    if marker is None or not _marker_matches(marker, final, version, entries):
        return None
    return DownloadResult(
        path=final,
        folder=final,
        version=version,
        digest=version.digest,
        bytes=0,
        files=len(entries),
        cache_hit=True,
        seconds=job.elapsed(),
    )


def _rehash_ok(job: _Job, final: Path, version: Version, entries: Sequence[FileEntry]) -> bool:
    """Re-hash a complete folder; on damage unpublish it, keeping the good files."""
    job.report.emit("verifying", f"re-hashing {len(entries)} file(s) of {version.version}")
    bad = {e.path for e in entries if not _content_ok(final / e.path, e)}
    if not bad:
        return True
    _remove_marker(final, keep={e.path for e in entries} - bad)
    return False


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a version folder, or None if absent or unreadable."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _marker_matches(
    marker: dict[str, Any], folder: Path, version: Version, entries: Sequence[FileEntry]
) -> bool:
    files = marker["files"]
    if marker.get("version") != version.version or len(files) != len(entries):
        return False
    for entry in entries:
        recorded = files.get(entry.path)
        if not recorded or recorded.get("digest") != entry.digest:
            return False
        if not _stat_matches(folder / entry.path, recorded):
            return False
    return True


def _stat_matches(path: Path, recorded: dict[str, Any]) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == recorded.get("size") and st.st_mtime_ns == recorded.get("mtime_ns")


def _file_record(path: Path, entry: FileEntry) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": entry.digest}


def _remove_marker(final: Path, keep: set[str]) -> None:
    """Turn a published folder's marker into a journal of the files still good, and
    delete the others: they were whole once, so they are damaged, not cut short."""
    marker = read_marker(final) or {"files": {}}
    with (final / JOURNAL).open("w") as fh:
        for path, record in marker["files"].items():
            if path in keep:
                fh.write(json.dumps({"path": path, **record}) + "\n")
            else:
                (final / path).unlink(missing_ok=True)
    (final / MARKER).unlink(missing_ok=True)


@contextmanager
def _locked(job: _Job, relative: Path) -> Iterator[None]:
    """Hold an exclusive flock for one version; report while another process has it."""
    lock_path = job.root / LOCKS_DIR / relative.with_name(relative.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    job.report.emit("locked", f"another process is downloading {relative}")
                    told = True
                job.check_cancel()
                time.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _adopt_stale(final: Path, partial: Path, entries: Sequence[FileEntry]) -> None:
    """Move a published but damaged folder back to partial, keeping its good files."""
    if not final.exists():
        return
    marker = read_marker(final)
    if marker is not None:
        good = {
            e.path
            for e in entries
            if (r := marker["files"].get(e.path))
            and r.get("digest") == e.digest
            and _stat_matches(final / e.path, r)
        }
        _remove_marker(final, keep=good)
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    os.rename(final, partial)


@dataclass
class _Journal:
    """What an interrupted run left verified in a partial folder.

    Lines are JSON: a whole file (`path`, size, mtime, digest); one S3 part of a file
    (`part`, start, end, etag); or `reset`, written before a file is fetched again, which
    voids every earlier line about that file. (A file that is not `s3://` needs no parts:
    the bytes it holds are its prefix, checked by its md5 once it is complete.)
    """

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: dict[str, set[tuple[int, int, str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, partial: Path) -> _Journal:
        journal = cls()
        try:
            lines = (partial / JOURNAL).read_text().splitlines()
        except OSError:
            return journal
        for line in lines:
            try:
                journal._apply(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a crash: its file or part is fetched again
        return journal

    def _apply(self, record: dict[str, Any]) -> None:
        if "reset" in record:
            self.files.pop(record["reset"], None)
            self.parts.pop(record["reset"], None)
        elif "part" in record:
            part = (int(record["start"]), int(record["end"]), str(record["etag"]))
            self.parts.setdefault(record["part"], set()).add(part)
        else:
            self.files[record["path"]] = record

    def complete(self, partial: Path, entry: FileEntry) -> bool:
        """True when `entry` was verified whole and is unchanged since."""
        record = self.files.get(entry.path)
        return (
            bool(record)
            and record.get("digest") == entry.digest
            and _stat_matches(partial / entry.path, record)
        )

    def present(self, partial: Path, entry: FileEntry) -> frozenset[tuple[int, int]]:
        """The S3 parts of `entry` already written, if its file still has its full size."""
        try:
            if (partial / entry.path).stat().st_size != entry.size:
                return frozenset()
        except OSError:
            return frozenset()
        parts = self.parts.get(entry.path, set())
        return frozenset((start, end) for start, end, etag in parts if etag == entry.digest)


class _JournalWriter:
    """Appends journal lines; flushed at once, since a crash may come at any moment."""

    def __init__(self, partial: Path) -> None:
        self.partial = partial
        self.fh = (partial / JOURNAL).open("a")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def reset(self, entry: FileEntry) -> None:
        self.write({"reset": entry.path})

    def part(self, entry: FileEntry, start: int, end: int) -> None:
        self.write({"part": entry.path, "start": start, "end": end, "etag": entry.digest})

    def file(self, entry: FileEntry) -> None:
        self.write({"path": entry.path, **_file_record(self.partial / entry.path, entry)})

    def close(self) -> None:
        self.fh.close()


def _fill(job: _Job, partial: Path, version: Version, entries: Sequence[FileEntry]) -> int:
    """Fetch every entry not yet verified into `partial`; the bytes transferred."""
    partial.mkdir(parents=True, exist_ok=True)
    journal = _Journal.read(partial)
    todo = [e for e in entries if not journal.complete(partial, e)]
    remote = [e for e in todo if e.ref is not None and e.ref.startswith(s3.SCHEME)]
    present = {e.path: journal.present(partial, e) for e in remote}
    already = {p: sum(end - start for start, end in r) for p, r in present.items()}
    already |= {e.path: _cut_short(partial / e.path, e) for e in todo if e not in remote}
    _check_space(job, partial, sum(e.size for e in todo) - sum(already.values()))
    verified = sum(e.size for e in entries) - sum(e.size for e in todo)
    job.report.start(todo, len(entries), already, verified)
    job.report.emit(
        "downloading", f"{version.collection}:{version.version}: {len(todo)} file(s) to fetch"
    )
    log = _JournalWriter(partial)
    try:
        for entry in todo:
            if not present.get(entry.path):
                log.reset(entry)
        if remote:
            _fetch_s3(job, partial, remote, present, log)
        for entry in todo:
            if entry not in remote:
                job.check_cancel()
                _fetch_one(job, version, entry, partial / entry.path)
                log.file(entry)
                job.report.file_done(entry.path)
    finally:
        log.close()
    return job.report.done


def _check_space(job: _Job, partial: Path, needed: int) -> None:
    """Refuse to start what cannot fit, rather than fail with a full disk halfway."""
    free = shutil.disk_usage(partial).free
    if needed > free:
        raise DownloadError(
            f"{job.ref} needs {needed / 2**30:.1f} GiB more but {partial.parent} has "
            f"{free / 2**30:.1f} GiB free; free space or set WANDB_ARTIFACT_DIR elsewhere"
        )


def _fetch_s3(
    job: _Job,
    partial: Path,
    entries: Sequence[FileEntry],
    present: dict[str, frozenset[tuple[int, int]]],
    log: _JournalWriter,
) -> None:
    """All s3:// entries at once through one pool of ranged GETs, journaling each part."""

    def done(item: s3.ObjectJob) -> None:
        log.file(item.tag)
        job.report.file_done(item.tag.path)

    try:
        client = s3.make_client(job.settings)
        jobs = [
            s3.ObjectJob(
                e.ref or "", partial / e.path, e.size, e.digest, tag=e, present=present[e.path]
            )
            for e in entries
        ]
        s3.download_objects(
            jobs,
            client,
            on_bytes=lambda item, n: job.report.add_bytes(item.tag.path, n),
            on_part=lambda item, start, end: log.part(item.tag, start, end),
            on_done=done,
            cancel=job.cancel,
        )
    except s3.S3Cancelled:
        job.check_cancel()
        raise
    except s3.S3Error as exc:
        raise DownloadError(f"{job.ref}: {exc}") from None


def _cut_short(path: Path, entry: FileEntry) -> int:
    """The bytes a stopped fetch left in `path`, if they may be a prefix of `entry`."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    return size if size <= entry.size else 0


def _kept_prefix(job: _Job, dest: Path, entry: FileEntry) -> tuple[int, Any]:
    """How many bytes of `dest` to keep, and an md5 fed with them.

    They are trusted only as far as the md5 of the finished file: a prefix a crash left
    damaged makes that check fail, and the file is then fetched whole.
    """
    hasher = hashlib.md5()
    kept = _cut_short(dest, entry)
    if not kept:
        return 0, hasher
    job.report.emit("verifying", f"reading the {kept} bytes of {entry.path} kept", path=entry.path)
    with dest.open("rb") as fh:
        while chunk := fh.read(COPY_CHUNK):
            job.check_cancel()
            hasher.update(chunk)
    return kept, hasher


def _fetch_one(job: _Job, version: Version, entry: FileEntry, dest: Path) -> None:
    """Fetch one stored file or file:// reference to `dest`, continuing what an earlier
    call left of it, and check its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset, hasher = _kept_prefix(job, dest, entry)
    digest = _fetch_from(job, version, entry, dest, offset, hasher)
    if digest != entry.digest and offset:
        job.report.restart_file(entry.path)
        digest = _fetch_from(job, version, entry, dest, 0, hashlib.md5())
    if digest != entry.digest:
        dest.unlink(missing_ok=True)
        raise DownloadError(
            f"{job.ref}: {entry.path} has md5 {digest}, not {entry.digest} as the manifest "
            "says; its source changed or is damaged"
        )


def _fetch_from(
    job: _Job, version: Version, entry: FileEntry, dest: Path, offset: int, hasher: Any
) -> str:
    """Bring `entry` to `dest` from its source, past the `offset` bytes `hasher` has
    seen; the base64 md5 of the whole file."""
    if entry.ref is None:
        if isinstance(job.registry, ObjectStore):
            return _copy(job, job.registry.object_path(entry), dest, entry, offset, hasher)
        if isinstance(job.registry, EntryDownloader):
            job.report.restart_file(entry.path)  # it writes the whole file
            job.registry.download_entry(
                version.ref(), entry, dest, lambda n: job.report.add_bytes(entry.path, n)
            )
            return md5_b64_of(dest)
        if isinstance(job.registry, FileUrlSource):
            return _fetch_stored(job, job.registry, version, entry, dest, offset, hasher)
        raise DownloadError(
            f"{job.ref}: this registry backend cannot fetch stored files ({entry.path})"
        )
    if entry.ref.startswith("file://"):
        source = _local_path(entry)
        assert source is not None
        if not source.is_file():
            raise DownloadError(f"{job.ref}: {entry.path} refers to {source}, which is missing")
        return _copy(job, source, dest, entry, offset, hasher)
    scheme = entry.ref.partition("://")[0]
    raise DownloadError(
        f"{job.ref}: {entry.path} is a {scheme}:// reference; only file:// and s3:// "
        "references can be downloaded"
    )


def _fetch_stored(
    job: _Job,
    source: FileUrlSource,
    version: Version,
    entry: FileEntry,
    dest: Path,
    offset: int,
    hasher: Any,
) -> str:
    """A W&B stored file; through W&B's own artifact cache when WANDB_CACHE_SKIP is false.

    The cache is keyed by md5, so a hit is copied instead of fetched, and a verified
    fetch is placed there too, as the user asked W&B to keep its copies.
    """
    if job.settings.wandb_cache_skip:
        return _fetch_url(job, source, version, entry, dest, offset, hasher)
    path, hit, opener = _wandb_cache_slot(job, entry)
    if hit:
        digest = _copy(job, path, dest, entry, offset, hasher)
        if digest == entry.digest:
            return digest
        job.report.restart_file(entry.path)  # a damaged copy: fetch instead
        offset, hasher = 0, hashlib.md5()
    digest = _fetch_url(job, source, version, entry, dest, offset, hasher)
    if digest == entry.digest:
        try:
            with dest.open("rb") as src, opener("wb") as out:
                shutil.copyfileobj(src, out, COPY_CHUNK)
        except OSError as exc:
            raise DownloadError(
                f"cannot store {entry.path} in W&B's artifact cache {path.parent} ({exc}); "
                "fix WANDB_CACHE_DIR or set WANDB_CACHE_SKIP=true"
            ) from None
    return digest


def _wandb_cache_slot(job: _Job, entry: FileEntry) -> tuple[Path, bool, Callable[..., Any]]:
    """Where W&B's artifact cache keeps `entry`, whether it is there, and its writer."""
    from wandb.sdk.artifacts.artifact_file_cache import get_artifact_file_cache

    try:
        path, hit, opener = get_artifact_file_cache().check_digest_obj_path(
            entry.digest, entry.size
        )
    except OSError as exc:
        raise DownloadError(
            f"{job.ref}: W&B's artifact cache cannot be used ({exc}); "
            "fix WANDB_CACHE_DIR or set WANDB_CACHE_SKIP=true"
        ) from None
    return Path(path), hit, opener


def _fetch_url(
    job: _Job,
    source: FileUrlSource,
    version: Version,
    entry: FileEntry,
    dest: Path,
    offset: int,
    hasher: Any,
) -> str:
    """Stream a stored file from its download URL while hashing; the base64 md5.

    The first `offset` bytes, already in `dest` and fed to `hasher`, are not asked for
    again (a ranged GET; a server that ignores the range sends the whole file). A refused
    URL (expired signature) is asked for again; resets and 5xx are retried with backoff,
    each retry continuing from the bytes written so far.
    """
    for attempt in range(1, HTTP_ATTEMPTS + 1):
        if attempt > 1 or not job.urls:
            job.urls = source.file_urls(version.ref())
        url = job.urls.get(entry.path)
        if url is None:
            raise DownloadError(f"{job.ref}: the registry gives no download URL for {entry.path}")
        if attempt > 1:
            offset, hasher = _kept_prefix(job, dest, entry)
        try:
            return _http_copy(job, url, dest, entry, offset, hasher)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            code = exc.code if isinstance(exc, urllib.error.HTTPError) else None
            why = f"HTTP {code}" if code else " ".join(str(exc).split()) or type(exc).__name__
            if code == 400 and _says_expired(exc):
                code = 403  # asked again below, with fresh URLs
            if (code is not None and code < 500 and code not in HTTP_RETRY_CODES) or (
                attempt == HTTP_ATTEMPTS
            ):
                raise DownloadError(f"{job.ref}: cannot download {entry.path}: {why}") from None
            job.check_cancel()
            time.sleep(min(5.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


def _says_expired(error: Any) -> bool:
    """True for a 400 whose body says the signed URL expired (GCS: `ExpiredToken`)."""
    with suppress(OSError, http.client.HTTPException, AttributeError):
        body = error.read(4096) or b""
        return any(marker in body for marker in EXPIRED_MARKERS)
    return False


def _http_copy(job: _Job, url: str, dest: Path, entry: FileEntry, offset: int, hasher: Any) -> str:
    headers = {}
    if offset:
        if offset == entry.size:
            return base64.b64encode(hasher.digest()).decode("ascii")
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    # Unredirected: urllib copies ordinary headers onto a redirect, and the W&B host
    # redirects file URLs to a storage host that must never see the key.
    for name, value in _auth_headers(job.settings, url).items():
        request.add_unredirected_header(name, value)
    with urllib.request.urlopen(request, timeout=60) as response:
        if offset and response.status != http.client.PARTIAL_CONTENT:
            job.report.restart_file(entry.path)  # the range was ignored: the whole file comes
            offset, hasher = 0, hashlib.md5()
        written = _write_from(job, response, dest, entry, offset, hasher)
    if written != entry.size:
        # read(n) returns short data, not an error, when the connection drops early.
        raise ConnectionResetError(f"the response ended after {written} of {entry.size} bytes")
    return base64.b64encode(hasher.digest()).decode("ascii")


def _auth_headers(settings: Settings, url: str) -> dict[str, str]:
    """W&B's key as basic auth, but only for the W&B server itself, never a storage host."""
    base, key = settings.wandb_base_url, settings.wandb_api_key
    if not base or key is None:
        return {}
    target, own = urlparse(url), urlparse(base)
    if (target.scheme, target.netloc) != (own.scheme, own.netloc):
        return {}
    token = base64.b64encode(f"api:{key.reveal()}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _copy(
    job: _Job, source: Path, dest: Path, entry: FileEntry, offset: int = 0, hasher: Any = None
) -> str:
    """Copy from byte `offset` on while hashing, so the bytes are read once; the base64
    md5 of the whole file (`hasher` has seen the first `offset` bytes)."""
    hasher = hashlib.md5() if hasher is None else hasher
    with source.open("rb") as src:
        src.seek(offset)
        _write_from(job, src, dest, entry, offset, hasher)
    return base64.b64encode(hasher.digest()).decode("ascii")


def _write_from(job: _Job, src: Any, dest: Path, entry: FileEntry, offset: int, hasher: Any) -> int:
    """Write what `src` reads to `dest` from byte `offset` on; the size `dest` ends with.

    Each chunk is written before it is counted, so a stop leaves `dest` holding exactly
    the bytes reported, ready to be continued.
    """
    with dest.open("r+b" if offset else "wb") as out:
        out.seek(offset)
        out.truncate()
        while chunk := src.read(COPY_CHUNK):
            job.check_cancel()
            out.write(chunk)
            hasher.update(chunk)
            offset += len(chunk)
            job.report.add_bytes(entry.path, len(chunk))
        # On disk before the journal calls it verified: a resumed download trusts it.
        out.flush()
        os.fsync(out.fileno())
    return offset


def md5_b64_of(path: Path) -> str:
    """The base64 md5 of a file, W&B's manifest digest for stored files."""
    hasher = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(COPY_CHUNK):
            hasher.update(chunk)
    return base64.b64encode(hasher.digest()).decode("ascii")


def _content_ok(path: Path, entry: FileEntry) -> bool:
    """Re-hash one file: md5 where the digest is one, else size (multipart ETags)."""
    try:
        if path.stat().st_size != entry.size:
            return False
        if entry.ref is not None and entry.ref.startswith(s3.SCHEME):
            if s3.is_multipart_etag(entry.digest):
                return True  # no content hash to compare with
            hasher = hashlib.md5()
            with path.open("rb") as fh:
                while chunk := fh.read(COPY_CHUNK):
                    hasher.update(chunk)
            return hasher.hexdigest() == entry.digest.strip('"')
        return md5_b64_of(path) == entry.digest
    except OSError:
        return False


def _publish(partial: Path, final: Path, version: Version, entries: Sequence[FileEntry]) -> None:
    """Drop strays, write the marker, and rename the folder into place in one step.

    A hit trusts size and mtime alone, so after a power loss the marker must never
    stand over data the disk does not hold: every file's data is flushed first, then
    the folders that name them, then the marker, then the rename.
    """
    wanted = {e.path for e in entries}
    folders = []
    for dirpath, _, names in os.walk(partial):
        folders.append(dirpath)
        for name in names:
            rel = Path(dirpath, name).relative_to(partial).as_posix()
            if rel not in wanted and rel != JOURNAL:
                os.unlink(Path(dirpath, name))
    for entry in entries:
        _fsync(partial / entry.path)
    for folder in reversed(folders):  # the deepest first, the version folder last
        _fsync(Path(folder))
    marker = {
        "version": version.version,
        "ref": str(version.ref()),
        "digest": version.digest,
        "completed_at": _now(),
        "record": asdict(version),
        "files": {e.path: _file_record(partial / e.path, e) for e in entries},
    }
    _write_atomic(partial / MARKER, json.dumps(marker, indent=1, default=str))
    (partial / JOURNAL).unlink(missing_ok=True)
    _fsync(partial)  # the marker's name
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(partial, final)
    _fsync(final.parent)
    _fsync(partial.parent)


def _write_atomic(path: Path, text: str) -> None:
    # A name of its own per writer: two processes may record the same alias at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's names, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- checkpoint root, aliases and the offline fallback ---------------------------------


def checkpoint_root(folder: Path, paths: Iterable[str]) -> Path:
    """The single folder holding `config.json`; CheckpointError for none or several."""
    configs = sorted(p for p in paths if PurePosixPath(p).name == "config.json")
    if not configs:
        raise CheckpointError(f"{folder} holds no config.json, so it is no Hugging Face checkpoint")
    if len(configs) > 1:
        shown = ", ".join(configs[:3])
        raise CheckpointError(
            f"{folder} holds {len(configs)} config.json files ({shown}); "
            "cannot tell which folder is the checkpoint"
        )
    return folder.joinpath(*PurePosixPath(configs[0]).parent.parts)


def _finish(
    job: _Job, result: DownloadResult, entries: Sequence[FileEntry], checkpoint: bool
) -> DownloadResult:
    path = (
        checkpoint_root(result.folder, (e.path for e in entries)) if checkpoint else result.folder
    )
    changes = {"path": path, "seconds": job.elapsed()}
    if job.twin_note and not result.twin_note:
        changes["twin_note"] = job.twin_note
    done = DownloadResult(**{**_fields(result), **changes})
    job.report.emit("done", f"{done.version.collection}:{done.version.version} at {path}")
    return done


def _fields(result: DownloadResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__dataclass_fields__}


def _alias_file(root: Path, ref: ArtifactRef) -> Path:
    return root / ALIASES_DIR / (quote(str(ref), safe="") + ".json")


def _record_alias(root: Path, ref: ArtifactRef, version: Version) -> None:
    """Remember where `ref` pointed, for the offline fallback."""
    path = _alias_file(root, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"folder": _relative(version).as_posix(), "resolved_at": _now()}
    _write_atomic(path, json.dumps(record))


def _offline(job: _Job, exc: BaseException, checkpoint: bool) -> DownloadResult:
    """The cached version `ref` last resolved to, with a warning; else re-raise."""
    why = " ".join(str(exc).split()) or type(exc).__name__
    try:
        record = json.loads(_alias_file(job.root, job.ref).read_text())
        folder = job.root / record["folder"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DownloadError(
            f"cannot reach the registry for {job.ref} ({why}), and it was never downloaded here"
        ) from None
    marker = read_marker(folder)
    files = marker["files"] if marker else {}
    if marker is None or not all(_stat_matches(folder / p, r) for p, r in files.items()):
        raise DownloadError(
            f"cannot reach the registry for {job.ref} ({why}), and its cached copy "
            f"{folder} is incomplete"
        )
    fields = marker["record"]
    version = Version(
        **{**fields, "aliases": tuple(fields["aliases"]), "tags": tuple(fields["tags"])}
    )
    warning = f"offline, alias last resolved at {record['resolved_at']}: {why}"
    job.report.emit("resolving", warning)
    result = DownloadResult(
        path=folder,
        folder=folder,
        version=version,
        digest=version.digest,
        bytes=0,
        files=len(files),
        cache_hit=True,
        seconds=0.0,
        offline_warning=warning,
    )
    entries = [FileEntry(path=p, size=r["size"], digest=r["digest"]) for p, r in files.items()]
    return _finish(job, result, entries, checkpoint)


__all__ = [
    "CheckpointError",
    "DownloadCancelled",
    "DownloadError",
    "DownloadProgress",
    "DownloadResult",
    "EntryDownloader",
    "FileUrlSource",
    "ObjectStore",
    "UnsafePathError",
    "cache_root",
    "check_paths",
    "checkpoint_root",
    "download",
    "download_candidate",
    "ensure_root",
    "md5_b64_of",
    "read_marker",
    "version_folder",
]

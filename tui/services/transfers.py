"""The transfer queue: downloads, log jobs and uploads that survive crashes.

One SQLite database (WAL) holds every job, so any number of processes can watch the
queue while one worker runs it. All writes use `BEGIN IMMEDIATE`, so two processes that
claim at the same moment never take the same job.

Job states::

    queued --claim--> running --finish--> done
       ^                 |  \\--mark_pending_sync--> pending_sync --finish--> done
       |                 |--fail (retryable, attempts left)--> queued (after a backoff)
       |                 |--fail / attempts used up--> failed
       |                 \\--cancel (handler told, runner acknowledges)--> cancelled
       \\--retry-- failed | cancelled          queued --cancel--> cancelled
    queued --pause--> paused --resume--> queued        paused --cancel--> cancelled
    running --pause (handler told, runner hands it back, progress kept)--> paused

Each claim counts an attempt, except the claim after a runner handed the job back for a
pause: pausing is the user's choice, so the resumed run continues the same attempt.

Handler contract (the `Runner` calls ``handler(job, progress) -> dict``):

- A handler may be stopped at any instant (SIGKILL, power, network) and run again on the
  same job after `TransferQueue.recover`. It must therefore be idempotent and resumable:
  it decides what is left to do from the destination itself (bytes already on disk,
  objects already on the server), using `job.payload` for what to do and
  `job.bytes_done` / `job.files` only as a hint, since stored progress may lag behind
  the real work by one coalescing interval.
- It reports progress through `progress.update(...)` as often as it likes; writes to
  the database are coalesced.
- It polls `progress.cancelled` and returns (or raises) promptly once it is true; a
  pause asks for the same, and the job runs again from where it was on resume.
- It raises `RetryableError` (or lets `ConnectionError` / `TimeoutError` through) for a
  failure worth retrying; any other exception fails the job.
- It returns a JSON-serialisable dict (the job's result), or `PendingSync(result)` when
  the work is durably stored locally but still waits for `evalwb-tui sync`.
- Payloads are stored on disk in plain text: they must never hold secrets.

Whoever starts runners (the worker) calls `TransferQueue.recover` first, so that jobs
whose runner died are queued again and resume.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tui.services.secrets import known_secrets, redact_text
from tui.services.settings import Settings

QUEUE_FILE = "transfers.sqlite"

KINDS = ("download", "log", "upload", "sync")
QUEUED, RUNNING, DONE, FAILED, CANCELLED, PENDING_SYNC, PAUSED = (
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
    "pending_sync",
    "paused",
)
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, PENDING_SYNC, PAUSED)
ACTIVE_STATES = (QUEUED, RUNNING, PAUSED, PENDING_SYNC, FAILED)

# How an error names a job's state: "job 6 has failed", not "job 6 is failed".
STATE_PHRASES = {
    QUEUED: "is queued",
    RUNNING: "is running",
    DONE: "is done",
    FAILED: "has failed",
    CANCELLED: "was cancelled",
    PENDING_SYNC: "waits for sync",
    PAUSED: "is paused",
}

# Where a job belongs, when queued without W&B: the local registry and offline runs.
LOCAL_PLACE = "local"

# How a running download's note starts while it reads files back to check them (a
# continued file's kept bytes, a re-hash): no bytes move then, so the bar alone stalls.
VERIFYING = "verifying"

SCHEMA_VERSION = 4
MAX_ERROR_CHARS = 400
# Smoothing time constant of the transfer rate, in seconds.
RATE_TAU = 3.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER,
    files_done INTEGER NOT NULL DEFAULT 0,
    files_total INTEGER,
    rate REAL NOT NULL DEFAULT 0,
    rate_at REAL,
    eta REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    result TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    owner_pid INTEGER,
    owner_start TEXT,
    owner_host TEXT,
    claim_token TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS job_files (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    size INTEGER,
    state TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
"""
# Statements that bring a queue file from the version before each key up to it; a file
# written by an older evalwb-tui keeps its jobs.
_MIGRATIONS = {
    2: "ALTER TABLE jobs ADD COLUMN note TEXT",
    3: "ALTER TABLE jobs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0",
    # Set when a runner hands a job back for a pause: its next claim continues the same
    # attempt, since pausing is the user's choice, not a failure.
    4: "ALTER TABLE jobs ADD COLUMN paused_attempt INTEGER NOT NULL DEFAULT 0",
}


class TransferQueueError(RuntimeError):
    """The queue database cannot be used; the message names the file."""


class JobNotFoundError(LookupError):
    """No job has the given id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "job not found"


class JobStateError(ValueError):
    """The job is in a state where the requested change is not allowed."""


class RetryableError(Exception):
    """A failure worth retrying (network drop, server busy); `retry_after` is a minimum delay."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RunnerStopped(BaseException):
    """Raised into a runner from outside (a signal) to stop it: its job goes back to the
    queue on the attempt it was on, as after Ctrl-C."""


# Network errors retry without the handler having to wrap them.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    RetryableError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class PendingSync:
    """A handler's result when the work is stored locally and waits for a sync."""

    result: dict[str, Any]


@dataclass(frozen=True)
class FileProgress:
    """Progress of one file of a job, for the details view."""

    path: str
    bytes_done: int = 0
    size: int | None = None
    state: str = RUNNING


@dataclass
class Job:
    """One queued transfer, as stored."""

    id: int
    kind: str
    title: str
    payload: dict[str, Any]
    state: str
    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    rate: float = 0.0
    eta: float | None = None
    attempts: int = 0
    max_attempts: int = 5
    next_attempt_at: float = 0.0
    last_error: str | None = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    owner_pid: int | None = None
    owner_host: str | None = None
    claim_token: str | None = None
    # A short status line from the handler, e.g. what a download waits for.
    note: str | None = None
    # Running, but its runner is gone: `recover` will queue it again.
    stalled: bool = False
    files: list[FileProgress] = field(default_factory=list)

    @property
    def fraction(self) -> float | None:
        """Done fraction in [0, 1] by bytes, else by files; None when unknown."""
        if self.state == DONE:
            return 1.0
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.files_total:
            return min(1.0, self.files_done / self.files_total)
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        data = asdict(self)
        data["fraction"] = self.fraction
        return data


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits about base * 2**(n-1), capped."""

    base: float = 2.0
    cap: float = 300.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt after `attempts` tries."""
        full = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        # Half fixed, half random: spreads out workers that failed together.
        return full / 2 + (rng or random).uniform(0, full / 2)


# --- masking -------------------------------------------------------------------------


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide secret values in `text`: the given ones, the secret environment variables,
    and every secret found by shape (`tui.services.secrets`)."""
    return redact_text(text, known_secrets(secrets))


def one_line_error(error: BaseException | str, secrets: Iterable[str] = ()) -> str:
    """A masked, single-line, bounded description of an error.

    The project's errors (and libraries') carry a message written for the reader, shown
    alone; a builtin one keeps its class name, which says what failed where its message
    may not (a KeyError's is just the key)."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        if not text:
            text = type(error).__name__
        elif type(error).__module__ == "builtins":
            text = f"{type(error).__name__}: {text}"
    else:
        text = error
    text = mask_text(" ".join(text.split()), secrets)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


# --- process identity ----------------------------------------------------------------


HOST = socket.gethostname()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (Linux); None where there is no such file."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses; fields resume after the last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a reused pid from its owner."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int, start: str | None) -> bool:
    """True while the process `pid` that started at `start` still runs on this host."""
    try:
        os.kill(pid, 0)
    except OSError:
        # ESRCH: gone. EPERM: another user's process, so not a runner of this user's queue.
        return False
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: the pid check is all there is
    if fields[0] == "Z":
        return False  # killed, not yet reaped
    return start is None or len(fields) <= 19 or fields[19] == start


# --- the queue -----------------------------------------------------------------------


def queue_path(settings: Settings) -> Path:
    """Where the queue lives: the platformdirs state dir."""
    return settings.paths.state / QUEUE_FILE


def open_queue(settings: Settings) -> TransferQueue:
    """The user's transfer queue, masking the configured secrets in stored errors; the
    jobs it queues are stamped with the place `settings` work on (`place_of`)."""
    secrets = [s.reveal() for s in (settings.wandb_api_key, settings.aws_secret_access_key) if s]
    return TransferQueue(queue_path(settings), secrets=secrets, place=place_of(settings))


def place_of(settings: Settings) -> str:
    """Where jobs queued with `settings` belong: `local` (the local registry, offline
    runs) or `W&B entity@server`, so one queue shared by every backend tells them apart."""
    if not settings.uses_wandb:
        return LOCAL_PLACE
    from urllib.parse import urlparse

    url = urlparse(settings.wandb_base_url or "")
    # Host and port only: a URL's user:password part is no place to show.
    server = f"{url.hostname}:{url.port}" if url.hostname and url.port else url.hostname or ""
    where = "@".join(part for part in (settings.wandb_entity, server) if part)
    return f"W&B {where}" if where else "W&B"


def job_place(job: Job) -> str | None:
    """Where `job` belongs, as `place_of` said when it was queued; a download of a local
    registry queued before jobs were stamped is `local`; None when unknown."""
    place = job.payload.get("place")
    if isinstance(place, str) and place:
        return place
    return LOCAL_PLACE if job.payload.get("registry") else None


def place_tag(job: Job, here: str | None) -> str | None:
    """`W&B team` or `local`: where `job` belongs, for a job queued for another place than
    `here` (the one the reader works on); None for a job of this place or an unknown one."""
    place = job_place(job)
    if place is None or here is None or place == here:
        return None
    return place.partition("@")[0]


def download_title(ref: str) -> str:
    """The title of a download job, wherever it is queued: the reference as given (the
    kind has a column of its own)."""
    return ref


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        title=row["title"],
        payload=json.loads(row["payload"]),
        state=row["state"],
        bytes_done=row["bytes_done"],
        bytes_total=row["bytes_total"],
        files_done=row["files_done"],
        files_total=row["files_total"],
        rate=row["rate"],
        eta=row["eta"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        result=_json_or_none(row["result"]),
        cancel_requested=bool(row["cancel_requested"]),
        pause_requested=bool(row["pause_requested"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        heartbeat_at=row["heartbeat_at"],
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        claim_token=row["claim_token"],
        note=row["note"],
    )


def _smoothed_rate(row: sqlite3.Row, bytes_done: int, now: float) -> float:
    """Exponentially smoothed bytes per second since the last stored sample."""
    since = row["rate_at"]
    if since is None or now <= since:
        return row["rate"]
    dt = now - since
    instant = max(0, bytes_done - row["bytes_done"]) / dt
    weight = 1 - math.exp(-dt / RATE_TAU)
    if row["rate"] <= 0:
        return instant
    return weight * instant + (1 - weight) * row["rate"]


class TransferQueue:
    """The persistent job queue at `path`; safe to use from many threads and processes."""

    def __init__(
        self,
        path: Path,
        *,
        secrets: Iterable[str] = (),
        backoff: Backoff | None = None,
        stale_after: float = 300.0,
        place: str | None = None,
    ) -> None:
        self.path = Path(path)
        # Stamped on the jobs queued here that do not say where they belong.
        self.place = place
        self.backoff = backoff or Backoff()
        # Jobs of owners on other hosts count as dead after this long without a heartbeat.
        self.stale_after = stale_after
        self._secrets = tuple(s for s in secrets if s)
        self._local = threading.local()
        self._init_schema()

    # -- connection plumbing --

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        return conn

    def _error(self, exc: BaseException) -> TransferQueueError:
        return TransferQueueError(
            f"transfer queue {self.path} cannot be used ({exc}); "
            "check its permissions, or move it away to start an empty queue"
        )

    def _init_schema(self) -> None:
        conn = self._conn()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise TransferQueueError(
                    f"transfer queue {self.path} was written by a newer evalwb-tui "
                    f"(schema {version}); upgrade evalwb-tui or move the file away"
                )
            if version == SCHEMA_VERSION:
                return  # watchers open without taking the write lock
            conn.execute("PRAGMA journal_mode = WAL")
            with self._write() as tx:
                # Read again under the write lock: another process may have upgraded it.
                version = tx.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            tx.execute(statement)
                    version = 1
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    tx.execute(_MIGRATIONS[step])
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front so claims never race."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _row(self, conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no transfer job with id {job_id}")
        return row

    def _files(self, job: Job) -> list[FileProgress]:
        rows = self._conn().execute(
            "SELECT path, bytes_done, size, state FROM job_files WHERE job_id = ? ORDER BY path",
            (job.id,),
        )
        files = [FileProgress(*row) for row in rows]
        if job.state in (PAUSED, QUEUED, FAILED, CANCELLED):
            # A file cut off mid-way stopped with its job; it is no longer running.
            files = [replace(f, state=job.state) if f.state == RUNNING else f for f in files]
        return files

    def mask(self, error: BaseException | str) -> str:
        """`error` as one masked line, as stored in `last_error`."""
        return one_line_error(error, self._secrets)

    # -- producers and steering --

    def enqueue(
        self, kind: str, title: str, payload: Mapping[str, Any], *, max_attempts: int = 5
    ) -> Job:
        """Add a job; it runs when a runner claims it."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        payload = dict(payload)
        if self.place and "place" not in payload:
            payload["place"] = self.place
        text = json.dumps(payload, sort_keys=True)
        if mask_text(text, self._secrets) != text:
            raise ValueError("a job payload must not hold secrets; pass them through settings")
        now = time.time()
        with self._write() as tx:
            cursor = tx.execute(
                "INSERT INTO jobs (kind, title, payload, state, max_attempts, next_attempt_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, title, text, QUEUED, max_attempts, now, now, now),
            )
        return self.get(cursor.lastrowid)

    def get(self, job_id: int) -> Job:
        """The job with its per-file progress; `JobNotFoundError` when there is none."""
        job = self._load(self._row(self._conn(), job_id))
        job.files = self._files(job)
        return job

    def _load(self, row: sqlite3.Row, memo: dict[Any, bool] | None = None) -> Job:
        job = _job_from_row(row)
        job.stalled = job.state == RUNNING and self._orphaned(row, time.time(), memo)
        return job

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job (or one whose runner died) now, or ask the runner of a
        running one to stop."""
        now = time.time()
        with self._write() as tx:
            row = self._row(tx, job_id)
            state = row["state"]
            if state in (QUEUED, PAUSED) or (state == RUNNING and self._orphaned(row, now)):
                tx.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, eta = NULL,"
                    " rate = 0 WHERE id = ?",
                    (CANCELLED, now, now, job_id),
                )
            elif state == RUNNING:
                tx.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            else:
                raise JobStateError(
                    f"transfer job {job_id} {STATE_PHRASES[state]}; only queued, running or"
                    " paused jobs can be cancelled"
                )
        return self.get(job_id)

    def retry(self, job_id: int) -> Job:
        """Queue a failed or cancelled job again with fresh attempts; progress is kept."""
        now = time.time()
        with self._write() as tx:
            state = self._row(tx, job_id)["state"]
            if state not in (FAILED, CANCELLED):
                raise JobStateError(
                    f"transfer job {job_id} {STATE_PHRASES[state]}; only failed or cancelled"
                    " jobs can be retried"
                )
            tx.execute(
                "UPDATE jobs SET state = ?, attempts = 0, next_attempt_at = ?, last_error = NULL,"
                " cancel_requested = 0, paused_attempt = 0, finished_at = NULL, updated_at = ?"
                " WHERE id = ?",
                (QUEUED, now, now, job_id),
            )
        return self.get(job_id)

    def pause(self, job_id: int) -> Job:
        """Pause a queued job now (no runner claims it), or ask the runner of a running
        one to hand it back; its progress is kept for `resume`."""
        now = time.time()
        with self._write() as tx:
            row = self._row(tx, job_id)
            state = row["state"]
            if state == QUEUED or (state == RUNNING and self._orphaned(row, now)):
                tx.execute(
                    "UPDATE jobs SET state = ?, updated_at = ?, eta = NULL, rate = 0,"
                    " claim_token = NULL WHERE id = ?",
                    (PAUSED, now, job_id),
                )
            elif state == RUNNING and not row["cancel_requested"]:
                tx.execute(
                    "UPDATE jobs SET pause_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            else:
                raise JobStateError(
                    f"transfer job {job_id} {STATE_PHRASES[state]}; only queued or running jobs"
                    " can be paused"
                )
        return self.get(job_id)

    def resume(self, job_id: int) -> Job:
        """Queue a paused job again (it continues where it was), or withdraw the pause
        asked of a running job."""
        now = time.time()
        with self._write() as tx:
            row = self._row(tx, job_id)
            state = row["state"]
            if state == PAUSED:
                tx.execute(
                    "UPDATE jobs SET state = ?, next_attempt_at = ?, pause_requested = 0,"
                    " updated_at = ? WHERE id = ?",
                    (QUEUED, now, now, job_id),
                )
            elif state == RUNNING and row["pause_requested"]:
                # Should the runner have stopped already, it hands the job back as queued.
                tx.execute(
                    "UPDATE jobs SET pause_requested = 0, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            else:
                raise JobStateError(
                    f"transfer job {job_id} {STATE_PHRASES[state]}; only paused jobs can be resumed"
                )
        return self.get(job_id)

    def is_pause_requested(self, job_id: int) -> bool:
        """True while the job's runner is asked to hand it back paused."""
        row = (
            self._conn()
            .execute("SELECT pause_requested FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        if row is None:
            raise JobNotFoundError(f"no transfer job with id {job_id}")
        return bool(row["pause_requested"])

    def is_cancelled(self, job_id: int) -> bool:
        """True once the job was cancelled or a cancel was asked for."""
        row = (
            self._conn()
            .execute("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        if row is None:
            raise JobNotFoundError(f"no transfer job with id {job_id}")
        return row["state"] == CANCELLED or bool(row["cancel_requested"])

    # -- runners --

    def claim_next(
        self, owner_pid: int | None = None, *, kinds: Iterable[str] | None = None
    ) -> Job | None:
        """Atomically take the oldest due queued job (of `kinds`, if given) and mark it
        running for `owner_pid` (default: this process); None when nothing is due."""
        pid = os.getpid() if owner_pid is None else owner_pid
        kinds = tuple(kinds) if kinds is not None else KINDS
        if not kinds:
            return None
        now = time.time()
        marks = ", ".join("?" for _ in kinds)
        token = uuid.uuid4().hex
        with self._write() as tx:
            row = tx.execute(
                f"SELECT id FROM jobs WHERE state = ? AND next_attempt_at <= ?"
                f" AND kind IN ({marks}) ORDER BY next_attempt_at, id LIMIT 1",
                (QUEUED, now, *kinds),
            ).fetchone()
            if row is None:
                return None
            tx.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1 - paused_attempt,"
                " paused_attempt = 0, started_at = ?,"
                " updated_at = ?, heartbeat_at = ?, rate = 0, rate_at = ?, eta = NULL,"
                " owner_pid = ?, owner_start = ?, owner_host = ?, claim_token = ?,"
                " cancel_requested = 0, pause_requested = 0 WHERE id = ?",
                (
                    RUNNING,
                    now,
                    now,
                    now,
                    now,
                    pid,
                    process_start(pid),
                    HOST,
                    token,
                    row["id"],
                ),
            )
        return self.get(row["id"])

    def _guard(self, claim: str | None) -> tuple[str, tuple[Any, ...]]:
        """SQL that keeps a superseded runner from overwriting the job's new owner."""
        if claim is None:
            return "", ()
        return " AND claim_token = ?", (claim,)

    def report(
        self,
        job_id: int,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        files_done: int | None = None,
        files_total: int | None = None,
        file: FileProgress | None = None,
        files: Iterable[FileProgress] = (),
        note: str | None = None,
        claim: str | None = None,
    ) -> bool:
        """Store progress of a running job and update its smoothed rate and ETA.

        Values left None stay as they are; an empty `note` clears it. Returns False when
        the job is no longer running under `claim`, which tells the caller to stop.
        """
        updates = [*([file] if file else []), *files]
        now = time.time()
        guard, guard_args = self._guard(claim)
        with self._write() as tx:
            row = tx.execute(
                f"SELECT * FROM jobs WHERE id = ? AND state = ?{guard}",
                (job_id, RUNNING, *guard_args),
            ).fetchone()
            if row is None:
                return False
            done = row["bytes_done"] if bytes_done is None else bytes_done
            total = row["bytes_total"] if bytes_total is None else bytes_total
            rate = _smoothed_rate(row, done, now)
            eta = (max(0, total - done) / rate) if total is not None and rate > 0 else None
            tx.execute(
                "UPDATE jobs SET bytes_done = ?, bytes_total = ?, files_done = ?,"
                " files_total = ?, rate = ?, rate_at = ?, eta = ?, updated_at = ?,"
                " heartbeat_at = ?, note = ? WHERE id = ?",
                (
                    done,
                    total,
                    row["files_done"] if files_done is None else files_done,
                    row["files_total"] if files_total is None else files_total,
                    rate,
                    now,
                    eta,
                    now,
                    now,
                    row["note"] if note is None else (note or None),
                    job_id,
                ),
            )
            tx.executemany(
                "INSERT INTO job_files (job_id, path, bytes_done, size, state)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, path) DO UPDATE SET"
                " bytes_done = excluded.bytes_done, size = excluded.size, state = excluded.state",
                [(job_id, f.path, f.bytes_done, f.size, f.state) for f in updates],
            )
        return True

    def heartbeat(self, job_id: int, *, claim: str | None = None) -> bool:
        """Tell watchers the running job's owner is alive; False if it lost the job."""
        guard, guard_args = self._guard(claim)
        with self._write() as tx:
            cursor = tx.execute(
                f"UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state = ?{guard}",
                (time.time(), job_id, RUNNING, *guard_args),
            )
        return cursor.rowcount == 1

    def _transition(
        self,
        job_id: int,
        *,
        from_states: tuple[str, ...],
        claim: str | None,
        decide: Callable[[sqlite3.Row], dict[str, Any]],
    ) -> bool:
        """Move the job in one transaction to the columns `decide` picks from its row;
        False when it is not in `from_states` (or no longer under `claim`)."""
        guard, guard_args = self._guard(claim)
        marks = ", ".join("?" for _ in from_states)
        with self._write() as tx:
            row = tx.execute(
                f"SELECT * FROM jobs WHERE id = ? AND state IN ({marks}){guard}",
                (job_id, *from_states, *guard_args),
            ).fetchone()
            if row is None:
                self._row(tx, job_id)  # JobNotFoundError when there is no such job
                return False
            columns = {"updated_at": time.time(), "rate": 0.0, "eta": None, **decide(row)}
            sets = ", ".join(f"{name} = ?" for name in columns)
            tx.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*columns.values(), job_id))
        return True

    def _end(
        self,
        job_id: int,
        state: str,
        *,
        from_states: tuple[str, ...],
        claim: str | None,
        **columns: Any,
    ) -> bool:
        return self._transition(
            job_id,
            from_states=from_states,
            claim=claim,
            decide=lambda row: {"state": state, **columns},
        )

    def finish(self, job_id: int, result: Mapping[str, Any], *, claim: str | None = None) -> bool:
        """Mark a running (or pending-sync) job done with its result."""
        return self._end(
            job_id,
            DONE,
            from_states=(RUNNING, PENDING_SYNC),
            claim=claim,
            result=json.dumps(dict(result), sort_keys=True),
            finished_at=time.time(),
            last_error=None,
        )

    def mark_pending_sync(
        self, job_id: int, result: Mapping[str, Any], *, claim: str | None = None
    ) -> bool:
        """Mark a running job as stored locally and waiting for a sync."""
        return self._end(
            job_id,
            PENDING_SYNC,
            from_states=(RUNNING,),
            claim=claim,
            result=json.dumps(dict(result), sort_keys=True),
        )

    def mark_cancelled(self, job_id: int, *, claim: str | None = None) -> bool:
        """Acknowledge a cancel: the runner has stopped working on the job."""
        return self._end(
            job_id, CANCELLED, from_states=(RUNNING,), claim=claim, finished_at=time.time()
        )

    def mark_paused(self, job_id: int, *, claim: str | None = None) -> bool:
        """Acknowledge a pause: the runner has stopped and hands the job back with its
        progress; queued instead when the pause was withdrawn meanwhile. The attempt it
        was on is not used up: the next claim continues it."""

        def decide(row: sqlite3.Row) -> dict[str, Any]:
            state = PAUSED if row["pause_requested"] else QUEUED
            return {
                "state": state,
                "pause_requested": 0,
                "paused_attempt": 1,
                "next_attempt_at": time.time(),
                "claim_token": None,
            }

        return self._transition(job_id, from_states=(RUNNING,), claim=claim, decide=decide)

    def release(self, job_id: int, *, claim: str | None = None, keep_attempt: bool = False) -> bool:
        """Give a running job back to the queue at once, e.g. when its runner is stopped.

        With `keep_attempt`, as after a pause, the next claim continues the attempt it was
        on: the job did not fail, its runner was stopped. Without it the attempt counts,
        and a job released on its last attempt fails instead of coming back forever."""

        def decide(row: sqlite3.Row) -> dict[str, Any]:
            now = time.time()
            if not keep_attempt and row["attempts"] >= row["max_attempts"]:
                message = (
                    "the worker ended while running it, on its last attempt "
                    f"({row['attempts']} of {row['max_attempts']})"
                )
                return {"state": FAILED, "last_error": message, "finished_at": now}
            return {"state": QUEUED, "next_attempt_at": now, "paused_attempt": int(keep_attempt)}

        return self._transition(job_id, from_states=(RUNNING,), claim=claim, decide=decide)

    def fail(
        self,
        job_id: int,
        error: BaseException | str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        claim: str | None = None,
    ) -> bool:
        """Record a failed attempt: back to queued after a backoff while attempts are
        left and the error is retryable, otherwise failed. The error is stored masked."""
        message = self.mask(error)

        def decide(row: sqlite3.Row) -> dict[str, Any]:
            now = time.time()
            if row["cancel_requested"]:
                return {"state": CANCELLED, "last_error": message, "finished_at": now}
            if row["pause_requested"]:  # asked while the handler failed: keep the pause
                return {"state": PAUSED, "last_error": message, "pause_requested": 0}
            if retryable and row["attempts"] < row["max_attempts"]:
                delay = max(self.backoff.delay(row["attempts"]), retry_after or 0.0)
                return {"state": QUEUED, "last_error": message, "next_attempt_at": now + delay}
            return {"state": FAILED, "last_error": message, "finished_at": now}

        return self._transition(job_id, from_states=(RUNNING,), claim=claim, decide=decide)

    def _orphaned(self, row: sqlite3.Row, now: float, memo: dict[Any, bool] | None = None) -> bool:
        """True when the running job's owner is dead; `memo` caches owners across rows."""
        if row["owner_host"] != HOST or row["owner_pid"] is None:
            return (row["heartbeat_at"] or 0) < now - self.stale_after
        owner = (row["owner_pid"], row["owner_start"])
        if memo is None:
            return not process_alive(*owner)
        if owner not in memo:
            memo[owner] = not process_alive(*owner)
        return memo[owner]

    def recover(self) -> list[int]:
        """Put jobs whose runner died back in the queue so they resume; return their ids.

        A job whose owner died with a cancel pending is cancelled; one that has used up
        its attempts (it keeps killing its runner) is failed.
        """
        now = time.time()
        recovered = []
        with self._write() as tx:
            rows = tx.execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            for row in rows:
                if not self._orphaned(row, now):
                    continue
                if row["cancel_requested"]:
                    state, error = CANCELLED, row["last_error"]
                elif row["pause_requested"]:
                    state, error = PAUSED, row["last_error"]
                elif row["attempts"] >= row["max_attempts"]:
                    state, error = FAILED, "the runner died on every attempt"
                else:
                    state, error = QUEUED, row["last_error"]
                tx.execute(
                    "UPDATE jobs SET state = ?, last_error = ?, next_attempt_at = ?, rate = 0,"
                    " eta = NULL, updated_at = ?, claim_token = NULL, pause_requested = 0,"
                    " finished_at = CASE WHEN ? IN ('queued', 'paused') THEN NULL ELSE ? END"
                    " WHERE id = ?",
                    (state, error, now, now, state, now, row["id"]),
                )
                recovered.append(row["id"])
        return recovered

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the queue.

        Watchers poll it (a cheap read) and list the jobs again only when it changed.
        """
        return self._conn().execute("PRAGMA data_version").fetchone()[0]

    def next_due_in(self, *, kinds: Iterable[str] | None = None) -> float | None:
        """Seconds until the next queued job is due (0 if one is due); None if none queued."""
        kinds = tuple(kinds) if kinds is not None else KINDS
        if not kinds:
            return None
        marks = ", ".join("?" for _ in kinds)
        row = (
            self._conn()
            .execute(
                f"SELECT MIN(next_attempt_at) FROM jobs WHERE state = ? AND kind IN ({marks})",
                (QUEUED, *kinds),
            )
            .fetchone()
        )
        if row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    def list(self, states: Iterable[str] | None = None, *, with_files: bool = False) -> list[Job]:
        """Jobs in `states` (default: all), oldest first; per-file progress on request."""
        query, args = "SELECT * FROM jobs", ()
        if states is not None:
            args = tuple(states)
            query += f" WHERE state IN ({', '.join('?' for _ in args)})"
        memo: dict[Any, bool] = {}
        rows = self._conn().execute(query + " ORDER BY id", args)
        jobs = [self._load(row, memo) for row in rows]
        if with_files:
            for job in jobs:
                job.files = self._files(job)
        return jobs


# --- running jobs --------------------------------------------------------------------


class Progress:
    """What a handler reports through; coalesces writes to at most one per `interval`.

    A small background ticker writes the last values a quiet handler left behind,
    keeps the heartbeat fresh and polls for a cancel, so `cancelled` is cheap to read.
    """

    def __init__(
        self,
        queue: TransferQueue,
        job: Job,
        *,
        interval: float = 0.1,
        heartbeat: float = 5.0,
    ) -> None:
        self.queue = queue
        self.job = job
        self.interval = interval
        self.heartbeat_every = heartbeat
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._files: dict[str, FileProgress] = {}
        self._last_write = 0.0
        self._cancelled = job.cancel_requested
        self._paused = job.pause_requested
        self._lost = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or paused (or taken over by another runner):
        stop soon."""
        return self._cancelled or self._paused or self._lost

    @property
    def paused(self) -> bool:
        """True once a pause was seen; it stays true, since the handler may be stopping."""
        return self._paused

    def update(
        self,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        files_done: int | None = None,
        files_total: int | None = None,
        file: FileProgress | None = None,
        note: str | None = None,
    ) -> None:
        """Record progress; written now if the last write is older than `interval`.

        `note` is a short status line ("" clears it)."""
        values = {
            "bytes_done": bytes_done,
            "bytes_total": bytes_total,
            "files_done": files_done,
            "files_total": files_total,
            "note": note,
        }
        with self._lock:
            self._pending.update({k: v for k, v in values.items() if v is not None})
            if file is not None:
                self._files[file.path] = file
            due = time.monotonic() - self._last_write >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        """Write whatever progress is pending."""
        with self._lock:
            if not self._pending and not self._files:
                return
            pending, files = self._pending, list(self._files.values())
            self._pending, self._files = {}, {}
            self._last_write = time.monotonic()
        still_ours = self.queue.report(
            self.job.id, files=files, claim=self.job.claim_token, **pending
        )
        self._lost = self._lost or not still_ours

    def _tick(self) -> None:
        try:
            self._tick_until_stopped()
        finally:
            self.queue.close()  # this thread's own connection

    def _tick_until_stopped(self) -> None:
        last_beat = time.monotonic()
        period = max(self.interval, 0.05)
        while not self._stop.wait(period):
            try:
                self._tick_once()
                if time.monotonic() - max(last_beat, self._last_write) >= self.heartbeat_every:
                    last_beat = time.monotonic()
                    self._lost = self._lost or not self.queue.heartbeat(
                        self.job.id, claim=self.job.claim_token
                    )
            except sqlite3.Error:
                continue  # a busy database: try again on the next tick

    def _tick_once(self) -> None:
        with self._lock:
            stale = (self._pending or self._files) and (
                time.monotonic() - self._last_write >= self.interval
            )
        if stale:
            self.flush()
        self._cancelled = self.queue.is_cancelled(self.job.id)
        self._paused = self._paused or self.queue.is_pause_requested(self.job.id)

    def __enter__(self) -> Progress:
        self._ticker = threading.Thread(target=self._tick, name=f"progress-{self.job.id}")
        self._ticker.daemon = True
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.flush()


Handler = Callable[[Job, Progress], "dict[str, Any] | PendingSync"]


class Runner:
    """Claims queued jobs one at a time and runs them through `handlers` by kind.

    The handler table stays open: modules that know how to run a kind add to it
    (`runner.handlers["download"] = ...`). Only kinds with a handler are claimed.
    """

    def __init__(
        self,
        queue: TransferQueue,
        handlers: Mapping[str, Handler],
        *,
        owner_pid: int | None = None,
        interval: float = 0.1,
        heartbeat: float = 5.0,
    ) -> None:
        self.queue = queue
        self.handlers: dict[str, Handler] = dict(handlers)
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self.interval = interval
        self.heartbeat = heartbeat

    def run_once(self) -> Job | None:
        """Claim and run one due job; return it as it ended, or None if none was due."""
        job = self.queue.claim_next(self.owner_pid, kinds=self.handlers)
        if job is None:
            return None
        self._run(job)
        return self.queue.get(job.id)

    def _run(self, job: Job) -> None:
        claim = job.claim_token
        handler = self.handlers[job.kind]
        progress = Progress(self.queue, job, interval=self.interval, heartbeat=self.heartbeat)
        try:
            with progress:
                outcome = handler(job, progress)
        except Exception as exc:  # any handler failure ends its job, never the runner
            if self._stopped(job, progress):
                return
            retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
            retryable = isinstance(exc, RETRYABLE_ERRORS)
            self.queue.fail(job.id, exc, retryable=retryable, retry_after=retry_after, claim=claim)
            return
        except BaseException as exc:
            # Stopped from outside: the job resumes on the next run, on the same attempt
            # after Ctrl-C or a signal. Anything else (a library's SystemExit) costs an
            # attempt, so a job that ends its runner every time fails in the end.
            stopped = isinstance(exc, KeyboardInterrupt | RunnerStopped)
            self.queue.release(job.id, claim=claim, keep_attempt=stopped)
            raise
        if not self._stopped(job, progress):
            self._conclude(job, outcome)

    def _stopped(self, job: Job, progress: Progress) -> bool:
        """Acknowledge a cancel or a pause the handler may have stopped for; False if none.

        A handler that returns after a pause may not have finished: the job is handed
        back and runs again on resume, which handlers make cheap.
        """
        if self.queue.is_cancelled(job.id):
            self.queue.mark_cancelled(job.id, claim=job.claim_token)
            return True
        if progress.paused or self.queue.is_pause_requested(job.id):
            self.queue.mark_paused(job.id, claim=job.claim_token)
            return True
        return False

    def _conclude(self, job: Job, outcome: Any) -> None:
        claim = job.claim_token
        pending = isinstance(outcome, PendingSync)
        result = outcome.result if pending else ({} if outcome is None else outcome)
        try:
            if not isinstance(result, Mapping):
                raise TypeError(f"the {job.kind} handler returned {type(result).__name__}")
            if pending:
                self.queue.mark_pending_sync(job.id, result, claim=claim)
            else:
                self.queue.finish(job.id, result, claim=claim)
        except (TypeError, ValueError) as exc:  # a result that is not a JSON object
            self.queue.fail(job.id, f"bad result: {exc}", retryable=False, claim=claim)

    def run_until_idle(self, timeout: float) -> int:
        """Run jobs until none is queued (waiting out backoffs) or `timeout` seconds
        pass; return how many jobs ran."""
        deadline = time.monotonic() + timeout
        ran = 0
        while time.monotonic() < deadline:
            if self.run_once() is not None:
                ran += 1
                continue
            wait = self.queue.next_due_in(kinds=self.handlers)
            if wait is None:
                break
            time.sleep(min(max(wait, 0.01), max(0.0, deadline - time.monotonic()), 1.0))
        return ran

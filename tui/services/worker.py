"""The detached transfer worker: runs the queue's jobs while any app comes and goes.

One worker per state dir runs the jobs of `transfers.TransferQueue`; apps and headless
commands only enqueue, watch and steer. `ensure_worker` starts one in its own session
(so closing the terminal, SIGHUP or a lost SSH link does not stop it) when none holds the
lock `<state dir>/worker.lock`; it exits by itself after `EVALWB_WORKER_IDLE_SEC` idle
seconds. Its log is `<state dir>/worker.log`.

A worker runs every job with the settings it was started with. The lock's holder record
carries a fingerprint of them (`settings_fingerprint`), so `ensure_worker` can tell a
worker started before the settings changed (a key added, another server or registry)
and replace it: SIGTERM (its running job goes back to the queue), then a fresh one.

Exit status of `run_worker`: 0 after an idle exit or a SIGTERM/SIGINT (running jobs go
back to the queue), `EXIT_ALREADY_RUNNING` (3) when another worker holds the lock.

Job payloads (plain JSON, never secrets):

- `download`: `{"ref": REF, "root": FOLDER or null, "verify": bool, "registry": FOLDER or
  null}` — `cache.download` from the local registry at `registry` when given (the app's
  own, as with `--demo`), else from the configured registry.
- `log`: `{"results": FOLDER, "project": P, "entity": E or null, "checkpoint": REF or null,
  "checkpoint_alias": A or null, "offline": bool, "force": bool, "s3_prefix": URI or null}`
  — written offline first with `evallog.log_run` (the `.wandb` file is the durable record),
  then that run alone uploaded with `evallog.sync_pending` when a key is set and
  `offline` is false.
- `sync`: `{}` (any payload) — `evallog.sync_pending`: every pending offline run; log jobs
  waiting on a run that got synced are marked done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import logging.handlers
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tui.services.settings import (
    Secret,
    Settings,
    child_environment,
    load_settings,
    parse_seconds,
    read_env,
)
from tui.services.transfers import (
    DONE,
    PENDING_SYNC,
    QUEUED,
    RUNNING,
    VERIFYING,
    FileProgress,
    Handler,
    Job,
    PendingSync,
    Progress,
    RetryableError,
    Runner,
    RunnerStopped,
    TransferQueue,
    mask_text,
    open_queue,
)

if TYPE_CHECKING:
    from tui.services.registry import Registry

T = TypeVar("T")

LOCK_FILE = "worker.lock"
LOG_FILE = "worker.log"
TEMP_FOLDER = "tmp"
IDLE_VARIABLE = "EVALWB_WORKER_IDLE_SEC"
DEFAULT_IDLE_SEC = 300.0
EXIT_ALREADY_RUNNING = 3
WORKER_NICENESS = 10
LOG_MAX_BYTES = 1024 * 1024
# How long a starting worker keeps trying for the lock: a status probe holds it for
# an instant, and must not make the only worker give up.
LOCK_TRIES, LOCK_RETRY_SEC = 20, 0.05
POLL_SEC = 0.25
# How long `ensure_worker` waits for a worker with other settings to hand its job back
# and let go of the lock before it gives up replacing it.
RESTART_TIMEOUT_SEC = 30.0
RECOVER_EVERY_SEC = 60.0
CANCEL_POLL_SEC = 0.1
# A job's note is one status line in a pane or a `transfers` listing.
MAX_NOTE_CHARS = 200
# States a watcher still waits on; done, failed, cancelled and pending sync are ends.
MOVING_STATES = (QUEUED, RUNNING)


class WorkerStopped(RunnerStopped):
    """Raised in the worker by SIGTERM/SIGINT, so the runner gives its job back."""


@dataclass(frozen=True)
class WorkerStatus:
    """Whether a worker runs the queue of this state dir, and where it logs.

    `started`: this call started it. `restarted`: it replaced a worker that ran with
    other settings. `outdated`: a worker with other settings still runs (it did not stop
    in time, or may not be stopped), so its jobs do not see the new ones.
    """

    alive: bool
    pid: int | None
    since: str | None
    log: Path
    started: bool = False
    restarted: bool = False
    outdated: bool = False
    fingerprint: str | None = None


def lock_path(settings: Settings) -> Path:
    """The worker's lock file; it also holds the pid and start time of its holder."""
    return settings.paths.state / LOCK_FILE


def log_path(settings: Settings) -> Path:
    """The worker's log file."""
    return settings.paths.state / LOG_FILE


def settings_fingerprint(settings: Settings) -> str:
    """A sha256 over the settings a job runs with. Secrets enter only as a sha256 of
    their value, so the fingerprint shows neither them nor how long they are."""
    values = {
        "wandb_base_url": settings.wandb_base_url,
        "wandb_entity": settings.wandb_entity,
        "wandb_project": settings.wandb_project,
        "runs_dir": str(settings.runs_dir),
        "wandb_cache_skip": settings.wandb_cache_skip,
        "artifact_dir": str(settings.artifact_dir),
        "artifact_wait": settings.wandb_artifact_wait_timeout_sec,
        "registry_dir": str(settings.registry_dir),
        "aws_access_key_id": settings.aws_access_key_id,
        "aws_endpoint_url": settings.aws_endpoint_url,
        "wandb_api_key": _secret_digest(settings.wandb_api_key),
        "aws_secret_access_key": _secret_digest(settings.aws_secret_access_key),
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _secret_digest(secret: Secret | None) -> str | None:
    return None if secret is None else hashlib.sha256(secret.reveal().encode()).hexdigest()


def idle_exit_seconds(env: Mapping[str, str] | None = None) -> float:
    """`EVALWB_WORKER_IDLE_SEC` from `env` (default: .env files and the environment)."""
    env = read_env() if env is None else env
    raw = env.get(IDLE_VARIABLE)
    return parse_seconds(IDLE_VARIABLE, raw) if raw else DEFAULT_IDLE_SEC


# --- the lock ------------------------------------------------------------------------


def _open_lock(settings: Settings) -> int:
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _take_lock(settings: Settings) -> int | None:
    """The locked descriptor, with our pid and settings fingerprint written in it; None
    when another holds it."""
    fd = _open_lock(settings)
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt + 1 < LOCK_TRIES:
                time.sleep(LOCK_RETRY_SEC)
            continue
        holder = {
            "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": settings_fingerprint(settings),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return fd
    os.close(fd)
    return None


def worker_status(settings: Settings) -> WorkerStatus:
    """Is a worker alive for this state dir? Its pid and start time when it is."""
    fd = _open_lock(settings)
    try:
        try:
            # A shared probe: it fails exactly while a worker holds the exclusive lock.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            return WorkerStatus(
                True,
                holder.get("pid"),
                holder.get("since"),
                log_path(settings),
                fingerprint=holder.get("settings"),
            )
        return WorkerStatus(False, None, None, log_path(settings))
    finally:
        os.close(fd)  # closing drops the probe's lock


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}  # the holder is writing it right now
    return data if isinstance(data, dict) else {}


# --- starting one detached -----------------------------------------------------------


def worker_settings(settings: Settings) -> Settings:
    """The settings a worker started from this process runs with: this environment and
    its `.env` files, as `evalwb-tui worker` reads them, not `settings` itself (which
    `--demo` narrows to the demo registry)."""
    return load_settings(paths=settings.paths)


def ensure_worker(
    settings: Settings, *, wait: float = 0.0, restart_timeout: float = RESTART_TIMEOUT_SEC
) -> WorkerStatus:
    """Start a detached worker unless one with these settings is alive; `started` tells
    which, `restarted` that it replaced a worker started with other settings.

    The worker gets this process's environment and working directory (so `.env`, EVALWB_*,
    WANDB_* and XDG_* are the same) and its own session, so a hangup of this terminal
    never reaches it. A live worker whose settings fingerprint differs from what this
    environment gives is sent SIGTERM (its running job goes back to the queue); up to
    `restart_timeout` seconds pass until it lets go of the lock, else it stays and the
    status says `outdated`. With `wait`, up to that many seconds pass until the new
    worker holds the lock.
    """
    status = _settled_status(settings)
    restarted = False
    if status.alive and status.pid is not None:
        if status.fingerprint == settings_fingerprint(worker_settings(settings)):
            return status
        if not _stop_worker(settings, status.pid, restart_timeout):
            return dataclasses.replace(status, outdated=True)
        restarted = True
    elif status.alive:
        return status  # its holder record is still unwritten: nothing to compare yet
    return _start_worker(settings, wait, restarted)


def queue_for_worker(
    settings: Settings, enqueue: Callable[[], T], *, wait: float = 3.0
) -> tuple[T, WorkerStatus]:
    """Queue jobs with `enqueue` for a worker running with these settings; returns what
    `enqueue` returned and the worker's status.

    The worker is made sure of before the jobs are queued, so one started with other
    settings is replaced before it could take them, and again after, in case it reached
    its idle exit in between. `started` and `restarted` cover both.
    """
    before = ensure_worker(settings, wait=wait)
    queued = enqueue()
    after = ensure_worker(settings, wait=wait)
    return queued, dataclasses.replace(
        after,
        started=after.started or (before.started and after.pid == before.pid),
        restarted=after.restarted or before.restarted,
    )


def _settled_status(settings: Settings, timeout: float = 1.0) -> WorkerStatus:
    """The worker's status once a worker that just took the lock has written its record."""
    deadline = time.monotonic() + timeout
    status = worker_status(settings)
    while status.alive and status.pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
        status = worker_status(settings)
    return status


def _stop_worker(settings: Settings, pid: int, timeout: float) -> bool:
    """SIGTERM the worker `pid`; True once no worker or another one holds the lock."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it exited by itself a moment ago
    except PermissionError:
        return False  # another user's process: not ours to stop
    deadline = time.monotonic() + timeout
    while True:
        status = worker_status(settings)
        if not status.alive or status.pid not in (None, pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _start_worker(settings: Settings, wait: float, restarted: bool) -> WorkerStatus:
    """Start a detached worker; with `wait`, wait up to that long until it holds the lock."""
    log = log_path(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "worker"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            close_fds=True,
            start_new_session=True,
            env=child_environment(),
        )
    # Reap it if it ends while this process lives on (the app), so no zombie is left.
    threading.Thread(target=proc.wait, name="worker-reaper", daemon=True).start()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        status = worker_status(settings)
        # Alive without a pid: it holds the lock but has not written its pid yet.
        if status.alive and status.pid is not None:
            return dataclasses.replace(status, started=True, restarted=restarted)
        time.sleep(0.05)
    status = worker_status(settings)
    if status.alive:  # ours, or one another process started at the same moment
        return dataclasses.replace(status, started=status.pid == proc.pid, restarted=restarted)
    return WorkerStatus(proc.poll() is None, proc.pid, None, log, True, restarted)


# --- the log -------------------------------------------------------------------------


class _MaskSecrets(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(record.getMessage(), self.secrets)
        record.args = None
        return True


def _secrets(settings: Settings) -> tuple[str, ...]:
    found = (settings.wandb_api_key, settings.aws_secret_access_key)
    return tuple(s.reveal() for s in found if s is not None)


class _LogFile(logging.handlers.RotatingFileHandler):
    """Rotates at `maxBytes`; when stdout and stderr were the log (a detached worker),
    they move to the new file too, so stray output never grows a rotated-away file."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=1)
        self.follow = [fd for fd in (1, 2) if _same_file(fd, path)]

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is not None:
            for fd in self.follow:
                os.dup2(self.stream.fileno(), fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, theirs = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _open_log(settings: Settings, max_bytes: int = LOG_MAX_BYTES) -> logging.Logger:
    """Plain masked lines in worker.log, rotated by size; echoed to a terminal."""
    logger = logging.getLogger(f"evalwb.worker.{os.getpid()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    form = logging.Formatter("%(asctime)s pid %(process)d %(message)s", "%Y-%m-%dT%H:%M:%S")
    path = log_path(settings)
    path.touch()
    handlers: list[logging.Handler] = [_LogFile(path, max_bytes)]
    if sys.stderr.isatty():  # a foreground worker; detached, stderr already is the log
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(form)
        handler.addFilter(_MaskSecrets(_secrets(settings)))
        logger.addHandler(handler)
    return logger


def _close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


# --- running -------------------------------------------------------------------------


def _stop(signum: int, frame: Any) -> None:
    # Once: a second signal during the hand-back must not cut it short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise WorkerStopped(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """Ignore SIGHUP (a closed terminal); stop gracefully on SIGTERM and SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    saved = {sig: signal.getsignal(sig) for sig in names}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def temp_root(settings: Settings) -> Path:
    """Where workers keep their temporary files: one folder each, under the state dir."""
    return settings.paths.state / TEMP_FOLDER


@contextlib.contextmanager
def _private_temp(settings: Settings) -> Iterator[Path]:
    """A temporary folder of this worker's own, for it and its children (the SDK's
    media and artifact staging, wandb-core's files): TMPDIR and `tempfile` point there
    while it runs, and it is removed when the worker ends. Folders that workers killed
    before could not remove go first: the lock says no other worker runs."""
    root = temp_root(settings)
    for stale in root.glob("worker-*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder = root / f"worker-{os.getpid()}"
    folder.mkdir(parents=True, mode=0o700)
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def _sdk_temp_folders() -> set[str]:
    """The SDK's process-wide temporary folders, made once when it is imported and used
    for the life of the process: a job must not remove them."""
    found = set()
    for module, owner, attr in (
        ("wandb.sdk.data_types._private", None, "MEDIA_TMP"),
        ("wandb.sdk.artifacts.artifact", "Artifact", "_TMP_DIR"),
    ):
        holder: Any = sys.modules.get(module)
        if holder is not None and owner:
            holder = getattr(holder, owner, None)
        folder = getattr(holder, attr, None)
        if folder is not None and getattr(folder, "name", None):
            found.add(os.path.realpath(folder.name))
    return found


def _tidy_temp(before: set[Path]) -> None:
    """Remove what a job left in the temporary folder (an artifact's staging folder,
    `results.table.json`), keeping what was there before it and the SDK's own folders."""
    folder = Path(tempfile.gettempdir())
    keep = _sdk_temp_folders()
    for entry in set(folder.iterdir()) - before:
        if os.path.realpath(entry) in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _logged(kind: str, handler: Handler, logger: logging.Logger) -> Handler:
    def run(job: Job, progress: Progress) -> Any:
        logger.info("job %s %s %r: started (attempt %s)", job.id, kind, job.title, job.attempts)
        before = set(Path(tempfile.gettempdir()).iterdir())
        try:
            return handler(job, progress)
        finally:
            _tidy_temp(before)

    return run


def _report(logger: logging.Logger, job: Job) -> None:
    error = f": {job.last_error}" if job.last_error and job.state != DONE else ""
    logger.info("job %s %s %r: %s%s", job.id, job.kind, job.title, job.state, error)


def run_worker(
    settings: Settings,
    *,
    idle_exit: float | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> int:
    """Run queued jobs until idle for `idle_exit` seconds (default: EVALWB_WORKER_IDLE_SEC).

    Returns `EXIT_ALREADY_RUNNING` at once when another worker holds the lock, saying so
    on stderr; 0 otherwise. Jobs left running by a dead worker resume first.
    """
    if idle_exit is None:
        idle_exit = idle_exit_seconds(read_env(config_dir=settings.paths.config))
    # Transfers are background work: on a login node's few cores the app (and the
    # user's shell) come first; wandb-core and other children inherit this. Set before
    # the lock, so a worker seen alive already runs at this priority.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    # Signals first: a hangup that lands just after the lock is taken must not end it.
    with _signals():
        fd = _take_lock(settings)
        if fd is None:
            holder = worker_status(settings)
            print(
                f"evalwb-tui worker: another worker (pid {holder.pid}, since {holder.since}) "
                f"already runs the transfer queue of {settings.paths.state}; this one exits",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_ALREADY_RUNNING
        logger = _open_log(settings)
        try:
            with _private_temp(settings):
                return _serve(settings, idle_exit, handlers, logger)
        except WorkerStopped as stop:
            logger.info("stopped by %s; running jobs went back to the queue", stop)
            return 0
        finally:
            _close_log(logger)
            os.close(fd)  # releases the lock


def _serve(
    settings: Settings,
    idle: float,
    handlers: Mapping[str, Handler] | None,
    logger: logging.Logger,
) -> int:
    queue = open_queue(settings)
    table = default_handlers(settings) if handlers is None else handlers
    runner = Runner(queue, {kind: _logged(kind, h, logger) for kind, h in table.items()})
    logger.info("worker started; idle exit after %g s; kinds %s", idle, ", ".join(table))
    recovered = queue.recover()
    if recovered:
        logger.info("resuming jobs %s left running by a stopped runner", recovered)
    last_work = last_recover = time.monotonic()
    while True:
        wait = queue.next_due_in(kinds=runner.handlers)
        if wait == 0:
            job = runner.run_once()
            if job is not None:
                _report(logger, job)
                last_work = time.monotonic()
                continue
        now = time.monotonic()
        if wait is not None:
            last_work = now  # a job waiting out its backoff keeps the worker
        elif now - last_work >= idle:
            logger.info("idle for %g s; exiting", idle)
            return 0
        if now - last_recover >= RECOVER_EVERY_SEC:
            last_recover = now
            queue.recover()
        time.sleep(max(0.01, min(POLL_SEC, wait or POLL_SEC, idle - (now - last_work))))


# --- handlers ------------------------------------------------------------------------


def default_handlers(settings: Settings) -> dict[str, Handler]:
    """The job kinds this worker runs: `download`, `log` and `sync`."""
    return {
        "download": _download_handler(settings),
        "log": _log_handler(settings),
        "sync": _sync_handler(settings),
    }


@contextlib.contextmanager
def _cancel_event(progress: Progress) -> Iterator[threading.Event]:
    """An Event set once the job is cancelled, for services that take one."""
    event, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(CANCEL_POLL_SEC):
            if progress.cancelled:
                event.set()
                return

    thread = threading.Thread(target=watch, name="cancel-watch", daemon=True)
    thread.start()
    try:
        yield event
    finally:
        done.set()
        thread.join()


def _job_registry(payload: Mapping[str, Any], settings: Settings) -> Registry:
    """The local registry the job names (`registry`), else the configured one."""
    if payload.get("registry"):
        from tui.services.registry.local import LocalRegistry

        return LocalRegistry(Path(payload["registry"]))
    from tui.services.registry import open_registry

    return open_registry(settings)


def _download_handler(settings: Settings) -> Handler:
    def run(job: Job, progress: Progress) -> dict[str, Any]:
        from tui.services.cache import download

        def report(event: Any) -> None:
            # Waiting and lock messages are the only sign of life for up to an hour; a
            # file being read back to check it moves no bytes either, and says so.
            note = event.message if event.phase in ("waiting", "locked") else ""
            if event.phase == "verifying":
                note = f"{VERIFYING}: {event.message}"
            # Before the files are counted (resolving, a re-hash of the whole version)
            # the totals are zero: they must not wipe what a resumed job shows.
            counted = event.phase in ("downloading", "done") or (
                event.phase == "verifying" and bool(event.path)
            )
            file = None
            if event.path:
                state = DONE if event.file_done >= event.file_size else RUNNING
                file = FileProgress(event.path, event.file_done, event.file_size, state)
            progress.update(
                # The whole version: a resumed job goes on from where it was paused.
                bytes_done=event.kept + event.done if counted else None,
                bytes_total=event.kept + event.total if counted else None,
                files_done=event.files_done if counted else None,
                files_total=event.files_total if counted else None,
                file=file,
                note=note[:MAX_NOTE_CHARS],
            )

        payload = job.payload
        root = payload.get("root")
        try:
            with _cancel_event(progress) as cancel:
                result = download(
                    payload["ref"],
                    registry=_job_registry(payload, settings),
                    settings=settings,
                    root=Path(root) if root else None,
                    verify=bool(payload.get("verify")),
                    progress=report,
                    cancel=cancel,
                )
        except OSError as exc:
            if exc.errno is not None:
                raise  # the disk: full, read-only, no permission
            # HTTP clients raise OSError subclasses without an errno for network faults.
            raise RetryableError(f"download of {payload['ref']}: {exc}") from exc
        return result.as_json()

    return run


def _log_handler(settings: Settings) -> Handler:
    def run(job: Job, progress: Progress) -> dict[str, Any] | PendingSync:
        from tui.services import evallog
        from tui.services.refs import parse_ref
        from tui.services.results import read_run

        payload = job.payload
        upload = settings.wandb_api_key is not None and not payload.get("offline")
        steps = 5 if upload else 4

        def report(event: Any) -> None:
            if event.stage == "upload":  # bytes: to S3, then to W&B
                progress.update(bytes_done=event.done, bytes_total=event.total)
            elif event.stage == "upload_files":  # while uploading: the files sent
                progress.update(files_done=event.done, files_total=event.total)
            elif event.stage == "upload_file":
                state = DONE if event.done >= event.total else RUNNING
                progress.update(file=FileProgress(event.detail, event.done, event.total, state))
            else:  # the logging steps, shown as files
                progress.update(files_done=event.done, files_total=steps)

        checkpoint = payload.get("checkpoint")
        logged = evallog.log_run(
            read_run(Path(payload["results"])),
            settings=settings,
            project=payload.get("project") or settings.results_project,
            entity=payload.get("entity") or settings.wandb_entity,
            checkpoint=parse_ref(checkpoint) if checkpoint else None,
            checkpoint_alias=payload.get("checkpoint_alias"),
            offline=True,  # durable first: the offline run is the record
            # Only the first attempt forces: a rerun finds what it logged itself.
            force=bool(payload.get("force")) and job.attempts <= 1,
            s3_prefix=payload.get("s3_prefix"),
            progress=report,
            job_id=job.id,
        )
        if logged.skipped_duplicate and logged.job_id == job.id:
            # An earlier attempt of this job logged it before its worker died: this
            # job logged it, it did not find it logged.
            logged = dataclasses.replace(logged, skipped_duplicate=False)
        result = logged.to_json()
        if not upload:
            return PendingSync(result) if logged.pending_sync else result
        if logged.pending_sync or logged.lineage_pending:
            try:
                result |= _upload(evallog, settings, logged.run_id, progress.queue, report)
            except RetryableError as exc:
                if job.attempts < job.max_attempts:
                    raise
                # Out of attempts: the offline run stays the record, for `evalwb-tui sync`.
                return PendingSync(result | {"sync_message": str(exc)})
        progress.update(files_done=steps, files_total=steps)
        return result

    return run


def _upload(
    evallog: Any, settings: Settings, run_id: str, queue: TransferQueue, report: Any
) -> dict[str, Any]:
    """Sync this job's own offline run, then its lineage; upload progress goes to
    `report`. Other pending runs wait for `sync`."""
    synced = {r.run_id: r for r in evallog.sync_pending(settings, [run_id], progress=report)}
    _finish_log_jobs(queue, [r for r in synced.values() if r.ok])
    mine = synced.get(run_id)
    if mine is None:
        return {"pending_sync": False, "lineage_pending": False}  # synced meanwhile
    if not mine.ok:
        raise RetryableError(f"upload of run {run_id}: {mine.message}")
    return {
        "pending_sync": False,
        "lineage_pending": not mine.lineage_applied,
        "sync_message": mine.message,
    }


def _sync_handler(settings: Settings) -> Handler:
    """Upload every pending offline run; those already synced are not sent again."""

    def run(job: Job, progress: Progress) -> dict[str, Any]:
        from tui.services import evallog

        def report(event: Any) -> None:
            if event.stage == "upload":  # bytes sent; files here count runs
                progress.update(bytes_done=event.done, bytes_total=event.total)

        progress.update(files_done=0, files_total=len(evallog.pending_runs(settings)))
        # EvalLogError without a key: not retried.
        results = evallog.sync_pending(settings, progress=report)
        synced = [r for r in results if r.ok]
        progress.update(files_done=len(synced), files_total=len(results))
        _finish_log_jobs(progress.queue, synced)
        failed = [r for r in results if not r.ok]
        if failed:
            raise RetryableError(
                f"{len(failed)} of {len(results)} run(s) not synced; run {failed[0].run_id}: "
                f"{failed[0].message}"
            )
        return {
            "synced": [r.run_id for r in synced],
            "lineage_pending": [r.run_id for r in synced if not r.lineage_applied],
        }

    return run


def settle_synced_log_jobs(queue: TransferQueue, settings: Settings) -> list[int]:
    """Mark done the log jobs still waiting for sync whose run no longer waits in the log
    index: `evalwb-tui sync` or another tool synced it without going through the queue.
    Returns the ids of the jobs marked done."""
    waiting = [job for job in queue.list([PENDING_SYNC]) if job.kind == "log"]
    if not waiting:
        return []
    from tui.services import evallog

    pending = {run.run_id for run in evallog.pending_runs(settings)}
    synced = {
        run_id
        for job in waiting
        if (run_id := (job.result or {}).get("run_id")) and run_id not in pending
    }
    # Out of the index's pending list: uploaded, and lineage applied too.
    done = [evallog.SyncResult(run_id=r, run_dir="", ok=True, lineage_applied=True) for r in synced]
    return _finish_log_jobs(queue, done)


def _finish_log_jobs(queue: TransferQueue, synced: Iterable[Any]) -> list[int]:
    """Mark the log jobs waiting on these now-synced runs (`evallog.SyncResult`s) done,
    their result saying whether the lineage is still to apply; returns their ids."""
    outcome = {r.run_id: r for r in synced}
    finished: list[int] = []
    for job in queue.list([PENDING_SYNC]):
        result = job.result or {}
        run = outcome.get(result.get("run_id")) if job.kind == "log" else None
        if run is None:
            continue
        done = {**result, "pending_sync": False, "lineage_pending": not run.lineage_applied}
        if run.message:
            done["sync_message"] = run.message
        if queue.finish(job.id, done):
            finished.append(job.id)
    return finished


# --- watching ------------------------------------------------------------------------


class WorkerKeeper:
    """Notices that the worker a watcher waits on died (its lock is free while jobs are
    still queued or running) and starts another, saying so through `say`; or says once
    why none runs.

    Only a worker's death counts: one seen alive before (`seen_alive`, or on an earlier
    check), or a job left running with no worker. Queued jobs that no worker has taken
    yet are left for whoever starts one.
    """

    def __init__(
        self, settings: Settings, say: Callable[[str], None], *, seen_alive: bool = False
    ) -> None:
        self.settings = settings
        self.say = say
        self.seen_alive = seen_alive
        self.told = False

    def __call__(self, jobs: Iterable[Job]) -> None:
        """Check once, given the watched jobs as they are now."""
        jobs = list(jobs)
        if worker_status(self.settings).alive:
            self.seen_alive = True
            return
        if not any(job.state in MOVING_STATES for job in jobs):
            return
        if not (self.seen_alive or any(job.state == RUNNING for job in jobs)):
            return
        status = ensure_worker(self.settings, wait=3.0)
        if status.alive:
            self.say(
                f"the transfer worker stopped; started a new one (pid {status.pid}), "
                "which resumes the jobs"
            )
            self.told = False
        elif not self.told:
            self.say(
                "the transfer worker stopped and a new one did not start; its log says "
                f"why: {status.log}"
            )
            self.told = True


def watch_jobs(
    queue: TransferQueue,
    *,
    poll: float = 0.2,
    refresh: float = 1.0,
    include_new: bool = True,
    keeper: Callable[[list[Job]], None] | None = None,
) -> Iterator[list[Job]]:
    """Yield the watched jobs whenever the queue changes (at least every `refresh`
    seconds, for rates and countdowns) until none of them is queued or running.

    Watched: the jobs queued or running now, and with `include_new` any job added later.
    Nothing is yielded when no job is queued or running to begin with. `keeper` (a
    `WorkerKeeper`) is given the watched jobs at least every `refresh` seconds.
    """
    watched = {job.id for job in queue.list(MOVING_STATES)}
    if not watched:
        return
    newest = max(watched | {job.id for job in queue.list()})
    version, shown_at = None, 0.0
    while True:
        current = queue.data_version()
        if current != version or time.monotonic() - shown_at >= refresh:
            version, shown_at = current, time.monotonic()
            jobs = queue.list()
            if include_new:
                watched |= {job.id for job in jobs if job.id > newest}
            mine = [job for job in jobs if job.id in watched]
            yield mine
            if not any(job.state in MOVING_STATES for job in mine):
                return
            if keeper is not None:
                keeper(mine)
        time.sleep(poll)


__all__ = [
    "EXIT_ALREADY_RUNNING",
    "WorkerKeeper",
    "WorkerStatus",
    "default_handlers",
    "ensure_worker",
    "idle_exit_seconds",
    "queue_for_worker",
    "run_worker",
    "settings_fingerprint",
    "settle_synced_log_jobs",
    "watch_jobs",
    "worker_settings",
    "worker_status",
]

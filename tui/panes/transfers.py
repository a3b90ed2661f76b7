"""The Transfers pane: every job of the transfer queue, live, with cancel, retry and sync.

The pane only watches and steers the queue; a worker process runs the jobs. One thread
worker owns the pane's connection to the queue: it polls `data_version()` a few times a
second, lists the jobs only when something was committed, and carries out cancel and
pause. It posts at most one listing per MIN_REFRESH_SECONDS and listings replace each
other in the message queue, so a transfer that reports progress a thousand times a
second costs the event loop no more than a slow one. Rows are updated cell by cell; the
table is rebuilt only when jobs appear or go.

Retry, resume and sync queue a job for the worker in a thread of their own, through
`worker.queue_for_worker`: a worker started with other settings (before WANDB_API_KEY
was set, say) is replaced before it could take the job, which may take half a minute.

A job this app adds (a Registry download, an eval's log jobs, a sync) gets the cursor
when the pane is shown next, or when it appears while the user has not moved the
cursor since the pane was shown.
"""

from __future__ import annotations

import contextlib
import queue as queues
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from tui.services.settings import Settings
from tui.services.transfers import (
    CANCELLED,
    DONE,
    FAILED,
    LOCAL_PLACE,
    PAUSED,
    PENDING_SYNC,
    QUEUED,
    RUNNING,
    Job,
    JobNotFoundError,
    JobStateError,
    TransferQueue,
    TransferQueueError,
    open_queue,
    place_of,
    place_tag,
)
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.format import one_line
from tui.widgets.job_detail import (
    STATE_STYLES,
    TITLE_JOIN,
    JobDetail,
    display_state,
    job_title,
    lineage_note,
    title_parts,
)
from tui.widgets.progress_text import duration, job_bytes_cell, rate_cell, text_bar

if TYPE_CHECKING:
    from tui.services.worker import WorkerStatus

T = TypeVar("T")

# How often the watcher reads data_version(): cheap, one pragma on its own connection.
POLL_SECONDS = 0.1
# With no job queued or running only a job queued elsewhere can change the queue: the
# watcher looks less often, so an idle app barely wakes.
IDLE_POLL_SECONDS = 0.5
# The table is refreshed at most this often, however fast jobs report.
MIN_REFRESH_SECONDS = 0.2
# A runner that died commits nothing; listing again now and then shows it as stalled.
RESCAN_SECONDS = 2.0
# Nothing running can stall: the queue is only listed (and runs synced outside settled)
# this often.
IDLE_RESCAN_SECONDS = 10.0
# Below this many columns the table uses short states and a narrow bar.
NARROW_WIDTH = 110
# Tries, rate, then ETA are left out (the details show them) while the `what` column
# would be narrower than this: it is what tells the jobs apart.
MIN_WHAT_WIDTH = 24
OPTIONAL_COLUMNS = ("tries", "rate", "eta")

SYNC_TITLE = "sync pending offline runs"
LOADING_HINT = "reading the transfer queue…"
EMPTY_HINT = "No transfers yet: press d on a Registry version or run `evalwb-tui log DIR`."
SHORT_STATES = {"pending sync": "to sync", "cancelling": "stopping"}


@dataclass(frozen=True)
class Column:
    """One table column: `width` cells of content and one of gap."""

    key: str
    label: str
    width: int
    right: bool = False


def table_columns(width: int) -> list[Column]:
    """The columns for a table `width` cells wide; the `what` column takes what is left."""
    narrow = width < NARROW_WIDTH
    fixed = [
        Column("id", "#", 5, right=True),
        Column("kind", "kind", 8),
        Column("state", "state", 9 if narrow else 12),
        Column("progress", "progress", 10 if narrow else 15),
        Column("bytes", "bytes", 11, right=True),
        Column("rate", "rate", 7, right=True),
        Column("eta", "ETA", 6, right=True),
        Column("tries", "tries", 5, right=True),
    ]
    for key in OPTIONAL_COLUMNS:
        if _what_width(width, fixed) >= MIN_WHAT_WIDTH:
            break
        fixed = [c for c in fixed if c.key != key]
    what = Column("what", "what", max(8, _what_width(width, fixed)))
    return [*fixed[:2], what, *fixed[2:]]


def _what_width(width: int, fixed: list[Column]) -> int:
    # Borders and the vertical scrollbar take four cells; `what` has its gap too.
    return width - 4 - sum(c.width + 1 for c in fixed) - 1


def _fit(text: str, column: Column, style: str = "") -> Text:
    if len(text) > column.width:
        text = text[: column.width - 1] + "…"
    padded = text.rjust(column.width) if column.right else text.ljust(column.width)
    return Text(padded + " ", style=style, no_wrap=True)


def _head(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[len(text) - max(0, width - 1) :]


def fit_title(parts: list[str], width: int) -> str:
    """`parts` joined by ` · ` in at most `width` cells, keeping what tells jobs apart: the
    first part whole, a middle part's end (`…my-model_v3`: a checkpoint's version), the
    last part's start; a lone path or reference keeps its end (the name)."""
    if len(parts) == 1:
        one = parts[0]
        return _tail(one, width) if "/" in one else _head(one, width)
    if len(TITLE_JOIN.join(parts)) <= width:
        return TITLE_JOIN.join(parts)
    shown = _head(parts[0], width)
    for index, part in enumerate(parts[1:], start=1):
        room = width - len(shown) - len(TITLE_JOIN)
        if room < 4:
            break  # not even `…abc`: the cut so far says there is more
        last = index == len(parts) - 1
        fitted = _head(part, room) if last else _tail(part, room)
        shown += TITLE_JOIN + fitted
        if fitted != part:
            break
    return shown


def row_cells(job: Job, columns: list[Column], here: str | None = None) -> tuple[Text, ...]:
    """The table cells of `job`, fitted to `columns`; a job of another place than `here`
    names its place first in the `what` column."""
    width = {c.key: c.width for c in columns}
    tag = place_tag(job, here)
    what = [f"[{tag}]", *title_parts(job)] if tag else title_parts(job)
    narrow = width["state"] < 12
    state = display_state(job)
    active = job.state == RUNNING and not job.stalled
    values: dict[str, tuple[str, str]] = {
        "id": (f"#{job.id}", "dim"),
        "kind": (job.kind, ""),
        "what": (fit_title(what, width["what"]), ""),
        "state": (SHORT_STATES.get(state, state) if narrow else state, STATE_STYLES.get(state, "")),
        "progress": (text_bar(job.fraction, 5 if narrow else 10), ""),
        "bytes": (job_bytes_cell(job), ""),
        "rate": (rate_cell(job.rate) if active else "-", ""),
        "eta": (duration(job.eta) if active else "-", ""),
        "tries": (f"{job.attempts}/{job.max_attempts}", ""),
    }
    return tuple(_fit(values[c.key][0], c, values[c.key][1]) for c in columns)


def _named(job: Job) -> str:
    """`download #3 my-model:v3`: how notes and questions name a job."""
    return f"{job.kind} #{job.id} {job_title(job)}"


# How a warning names a job's state: "#6 has failed", not "#6 is failed".
STATE_PHRASES = {
    "stalled": "is stalled",
    "cancelling": "is being cancelled",
    "retrying": "waits to retry",
    "pending sync": "waits for sync",
    FAILED: "has failed",
    CANCELLED: "was cancelled",
}


def state_phrase(job: Job) -> str:
    """`has failed`, `is done`, `waits for sync`: the job's state in a sentence."""
    state = display_state(job)
    return STATE_PHRASES.get(state, f"is {state}")


def _changed(old: Job | None, new: Job) -> bool:
    """Whether `new` may show differently from `old`; every stored change moves updated_at."""
    return old is None or (old.updated_at, old.stalled) != (new.updated_at, new.stalled)


def _cell_key(cells: tuple[Text, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((cell.plain, str(cell.style)) for cell in cells)


# --- commands the watcher thread carries out -------------------------------------------

Outcome = tuple[str, SeverityLevel] | None
Command = Callable[[TransferQueue], Outcome]


def cancel_command(job_id: int) -> Command:
    """Cancel `job_id` now (queued or paused) or ask its runner to stop (running)."""

    def run(queue: TransferQueue) -> Outcome:
        job = queue.cancel(job_id)
        if job.state == CANCELLED:
            return f"Transfer #{job_id} cancelled", "information"
        return f"Cancelling #{job_id} {job_title(job)}: it stops at the next chunk", "information"

    return run


def pause_command(job_id: int) -> Command:
    """Pause `job_id` (a running one is handed back by its runner, progress kept)."""

    def run(queue: TransferQueue) -> Outcome:
        job = queue.pause(job_id)
        if job.state == PAUSED:
            return f"Transfer #{job_id} paused", "information"
        return (
            f"Pausing #{job_id} {job_title(job)}: it stops at the next chunk and keeps its"
            " progress",
            "information",
        )

    return run


# --- queueing for the worker -----------------------------------------------------------


@dataclass(frozen=True)
class WorkerNote:
    """What will run a queued job, in a sentence; `news` when it deserves a note of its
    own (a worker was replaced, an outdated one still runs, none could be started)."""

    text: str
    severity: SeverityLevel = "information"
    news: bool = False


NO_SETTINGS_NOTE = WorkerNote("a worker will pick it up")
SEVERITY_RANK: dict[SeverityLevel, int] = {"information": 0, "warning": 1, "error": 2}


def worker_note(status: WorkerStatus) -> WorkerNote:
    """The sentence for a worker made sure of by `worker.queue_for_worker`."""
    pid = status.pid
    if status.outdated:
        return WorkerNote(
            f"an older transfer worker (pid {pid}) started with other settings still runs and"
            f" may take it; stop it with `kill {pid}`, then start one with `evalwb-tui worker`",
            "warning",
            news=True,
        )
    if status.restarted:
        return WorkerNote(
            f"restarted the transfer worker with the new settings (pid {pid})", news=True
        )
    if status.started:
        return WorkerNote(f"started a worker (pid {pid})")
    return WorkerNote(f"the worker (pid {pid}) picks it up")


def queue_with_worker(settings: Settings | None, enqueue: Callable[[], T]) -> tuple[T, WorkerNote]:
    """Call `enqueue` (it queues jobs) so that a worker running with `settings` takes
    them, never one started with other settings; what it returned, and what runs them.

    It may wait up to a minute for an outdated worker to stop: call it from a thread.
    When no worker can be started the jobs are queued all the same and the note says so.
    """
    if settings is None:  # a bare queue file: whatever runs it takes them
        return enqueue(), NO_SETTINGS_NOTE
    from tui.services.worker import queue_for_worker

    queued: list[T] = []
    failed: list[BaseException] = []

    def once() -> T:
        try:
            queued.append(enqueue())
        except BaseException as exc:
            failed.append(exc)
            raise
        return queued[0]

    try:
        result, status = queue_for_worker(settings, once)
    except Exception as exc:
        if failed:
            raise  # queueing itself failed: nothing to run
        # The worker could not be started (or stopped): the jobs wait for one.
        result = queued[0] if queued else enqueue()
        text = f"no worker could be started ({one_line(exc)}); run `evalwb-tui worker`"
        return result, WorkerNote(text, "warning", news=True)
    return result, worker_note(status)


@dataclass(frozen=True)
class Queued:
    """What a command that queued a job says; `job_id` is a job it added."""

    text: str
    severity: SeverityLevel = "information"
    job_id: int | None = None


Change = Callable[[TransferQueue], Queued]


def resume_change(job_id: int) -> Change:
    """Queue a paused job again (or withdraw a pause not yet carried out)."""

    def run(queue: TransferQueue) -> Queued:
        queue.resume(job_id)
        return Queued(f"Transfer #{job_id} resumed")

    return run


def retry_change(job_id: int) -> Change:
    """Queue a failed or cancelled job again."""

    def run(queue: TransferQueue) -> Queued:
        queue.retry(job_id)
        return Queued(f"Transfer #{job_id} queued again")

    return run


def sync_change(queue: TransferQueue) -> Queued:
    """Queue one sync job for the pending offline runs, unless one is already waiting."""
    waiting = [job for job in queue.list((QUEUED, RUNNING)) if job.kind == "sync"]
    if waiting:
        return Queued(f"A sync is already queued (#{waiting[-1].id})", "warning")
    job = queue.enqueue("sync", SYNC_TITLE, {"runs": "pending"})
    return Queued(f"Sync queued as #{job.id}", job_id=job.id)


# What a sync needs first when no key is set: without one every sync job fails.
NO_KEY_HINT = "set WANDB_API_KEY (environment or .env) and restart the app"


def needs_key(settings: Settings | None) -> bool:
    """True when syncing cannot work: settings are known and hold no W&B key."""
    return settings is not None and settings.wandb_api_key is None


def added_job_id(message: Message) -> int | None:
    """The job another pane says it queued, from a message passing through the app: a
    Registry download, the newest log job of a finished eval."""
    from tui.panes.registry import RegistryPane
    from tui.panes.run_config import RunConfigPane

    if isinstance(message, RegistryPane.DownloadUpdate) and message.first and message.job:
        return message.job.id
    if isinstance(message, RunConfigPane.LoggingQueued) and message.job_ids:
        return max(message.job_ids)
    return None


_STOP = object()
_SELECT = object()


@dataclass
class _WatchState:
    """What the watcher thread remembers between polls."""

    version: int | None = None
    dirty: bool = True
    last_post: float = 0.0
    last_list: float = 0.0
    last_settle: float | None = None
    error: str | None = None
    moving: bool = True  # a job was queued or running at the last listing

    def wait(self) -> float:
        """Seconds until the next poll: sooner when a listing waits only for the throttle."""
        if not self.dirty:
            return POLL_SECONDS if self.moving else IDLE_POLL_SECONDS
        due = self.last_post + MIN_REFRESH_SECONDS - time.monotonic()
        return max(0.0, min(POLL_SECONDS, due))

    @property
    def rescan(self) -> float:
        """Seconds between listings that nothing asked for."""
        return RESCAN_SECONDS if self.moving else IDLE_RESCAN_SECONDS


class TransfersPane(Vertical):
    """Every job of the transfer queue, newest first, with the selected job's details."""

    DEFAULT_CSS = """
    TransfersPane {
        height: 1fr;
    }
    TransfersPane #transfers-hint {
        height: auto;
        padding: 0 1;
        color: $text-muted;
        border: round $primary 50%;
        border-title-align: left;
    }
    TransfersPane #transfers-table {
        height: auto;
        max-height: 60%;
        min-height: 5;
        border: round $primary 50%;
        border-title-align: left;
        scrollbar-gutter: stable;
    }
    TransfersPane #transfers-detail {
        height: 1fr;
        min-height: 6;
        border: round $primary 50%;
        border-title-align: left;
        padding: 0 1;
    }
    TransfersPane #transfers-table:focus, TransfersPane #transfers-detail:focus,
    TransfersPane #transfers-hint:focus {
        border: round $accent;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel", "Cancel", id="transfers.cancel"),
        Binding("r", "retry", "Retry", id="transfers.retry"),
        Binding("p", "pause", "Pause/resume", id="transfers.pause"),
        Binding("s", "sync", "Sync offline", id="transfers.sync"),
        Binding("escape", "back", "Back to list", show=False, id="transfers.back"),
    ]

    class JobsListed(Message):
        """A fresh listing of the queue, with the selected job's full record."""

        def __init__(self, jobs: list[Job], detail: Job | None) -> None:
            super().__init__()
            self.jobs = jobs
            self.detail = detail

        def can_replace(self, message: Message) -> bool:
            # Only the newest listing matters: older ones waiting in the queue are dropped.
            return isinstance(message, TransfersPane.JobsListed)

    class DetailLoaded(Message):
        """The selected job's full record, after the cursor moved."""

        def __init__(self, job: Job | None) -> None:
            super().__init__()
            self.job = job

    class Notice(Message):
        """The outcome of a command, for a notification."""

        def __init__(self, text: str, severity: SeverityLevel) -> None:
            super().__init__()
            self.text = text
            self.severity = severity

    class ChangeDone(Message):
        """A job was queued (again) for the worker: what to say, and a job it added."""

        def __init__(self, text: str, severity: SeverityLevel, job_id: int | None) -> None:
            super().__init__()
            self.text = text
            self.severity = severity
            self.job_id = job_id

    class Unavailable(Message):
        """The queue cannot be read; `error` says why."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(
        self,
        queue_path: Path | None = None,
        settings: Settings | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        if queue_path is None and settings is None:
            raise ValueError("TransfersPane needs a queue_path or settings")
        self.queue_path = queue_path
        self.settings = settings
        # How many times the table was refreshed: the bound that coalescing keeps.
        self.refresh_count = 0
        self._commands: queues.Queue[object] = queues.Queue()
        # One queueing change at a time: two quick `s` presses must queue one sync.
        self._queueing = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._order: list[int] = []
        self._cells: dict[int, tuple[tuple[str, str], ...]] = {}
        self._columns: list[Column] = []
        # Job states of the previous listing; None until the first one arrived.
        self._states: dict[int, str] | None = None
        # Read by the watcher thread; a plain attribute swap is atomic.
        self._selected_id: int | None = None
        # The full record (with per-file progress) in the detail view.
        self.detail_job: Job | None = None
        # A job this app added (a download, a log job, a sync), for the cursor to go to.
        self._follow_id: int | None = None
        self._shown = False
        # The user moved the cursor since the pane was last shown: leave it where it is.
        self._user_moved = False

    def compose(self) -> ComposeResult:
        yield _Hint(LOADING_HINT, id="transfers-hint", markup=False)
        table: DataTable[Text] = DataTable(
            id="transfers-table", cursor_type="row", cell_padding=0, zebra_stripes=False
        )
        table.display = False
        yield table
        detail = JobDetail(id="transfers-detail")
        detail.key_missing = needs_key(self.settings)
        detail.display = False
        yield detail

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#transfers-table", DataTable)

    @property
    def detail(self) -> JobDetail:
        return self.query_one(JobDetail)

    @property
    def hint(self) -> Static:
        return self.query_one("#transfers-hint", Static)

    @property
    def selected_job(self) -> Job | None:
        """The job under the cursor, as last listed."""
        return None if self._selected_id is None else self._jobs.get(self._selected_id)

    def on_mount(self) -> None:
        self.table.border_title = "transfers"
        self.hint.border_title = "transfers"
        self.detail.border_title = "details"
        self._set_columns(self.size.width or 80)
        self._claim_focus()
        self._watch()
        # Other panes tell the app what they queued; the app is where they meet.
        self.app.message_signal.subscribe(self, self._app_message, immediate=True)
        # A download queued before this pane was loaded.
        started = getattr(self.app, "jobs_notified_by_starter", ())
        self._follow_id = max(started, default=None)

    def on_show(self) -> None:
        self._shown, self._user_moved = True, False
        self._follow()
        self._claim_focus()

    def on_hide(self) -> None:
        self._shown = False
        self._claim_focus()

    def on_unmount(self) -> None:
        self._commands.put(_STOP)
        self.app.message_signal.unsubscribe(self)

    def on_resize(self, event: events.Resize) -> None:
        if self._set_columns(event.size.width):
            self._rebuild()

    # -- the watcher thread ----------------------------------------------------------

    def _open(self) -> TransferQueue:
        if self.queue_path is not None:
            return TransferQueue(self.queue_path)
        assert self.settings is not None
        return open_queue(self.settings)

    @work(thread=True, exit_on_error=False, group="transfers-watch", exclusive=True)
    def _watch(self) -> None:
        try:
            queue = self._open()
        except (TransferQueueError, OSError) as exc:
            self.post_message(self.Unavailable(one_line(exc)))
            return
        try:
            self._watch_loop(queue)
        finally:
            queue.close()

    def _watch_loop(self, queue: TransferQueue) -> None:
        worker = get_current_worker()
        state = _WatchState()
        while not worker.is_cancelled:
            try:
                command = self._commands.get(timeout=state.wait())
            except queues.Empty:
                command = None
            if command is _STOP:
                return
            try:
                self._watch_step(queue, state, command)
            except TransferQueueError as exc:
                self.post_message(self.Unavailable(one_line(exc)))
                return
            except Exception as exc:  # a busy or damaged queue: say so once, keep watching
                error = one_line(exc)
                if error != state.error:
                    self.post_message(self.Notice(error, "error"))
                state.error = error
                time.sleep(RESCAN_SECONDS)
            else:
                state.error = None

    def _watch_step(self, queue: TransferQueue, state: _WatchState, command: object) -> None:
        """Carry out `command`, then post a listing if the queue changed and the last
        listing is old enough."""
        if command is _SELECT:
            self.post_message(self.DetailLoaded(self._detail(queue)))
        elif command is not None:
            self._run_command(queue, command)  # type: ignore[arg-type]
            state.dirty, state.last_post = True, 0.0  # show the effect of a key at once
        now = time.monotonic()
        if state.last_settle is None or now - state.last_settle >= state.rescan:
            state.last_settle = now
            self._settle(queue)
        version = queue.data_version()
        if version != state.version or now - state.last_list >= state.rescan:
            state.version, state.dirty = version, True
        if state.dirty and now - state.last_post >= MIN_REFRESH_SECONDS:
            jobs = queue.list()
            self.post_message(self.JobsListed(jobs, self._detail(queue)))
            state.dirty, state.last_post, state.last_list = False, now, now
            state.moving = any(job.state in (QUEUED, RUNNING) for job in jobs)

    def _settle(self, queue: TransferQueue) -> None:
        """Log jobs whose run was synced outside the queue (`evalwb-tui sync`) are done:
        without this they would wait for sync here forever."""
        if self.settings is None:
            return
        from tui.services.worker import settle_synced_log_jobs

        # A busy or unreadable log index: the next pass, or a sync job, settles them.
        with contextlib.suppress(sqlite3.Error, OSError):
            settle_synced_log_jobs(queue, self.settings)

    def _detail(self, queue: TransferQueue) -> Job | None:
        job_id = self._selected_id
        if job_id is None:
            return None
        try:
            return queue.get(job_id)
        except JobNotFoundError:
            return None

    def _run_command(self, queue: TransferQueue, command: Command) -> None:
        try:
            outcome = command(queue)
        except (JobStateError, JobNotFoundError) as exc:
            outcome = one_line(exc), "warning"
        except Exception as exc:  # the command failed: one line, the pane goes on
            outcome = one_line(exc), "error"
        if outcome is not None:
            self.post_message(self.Notice(*outcome))

    @work(thread=True, exit_on_error=False, group="transfers-queueing")
    def _queue_change(self, change: Change) -> None:
        """Carry out `change` so that a worker with the app's settings runs the job. Its
        own thread and connection: replacing an outdated worker may take half a minute,
        and the listing goes on meanwhile."""
        with self._queueing:
            try:
                queue = self._open()
            except (TransferQueueError, OSError) as exc:
                self.post_message(self.Notice(one_line(exc), "error"))
                return
            try:
                done, note = queue_with_worker(self.settings, lambda: change(queue))
            except (JobStateError, JobNotFoundError) as exc:
                self.post_message(self.Notice(one_line(exc), "warning"))
                return
            except Exception as exc:  # the queue refused it: one line, the pane goes on
                self.post_message(self.Notice(one_line(exc), "error"))
                return
            finally:
                queue.close()
        severity = max(done.severity, note.severity, key=SEVERITY_RANK.__getitem__)
        self.post_message(self.ChangeDone(f"{done.text}; {note.text}", severity, done.job_id))

    # -- listings --------------------------------------------------------------------

    @on(JobsListed)
    def _jobs_listed(self, event: JobsListed) -> None:
        self.refresh_count += 1
        jobs = sorted(event.jobs, key=lambda job: job.id, reverse=True)
        self._notify_transitions(jobs)
        previous, self._jobs = self._jobs, {job.id: job for job in jobs}
        if not jobs:
            self._show_empty()
            return
        self._show_table()
        order = [job.id for job in jobs]
        if order != self._order:
            self._rebuild()
        else:
            self._update_cells([job for job in jobs if _changed(previous.get(job.id), job)])
        self._show_detail(event.detail)
        self._follow()

    @on(DetailLoaded)
    def _detail_loaded(self, event: DetailLoaded) -> None:
        self._show_detail(event.job)

    def _show_detail(self, job: Job | None) -> None:
        """Show a full record (with files) if it is still the selected job's."""
        if job is not None and job.id == self._selected_id:
            self.detail_job = job
            self.detail.show_job(job)

    @on(Notice)
    def _notice(self, event: Notice) -> None:
        self.app.notify(event.text, severity=event.severity, markup=False)

    @on(ChangeDone)
    def _change_done(self, event: ChangeDone) -> None:
        self.app.notify(event.text, severity=event.severity, markup=False)
        if event.job_id is not None:
            self.follow(event.job_id)

    @on(Unavailable)
    def _unavailable(self, event: Unavailable) -> None:
        self.hint.update(f"Transfers unavailable: {event.error}")
        self.hint.display = True
        self.app.notify(event.error, severity="error", markup=False)

    def _notify_transitions(self, jobs: list[Job]) -> None:
        """Notify jobs that finished or failed since the last listing; jobs that had
        already ended when the pane opened stay quiet, and so do jobs whose starter
        notifies their end (one note per job)."""
        before, self._states = self._states, {job.id: job.state for job in jobs}
        if before is None:
            return
        # Jobs another pane started and reports on itself (a Registry download).
        elsewhere = getattr(self.app, "jobs_notified_by_starter", ())
        for job in jobs:
            old = before.get(job.id)
            if old == job.state or job.state not in (DONE, FAILED, PENDING_SYNC):
                continue
            if job.id in elsewhere:
                continue
            if job.state == DONE and (note := lineage_note(job)):
                self.app.notify(
                    f"{_named(job)}: {note}",
                    title="Done, lineage missing",
                    severity="warning",
                    markup=False,
                    timeout=10,
                )
            elif job.state == DONE:
                self.app.notify(_named(job), title="Transfer done", markup=False)
            elif job.state == PENDING_SYNC:
                then = (
                    f"{NO_KEY_HINT}; then s syncs it" if needs_key(self.settings) else "s syncs it"
                )
                self.app.notify(
                    f"{_named(job)} is stored offline; {then}",
                    title="Waiting for sync",
                    markup=False,
                )
            else:
                self.app.notify(
                    f"{_named(job)}: {job.last_error or 'no error recorded'}",
                    title="Transfer failed",
                    severity="error",
                    markup=False,
                    timeout=10,
                )

    def _set_columns(self, width: int) -> bool:
        """Fit the columns to `width`; True when they changed."""
        columns = table_columns(width)
        if columns == self._columns:
            return False
        self._columns = columns
        return True

    @property
    def _here(self) -> str | None:
        """The place this app's jobs belong to (jobs of other places say theirs): local
        on a local registry (the demo's too), else the W&B the settings name."""
        if getattr(getattr(self.app, "registry", None), "root", None) is not None:
            return LOCAL_PLACE
        return place_of(self.settings) if self.settings is not None else None

    def _rebuild(self) -> None:
        """Lay the rows out again (jobs came or went, or the width changed)."""
        table = self.table
        selected = self._selected_id
        table.clear(columns=True)
        for column in self._columns:
            table.add_column(_fit(column.label, column, "bold"), key=column.key)
        jobs = sorted(self._jobs.values(), key=lambda job: job.id, reverse=True)
        self._order = [job.id for job in jobs]
        self._cells = {}
        for job in jobs:
            cells = row_cells(job, self._columns, self._here)
            self._cells[job.id] = _cell_key(cells)
            table.add_row(*cells, key=str(job.id))
        if not jobs:
            return
        index = self._order.index(selected) if selected in self._jobs else 0
        table.move_cursor(row=index, animate=False, scroll=True)
        self._select(self._order[index])

    def _update_cells(self, jobs: list[Job]) -> None:
        """Change only the cells of `jobs` whose text or style changed."""
        table = self.table
        for job in jobs:
            cells = row_cells(job, self._columns, self._here)
            key = _cell_key(cells)
            old = self._cells.get(job.id)
            if old == key:
                continue
            for index, column in enumerate(self._columns):
                if old is None or old[index] != key[index]:
                    table.update_cell(str(job.id), column.key, cells[index])
            self._cells[job.id] = key

    def _show_empty(self) -> None:
        self._order, self._cells = [], {}
        self._select(None)
        self.table.clear()
        self.table.display = False
        self.detail.display = False
        self.hint.update(EMPTY_HINT)
        self.hint.display = True
        self._claim_focus()

    def _show_table(self) -> None:
        if self.table.display:
            return
        self.hint.display = False
        self.table.display = True
        self.detail.display = True
        self._claim_focus()

    def _claim_focus(self) -> None:
        """After the next layout: a hidden pane gives up the focus; a shown one takes it
        when no shown widget has it."""
        self.call_after_refresh(self._settle_focus)

    def _settle_focus(self) -> None:
        focused = self.screen.focused
        chain = self.screen.focus_chain
        if focused is not None and focused not in chain and self in focused.ancestors:
            # Keys sent to a hidden tab would act on jobs nobody sees.
            self.screen.set_focus(None)
            focused = None
        if (focused is None or focused not in chain) and (
            self.table in chain or self.hint in chain
        ):
            self.focus_default()

    def focus_default(self) -> None:
        """Focus the job list (or the hint while there are no jobs), e.g. on switching
        to this pane."""
        self.screen.set_focus(self.table if self.table.display else self.hint)

    # -- selection -------------------------------------------------------------------

    def _select(self, job_id: int | None) -> None:
        if job_id == self._selected_id:
            return
        self._selected_id = job_id
        if job_id is None:
            return
        job = self._jobs.get(job_id)
        if job is not None:
            self.detail.show_job(job, files_loaded=False)  # its files once fetched
        self.detail.scroll_home(animate=False)
        self._commands.put(_SELECT)

    @on(DataTable.RowHighlighted, "#transfers-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        job_id = int(event.row_key.value)
        cursor = self.table.cursor_row
        if not 0 <= cursor < len(self._order) or self._order[cursor] != job_id:
            return  # stale: posted before the cursor moved on (a rebuild posts row 0 first)
        # The pane moves the cursor only along with the selection: any other move is the
        # user's (a key, a click).
        if job_id != self._selected_id and self._shown:
            self._user_moved = True
        self._select(job_id)

    # -- following the jobs this app adds ----------------------------------------------

    def follow(self, job_id: int) -> None:
        """Put the cursor on `job_id`, a job this app just added: when the pane is shown
        next, or as soon as it is listed while the pane is shown, unless the user moved
        the cursor since (theirs is not taken away while they look)."""
        if self._shown and self._user_moved:
            return
        self._follow_id = job_id
        self._follow()

    def _follow(self) -> None:
        job_id = self._follow_id
        if job_id is None or not self._shown or job_id not in self._order:
            return  # when shown, or when listed
        self._follow_id = None
        if self._user_moved or job_id == self._selected_id:
            return
        self.table.move_cursor(row=self._order.index(job_id), animate=False, scroll=True)
        self._select(job_id)

    def _app_message(self, message: Message) -> None:
        job_id = added_job_id(message)
        if job_id is not None:
            self.follow(job_id)

    @on(DataTable.RowSelected, "#transfers-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.detail.focus()

    # -- actions ---------------------------------------------------------------------

    def action_back(self) -> None:
        if self.detail.has_focus:
            self.table.focus()

    def action_cancel(self) -> None:
        job = self.selected_job
        if job is None:
            self.app.notify("No transfer selected", severity="warning")
            return
        if job.state not in (QUEUED, RUNNING, PAUSED):
            self.app.notify(
                f"#{job.id} {state_phrase(job)}; only queued, running or paused jobs can be"
                " cancelled",
                severity="warning",
                markup=False,
            )
            return
        question = f"Cancel {_named(job)}?"

        def answered(yes: bool | None) -> None:
            if yes:
                self._commands.put(cancel_command(job.id))

        self.app.push_screen(ConfirmScreen(question, yes="Cancel it", no="Keep"), answered)

    def action_retry(self) -> None:
        job = self.selected_job
        if job is None:
            self.app.notify("No transfer selected", severity="warning")
            return
        if job.state not in (FAILED, CANCELLED):
            self.app.notify(
                f"#{job.id} {state_phrase(job)}; only failed or cancelled jobs can be retried",
                severity="warning",
                markup=False,
            )
            return
        self._queue_change(retry_change(job.id))

    def action_pause(self) -> None:
        job = self.selected_job
        if job is None:
            self.app.notify("No transfer selected", severity="warning")
            return
        resume = job.state == PAUSED or (job.state == RUNNING and job.pause_requested)
        if not resume and job.state not in (QUEUED, RUNNING):
            self.app.notify(
                f"#{job.id} {state_phrase(job)}; only queued or running jobs can be paused",
                severity="warning",
                markup=False,
            )
            return
        if resume:
            self._queue_change(resume_change(job.id))
        else:
            self._commands.put(pause_command(job.id))

    def action_sync(self) -> None:
        if needs_key(self.settings):
            self.app.notify(
                f"Nothing synced: uploading needs a W&B key; {NO_KEY_HINT}",
                severity="warning",
                markup=False,
            )
            return
        self._user_moved = False  # the sync is what they look for now
        self._queue_change(sync_change)


class _Hint(Static, can_focus=True):
    """The one-line hint shown instead of an empty table; focusable so the pane's keys
    work before the first job exists."""

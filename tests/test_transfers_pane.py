"""Pilot tests of the Transfers pane on a real TransferQueue run by a real Runner.

The runner works in a background thread of the test process with small real handlers
(a chunked file copy, a failing upload, a very chatty reporter), so the pane watches
live progress written to SQLite exactly as the worker process writes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.geometry import Region
from textual.notifications import SeverityLevel
from textual.pilot import Pilot
from textual.widgets import ContentSwitcher, Footer, Static

from tui.panes.transfers import (
    EMPTY_HINT,
    MIN_REFRESH_SECONDS,
    MIN_WHAT_WIDTH,
    TransfersPane,
    table_columns,
)
from tui.services.settings import Settings, load_settings
from tui.services.transfers import (
    CANCELLED,
    DONE,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    Backoff,
    FileProgress,
    Handler,
    Job,
    Progress,
    Runner,
    TransferQueue,
    open_queue,
    queue_path,
)
from tui.services.worker import default_handlers, worker_status
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.download_status import status_text
from tui.widgets.progress_text import (
    bytes_cell,
    compact_size,
    count_text,
    duration,
    text_bar,
)

FAST = Backoff(base=0.05, cap=0.2)
SIZE = (100, 30)


# --- real handlers ----------------------------------------------------------------------


def copy_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """Copy payload `src` to `dst` chunk by chunk, reporting bytes and the file."""
    src, dst = Path(job.payload["src"]), Path(job.payload["dst"])
    chunk, delay = job.payload["chunk"], job.payload.get("delay", 0.0)
    size = src.stat().st_size
    progress.update(bytes_total=size, bytes_done=0, files_total=1, files_done=0)
    done = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        while data := fin.read(chunk):
            if progress.cancelled:
                return {"bytes": done, "stopped": True}
            fout.write(data)
            done += len(data)
            progress.update(bytes_done=done, file=FileProgress(src.name, done, size))
            time.sleep(delay)
    progress.update(files_done=1, file=FileProgress(src.name, size, size, DONE))
    return {"bytes": size}


def failing_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """Write part of a file, then fail with an error that is not worth retrying."""
    progress.update(bytes_total=1000, bytes_done=250, file=FileProgress("part.bin", 250, 1000))
    raise PermissionError(f"permission denied: {job.payload['dst']}")


def chatty_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """Report progress as fast as the queue takes it, for `seconds` (sooner once the
    file `stop` exists, when given); count the reports."""
    total, seconds = job.payload["total"], job.payload["seconds"]
    stop = Path(job.payload["stop"]) if job.payload.get("stop") else None
    start = time.monotonic()
    reports = 0
    while (elapsed := time.monotonic() - start) < seconds:
        if stop is not None and stop.exists():
            break
        progress.update(bytes_total=total, bytes_done=int(total * elapsed / seconds))
        reports += 1
    progress.update(bytes_done=total)
    return {"reports": reports}


HANDLERS: dict[str, Handler] = {
    "download": copy_handler,
    "upload": failing_handler,
    "log": chatty_handler,
}


class RunnerThread:
    """A Runner claiming jobs in a background thread until stopped (at most 30 s)."""

    def __init__(
        self, path: Path, handlers: Mapping[str, Handler] = HANDLERS, interval: float = 0.05
    ) -> None:
        self.queue = TransferQueue(path, backoff=FAST)
        self.runner = Runner(self.queue, handlers, interval=interval)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="test-runner")

    def _loop(self) -> None:
        deadline = time.monotonic() + 30
        try:
            while not self.stopped.is_set() and time.monotonic() < deadline:
                if self.runner.run_once() is None:
                    self.stopped.wait(0.02)
        finally:
            self.queue.close()

    def __enter__(self) -> RunnerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the runner did not stop"


class PaneApp(App[None]):
    """The pane alone in an app that remembers every notification."""

    def __init__(self, path: Path | None, settings: Settings | None = None) -> None:
        super().__init__()
        self.path = path
        self.settings = settings
        self.notes: list[tuple[str, str, SeverityLevel]] = []

    def compose(self) -> ComposeResult:
        yield TransfersPane(queue_path=self.path, settings=self.settings, id="transfers")
        yield Footer()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notes.append((title, message, severity))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def queue_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state" / "transfers.sqlite"


@pytest.fixture
def queue(queue_file: Path) -> Iterator[TransferQueue]:
    queue = TransferQueue(queue_file, backoff=FAST)
    yield queue
    queue.close()


def copy_job(queue: TransferQueue, tmp_path: Path, *, size: int, chunk: int, delay: float) -> Job:
    src = tmp_path / f"model-{size}.safetensors"
    src.write_bytes(os.urandom(size))
    payload = {"src": str(src), "dst": str(tmp_path / "copy.bin"), "chunk": chunk, "delay": delay}
    return queue.enqueue("download", "my-model:v3", payload, max_attempts=1)


def pane_of(app: App[None]) -> TransfersPane:
    return app.query_one(TransfersPane)


async def wait_for(pilot: Pilot, ready: Callable[[], Any], what: str, seconds: float = 10) -> Any:
    """Let the app work until `ready()` is truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def cell(app: App[None], job_id: int, column: str) -> str:
    """The text of one table cell, as shown."""
    pane = pane_of(app)
    if str(job_id) not in pane.table.rows:
        return ""
    return pane.table.get_cell(str(job_id), column).plain.strip()


def percent(app: App[None], job_id: int) -> int | None:
    text = cell(app, job_id, "progress")
    return int(text.split()[-1].rstrip("%")) if text.endswith("%") else None


def detail_text(app: App[None]) -> str:
    """Everything the detail view holds, scrolled out of sight or not."""
    body = pane_of(app).detail.body
    region = Region(0, 0, body.size.width, body.size.height)
    return "\n".join(strip.text for strip in body.render_lines(region))


def screen_text(app: App[None]) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def notes_titled(app: PaneApp, title: str) -> list[tuple[str, str, SeverityLevel]]:
    return [note for note in app.notes if note[0] == title]


# --- behaviour ---------------------------------------------------------------------------


async def test_an_empty_queue_shows_how_jobs_get_there(queue_file: Path) -> None:
    app = PaneApp(queue_file)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        assert not pane.table.display
        await pilot.pause()
        assert EMPTY_HINT in screen_text(app)  # on one line at 80 columns
        assert "press d on a Registry version" in EMPTY_HINT and "evalwb-tui log" in EMPTY_HINT


async def test_a_running_copy_shows_state_and_advancing_progress_then_done(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        job = copy_job(queue, tmp_path, size=2 << 20, chunk=32 << 10, delay=0.015)
        await wait_for(pilot, lambda: cell(app, job.id, "state") == "queued", "the queued row")
        assert cell(app, job.id, "what") == "my-model:v3"
        with RunnerThread(queue_file):
            await wait_for(pilot, lambda: cell(app, job.id, "state") == RUNNING, "running")
            first = await wait_for(pilot, lambda: percent(app, job.id), "some progress")
            later = await wait_for(
                pilot, lambda: (p := percent(app, job.id)) and p > first and p, "more progress"
            )
            assert 0 < first < later
            assert "/2.0M" in cell(app, job.id, "bytes")
            assert cell(app, job.id, "rate").endswith("/s")
            await wait_for(pilot, lambda: cell(app, job.id, "state") == DONE, "done", 20)
        assert percent(app, job.id) == 100
        assert cell(app, job.id, "bytes") == "2.0M/2.0M"
        await wait_for(pilot, lambda: notes_titled(app, "Transfer done"), "a done notification")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.state == DONE, "detail")
        text = detail_text(app)
        assert f"model-{2 << 20}.safetensors" in text  # the per-file list
        assert "1 of 1 files" in text


async def test_cancel_asks_first_then_moves_a_running_job_to_cancelled(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    job = copy_job(queue, tmp_path, size=4 << 20, chunk=16 << 10, delay=0.02)
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        with RunnerThread(queue_file):
            await wait_for(pilot, lambda: cell(app, job.id, "state") == RUNNING, "running")
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("n")  # keep it
            await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "closed")
            await pilot.pause(0.3)
            assert queue.get(job.id).state == RUNNING
            assert not queue.get(job.id).cancel_requested

            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await pilot.press("y")
            await wait_for(pilot, lambda: cell(app, job.id, "state") == CANCELLED, "cancelled")
        stored = queue.get(job.id)
        assert stored.state == CANCELLED
        assert 0 < stored.bytes_done < stored.bytes_total
        assert not notes_titled(app, "Transfer failed")
        said = [n[1] for n in app.notes]
        assert f"Cancelling #{job.id} my-model:v3: it stops at the next chunk" in said


async def test_p_pauses_a_running_job_keeping_its_progress_and_p_again_resumes_it(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    job = copy_job(queue, tmp_path, size=2 << 20, chunk=16 << 10, delay=0.01)
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        with RunnerThread(queue_file):
            await wait_for(pilot, lambda: percent(app, job.id), "some progress")
            await pilot.press("p")
            await wait_for(pilot, lambda: cell(app, job.id, "state") == PAUSED, "paused")
            paused = queue.get(job.id)
            assert 0 < paused.bytes_done < paused.bytes_total
            assert 0 < (percent(app, job.id) or 0) < 100  # the bar keeps its progress
            await pilot.pause(0.3)
            assert queue.get(job.id).state == PAUSED  # the runner leaves it alone
            await pilot.press("p")
            await wait_for(pilot, lambda: cell(app, job.id, "state") == DONE, "done", 20)
        said = [n[1] for n in app.notes]
        pausing = "it stops at the next chunk and keeps its progress"
        assert f"Pausing #{job.id} my-model:v3: {pausing}" in said
        assert f"Transfer #{job.id} resumed; a worker will pick it up" in said
        await pilot.press("p")
        warned = f"#{job.id} is done; only queued or running jobs can be paused"
        await wait_for(pilot, lambda: any(n[1] == warned for n in app.notes), "a warning")


async def test_a_failure_notifies_shows_its_error_and_retry_queues_it_again(
    queue: TransferQueue, queue_file: Path
) -> None:
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        job = queue.enqueue("upload", "results of mmlu", {"dst": "s3://bucket/results"})
        with RunnerThread(queue_file):
            await wait_for(pilot, lambda: cell(app, job.id, "state") == FAILED, "failed")
        failed = await wait_for(pilot, lambda: notes_titled(app, "Transfer failed"), "a note")
        assert failed[0][2] == "error"
        assert "permission denied: s3://bucket/results" in failed[0][1]
        assert percent(app, job.id) == 25
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.state == FAILED, "detail")
        text = detail_text(app)
        assert "last error" in text and "PermissionError: permission denied" in text
        assert "part.bin" in text

        await pilot.press("c")
        warned = f"#{job.id} has failed; only queued, running or paused jobs can be cancelled"
        await wait_for(pilot, lambda: app.notes[-1][1] == warned, "a warning")
        assert app.notes[-1][2] == "warning"
        await pilot.press("r")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == QUEUED, "queued again")
        stored = queue.get(job.id)
        assert (stored.state, stored.attempts, stored.last_error) == (QUEUED, 0, None)
        assert any("queued again" in note[1] for note in app.notes)


async def test_keys_that_do_not_apply_warn_instead_of_acting(
    queue: TransferQueue, queue_file: Path
) -> None:
    job = queue.enqueue("upload", "results of mmlu", {"dst": "s3://bucket/results"})
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: cell(app, job.id, "state") == QUEUED, "the row")
        await pilot.press("r")
        await wait_for(pilot, lambda: app.notes, "a warning")
        assert app.notes[-1][2] == "warning"
        assert (
            app.notes[-1][1] == f"#{job.id} is queued; only failed or cancelled jobs can be retried"
        )
        assert queue.get(job.id).state == QUEUED


async def test_a_job_whose_runner_died_shows_stalled_and_cancels_at_once(
    queue: TransferQueue, queue_file: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job = queue.enqueue("download", "my-model:v1", {"ref": "my-model:v1"})
    queue.claim_next(gone.pid)
    app = PaneApp(queue_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: cell(app, job.id, "state") == "stalled", "stalled")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == CANCELLED, "cancelled")
        assert queue.get(job.id).state == CANCELLED


async def test_a_secret_in_a_title_never_reaches_the_screen(
    queue: TransferQueue, queue_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "wandb-" + "Zq9" * 14
    monkeypatch.setenv("WANDB_API_KEY", secret)
    job = queue.enqueue("download", f"m:v1 with {secret}", {"ref": "m:v1"})
    app = PaneApp(queue_file)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == job.id, "detail")
        await pilot.pause()
        assert "****" in cell(app, job.id, "what") and "****" in detail_text(app)
        assert "Zq9Zq9" not in screen_text(app) + detail_text(app)


async def test_cancelling_a_queued_job_is_immediate(queue: TransferQueue, queue_file: Path) -> None:
    job = queue.enqueue("log", "results of gsm8k", {"total": 10, "seconds": 0.1})
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: cell(app, job.id, "state") == QUEUED, "the row")
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == CANCELLED, "cancelled")
        assert queue.get(job.id).state == CANCELLED


async def test_a_paused_job_can_be_cancelled(queue: TransferQueue, queue_file: Path) -> None:
    job = queue.enqueue("log", "results of gsm8k", {"total": 10, "seconds": 0.1})
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: cell(app, job.id, "state") == QUEUED, "the row")
        await pilot.press("p")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == PAUSED, "paused")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == CANCELLED, "cancelled")
        assert f"Transfer #{job.id} cancelled" in [n[1] for n in app.notes]


async def test_sync_enqueues_one_sync_job(queue: TransferQueue, queue_file: Path) -> None:
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        await pilot.press("s")
        await wait_for(pilot, lambda: pane.table.row_count == 1, "the sync row")
        (job,) = queue.list()
        assert (job.kind, job.state) == ("sync", QUEUED)
        assert cell(app, job.id, "kind") == "sync"
        await pilot.press("s")
        await wait_for(pilot, lambda: any("already queued" in n[1] for n in app.notes), "a note")
        assert len(queue.list()) == 1


async def test_s_puts_the_cursor_on_the_sync_it_queued(
    queue: TransferQueue, queue_file: Path
) -> None:
    first = queue.enqueue("log", "first", {"total": 1, "seconds": 0})
    queue.enqueue("log", "second", {"total": 1, "seconds": 0})
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "two rows")
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.selected_job.id == first.id, "the older job")
        await pilot.press("s")
        await wait_for(pilot, lambda: pane.table.row_count == 3, "the sync row")
        await wait_for(pilot, lambda: pane.selected_job.kind == "sync", "the sync selected")
        assert pane.table.cursor_row == 0
        await pilot.press("c", "y")  # c acts on the sync, not on the job the cursor was on
        await wait_for(pilot, lambda: cell(app, 3, "state") == CANCELLED, "cancelled")
        assert queue.get(first.id).state == QUEUED


def closed_port() -> int:
    """A local port nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_without_a_key_sync_says_what_is_missing_instead_of_failing(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No W&B key: `s` queues no sync job bound to fail, and a run stored offline says
    what to set before s can sync it."""
    from tui.services.evallog import LogIndex
    from tui.services.transfers import open_queue

    monkeypatch.chdir(isolated_env)
    settings = load_settings()
    assert settings.wandb_api_key is None
    app = PaneApp(None, settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        queue, index = open_queue(settings), LogIndex.open(settings)
        try:
            job = pending_log_job(queue, index, "offline1")
        finally:
            index.close()
            queue.close()
        note = await wait_for(pilot, lambda: notes_titled(app, "Waiting for sync"), "the note")
        assert "set WANDB_API_KEY (environment or .env) and restart the app" in note[0][1]
        await wait_for(pilot, lambda: "set WANDB_API_KEY" in detail_text(app), "the hint")
        await pilot.press("s")
        warned = await wait_for(
            pilot, lambda: [n for n in app.notes if n[1].startswith("Nothing synced")], "warning"
        )
        assert warned[0][2] == "warning" and "WANDB_API_KEY" in warned[0][1]
        await pilot.pause(0.3)
        assert [j.id for j in pane._jobs.values()] == [job.id]  # no sync job queued


async def test_sync_starts_a_detached_worker_when_none_runs(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "5")
    # A key (a sync needs one) and a server nobody listens on: nothing waits for sync.
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    settings = load_settings()
    assert not worker_status(settings).alive
    app = PaneApp(None, settings)
    pid = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            pane = pane_of(app)
            await pilot.press("s")
            await wait_for(pilot, lambda: pane.table.row_count == 1, "the sync row", 20)
            note = await wait_for(pilot, lambda: [n for n in app.notes if "worker" in n[1]], "note")
            assert "Sync queued as #1; started a worker (pid" in note[0][1]
            status = await wait_for(pilot, lambda: worker_status(settings).alive and 1, "alive")
            pid = worker_status(settings).pid
            assert status and pid is not None and f"pid {pid})" in note[0][1]
        assert (settings.paths.state / "transfers.sqlite").exists()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the worker this test started, by its pid
            deadline = time.monotonic() + 10
            while worker_status(settings).alive and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not worker_status(settings).alive


def stop_worker(settings: Settings, pid: int | None) -> None:
    """SIGTERM the worker this test started, by its pid, and wait until it is gone."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while worker_status(settings).pid == pid and time.monotonic() < deadline:
        time.sleep(0.05)


async def test_sync_replaces_a_worker_started_without_the_key_and_the_new_one_runs_it(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started before WANDB_API_KEY was set would fail a sync at once: `s`
    replaces it first, and the worker with the key runs the job."""
    from tui.services.transfers import open_queue
    from tui.services.worker import ensure_worker

    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "30")
    old = ensure_worker(load_settings(), wait=30)
    pids = [old.pid]
    try:
        assert old.started and old.alive and old.pid is not None
        monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
        settings = load_settings()
        app = PaneApp(None, settings)
        async with app.run_test(size=SIZE) as pilot:
            pane = pane_of(app)
            await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
            await pilot.press("s")
            said = await wait_for(
                pilot, lambda: [n for n in app.notes if n[1].startswith("Sync queued")], "note", 60
            )
            new = worker_status(settings)
            pids.append(new.pid)
            assert said[0][1] == (
                f"Sync queued as #1; restarted the transfer worker with the new settings"
                f" (pid {new.pid})"
            )
            assert said[0][2] == "information"
            assert new.alive and new.pid != old.pid
            await wait_for(pilot, lambda: cell(app, 1, "state") == DONE, "the sync done", 30)
        queue = open_queue(settings)
        try:
            job = queue.get(1)
        finally:
            queue.close()
        assert (job.kind, job.state, job.attempts, job.owner_pid) == ("sync", DONE, 1, new.pid)
        assert worker_status(settings).pid == new.pid  # the old one is gone
    finally:
        for pid in reversed(pids):
            stop_worker(load_settings(), pid)


def pending_log_job(queue: TransferQueue, index: Any, run_id: str) -> Job:
    """A log job left waiting for sync, as the worker leaves it without a key, with its
    run in the log index as `evallog.log_run` records it."""
    from tui.services.evallog import LoggedRun

    job = queue.enqueue("log", f"log results {run_id}", {"results": f"out/{run_id}"})
    queue.claim_next(os.getpid())
    logged = LoggedRun(
        run_id=run_id,
        group="my-model:v3",
        run_dir=f"wandb/offline-run-{run_id}",
        wandb_file=f"wandb/offline-run-{run_id}/run-{run_id}.wandb",
        artifact_name=f"results_{run_id}",
        artifact_alias="H-0123456789",
        mode="offline",
        pending_sync=True,
        model_artifact="my-model:v3",
        lineage_pending=True,  # offline: the checkpoint is linked when the run is synced
    )
    index.add(run_id, logged)
    queue.mark_pending_sync(job.id, logged.to_json())
    return queue.get(job.id)


async def test_a_run_synced_outside_the_queue_shows_its_log_job_done(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evalwb-tui sync` uploads the offline runs without the queue; the pane then shows
    their log jobs done instead of waiting for a sync forever."""
    from tui.services.evallog import LogIndex
    from tui.services.transfers import PENDING_SYNC, open_queue

    monkeypatch.chdir(isolated_env)
    settings = load_settings()
    queue, index = open_queue(settings), LogIndex.open(settings)
    try:
        synced = pending_log_job(queue, index, "synced01")
        waiting = pending_log_job(queue, index, "waiting1")
        index.mark("synced01", pending_sync=False, lineage_pending=False)  # as sync does
    finally:
        index.close()
        queue.close()
    app = PaneApp(None, settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: cell(app, synced.id, "state") == DONE, "the synced job done")
        assert cell(app, waiting.id, "state") == "to sync"  # narrow: 100 columns
        await pilot.pause(0.3)
        assert not notes_titled(app, "Done, lineage missing")  # synced means linked too
    queue = open_queue(settings)
    try:
        assert queue.get(synced.id).state == DONE
        assert queue.get(synced.id).result["lineage_pending"] is False
        assert queue.get(waiting.id).state == PENDING_SYNC
    finally:
        queue.close()


def unlinked_log_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """A log job whose run reached W&B but whose checkpoint could not be linked, with the
    result the worker's log handler records then."""
    progress.update(files_done=5, files_total=5)
    return {
        "run_id": "abc12345",
        "lineage_pending": True,
        "sync_message": "lineage to nosuch:production not applied: artifact membership "
        "'nosuch:production' not found",
    }


async def test_a_log_done_without_its_lineage_warns_instead_of_saying_done(
    queue: TransferQueue, queue_file: Path
) -> None:
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        job = queue.enqueue("log", "log v0.15.4_ARC/fewshot_0", {"results": "out"})
        with RunnerThread(queue_file, {"log": unlinked_log_handler}):
            await wait_for(pilot, lambda: cell(app, job.id, "state") == DONE, "the job done")
        note = await wait_for(
            pilot, lambda: notes_titled(app, "Done, lineage missing"), "the warning"
        )
        assert note[0][2] == "warning"
        assert "'nosuch:production' not found; s tries again" in note[0][1]
        assert not notes_titled(app, "Transfer done")
        await wait_for(pilot, lambda: "s tries again" in detail_text(app), "the detail's note")


class StepsThenFiles:
    """A log job as the worker runs one with a key: logging steps counted in the file
    fields, then the run's files while it uploads (held there until `go` is set), then
    every step done."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def __call__(self, job: Job, progress: Progress) -> dict[str, Any]:
        for step in range(5):
            progress.update(files_done=step, files_total=5)
        progress.update(file=FileProgress("output.jsonl", 300, 300, DONE))
        progress.update(file=FileProgress("results.jsonl", 100, 400))
        progress.update(bytes_done=400, bytes_total=700, files_done=1, files_total=2)
        assert self.go.wait(10), "the test never let the upload finish"
        progress.update(file=FileProgress("results.jsonl", 400, 400, DONE))
        progress.update(bytes_done=700, files_done=5, files_total=5)
        return {"run_id": "abc12345", "lineage_pending": False}


def runs_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """A sync job as the worker runs one: the file fields count runs, no file is listed."""
    progress.update(files_done=0, files_total=2)
    progress.update(bytes_done=900, bytes_total=900, files_done=2, files_total=2)
    return {"synced": ["abc12345", "def67890"], "lineage_pending": []}


async def test_details_count_steps_for_a_log_job_and_runs_for_a_sync_job(
    queue: TransferQueue, queue_file: Path
) -> None:
    log = StepsThenFiles()
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        job = queue.enqueue("log", "results of gsm8k", {"results": "out"})
        with RunnerThread(queue_file, {"log": log, "sync": runs_handler}):
            await wait_for(pilot, lambda: "1 of 2 files sent" in detail_text(app), "uploading")
            assert "results.jsonl" in detail_text(app)
            log.go.set()
            await wait_for(pilot, lambda: cell(app, job.id, "state") == DONE, "the log done")
            await wait_for(pilot, lambda: "5 of 5 steps" in detail_text(app), "the steps")
            assert "output.jsonl" in detail_text(app)  # the files sent stay listed
            sync = queue.enqueue("sync", "pending offline runs", {})
            await wait_for(pilot, lambda: cell(app, sync.id, "state") == DONE, "the sync done")
        await pilot.press("up")  # newest first: the sync job is above
        await wait_for(pilot, lambda: "2 of 2 runs" in detail_text(app), "the runs synced")
        text = detail_text(app)
        assert "files" not in text and "none reported" not in text


def test_counts_name_what_each_kind_of_job_counts() -> None:
    assert count_text("download", 3, 12, sending_files=False) == "3 of 12 files"
    assert count_text("upload", 0, 1, sending_files=False) == "0 of 1 files"
    assert count_text("log", 2, 5, sending_files=False) == "2 of 5 steps"
    assert count_text("log", 1, 7, sending_files=True) == "1 of 7 files sent"
    assert count_text("log", 1, 7, sending_files=None) == "1 of 7"  # files not read yet
    assert count_text("sync", 1, 2, sending_files=False) == "1 of 2 runs"
    assert count_text("download", 0, None, sending_files=False) == ""


async def test_the_cursor_stays_on_its_job_when_new_jobs_arrive(
    queue: TransferQueue, queue_file: Path
) -> None:
    first = queue.enqueue("log", "first", {"total": 1, "seconds": 0})
    second = queue.enqueue("log", "second", {"total": 1, "seconds": 0})
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "two rows")
        pane.table.focus()
        assert pane.selected_job is not None and pane.selected_job.id == second.id  # newest
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == first.id, "first")
        third = queue.enqueue("log", "third", {"total": 1, "seconds": 0})
        await wait_for(pilot, lambda: pane.table.row_count == 3, "three rows")
        assert cell(app, third.id, "what") == "third"
        assert pane.table.cursor_row == 2
        assert pane.selected_job is not None and pane.selected_job.id == first.id
        await pilot.press("enter")
        assert pane.detail.has_focus
        await pilot.press("escape")
        assert pane.table.has_focus


async def test_columns_shrink_on_a_narrow_terminal_and_the_cursor_stays(
    queue: TransferQueue, queue_file: Path
) -> None:
    first = queue.enqueue("download", "wandb-registry-model/my-model:production", {"ref": "p"})
    queue.enqueue("upload", "results of mmlu", {"dst": "s3://bucket/mmlu"})
    app = PaneApp(queue_file)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "two rows")
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == first.id, "first")
        assert cell(app, first.id, "kind") == "download"
        assert cell(app, first.id, "id") == f"#{first.id}"
        wide = cell(app, first.id, "what")
        assert wide.endswith("/my-model:production") and "rate" in pane.table.columns
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: "rate" not in pane.table.columns, "narrow columns")
        # The kind and the id stay whole; a cut reference keeps its name.
        assert cell(app, first.id, "kind") == "download"
        assert cell(app, first.id, "id") == f"#{first.id}"
        narrow = cell(app, first.id, "what")
        assert narrow.startswith("…") and narrow.endswith("my-model:production")
        assert pane.table.cursor_row == 1 and pane.selected_job is not None
        assert pane.selected_job.id == first.id
        # Each column's width includes its one-cell gap; borders and scrollbar take four.
        assert sum(column.content_width for column in pane.table.columns.values()) == 80 - 4


def cli_log_job(queue: TransferQueue, out: Path, llm: str, task: str, run: str) -> Job:
    """A log job as `evalwb-tui log` queues it: titled by the last two folder names."""
    folder = out / llm / f"v0.15.4_{task}" / run
    title = f"log {folder.parent.name}/{folder.name}"
    return queue.enqueue("log", title, {"results": str(folder), "project": "evalwb"})


async def test_every_job_tells_apart_at_80_columns_by_id_task_and_checkpoint(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    runs = [
        (llm, task, run)
        for llm in (
            "HFLLM_checkpoint_org_proj_my-model_v3",
            "HFLLM_checkpoint_org_proj_my-model_v4",
        )
        for task, run in (
            ("ARC", "fewshot_3__samples_10_31c6f"),
            ("MMLU", "fewshot_5__samples_3_x"),
        )
    ]
    logs = [cli_log_job(queue, tmp_path / "out", *run) for run in runs]
    download = queue.enqueue("download", "download big-model:v0", {"ref": "big-model:v0"})
    app = PaneApp(queue_file)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 5, "five rows")
        whats = [cell(app, job.id, "what") for job in logs]
        assert len(set(whats)) == 4, whats
        assert whats[0] == "ARC · …org_proj_my-model_v3"
        assert whats[3] == "MMLU · …rg_proj_my-model_v4"
        assert [cell(app, job.id, "id") for job in logs] == [f"#{job.id}" for job in logs]
        assert {cell(app, job.id, "kind") for job in logs} == {"log"}
        assert cell(app, download.id, "what") == "big-model:v0"  # the kind is not repeated
        assert cell(app, download.id, "kind") == "download"
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert app.screen.question == f"Cancel download #{download.id} big-model:v0?"
        await pilot.press("n", "down")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == logs[-1].id, "log")
        await pilot.pause()
        text = " ".join(detail_text(app).split())
        assert "MMLU · HFLLM_checkpoint_org_proj_my-model_v4 · fewshot_5__samples_3_x" in text


def finished_download(runner: Runner, queue: TransferQueue, ref: str, registry: Path) -> Job:
    """Queue a download of `ref` and run it with the worker's own handler."""
    payload = {"ref": ref, "root": None, "verify": False, "registry": str(registry)}
    job = queue.enqueue("download", f"download {ref}", payload)
    assert runner.run_once() is not None
    done = queue.get(job.id)
    assert done.state == DONE, done.last_error
    return done


async def test_a_download_that_moved_no_bytes_says_why_in_words(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    settings = load_settings()
    path = queue_path(settings)
    queue = TransferQueue(path)
    runner = Runner(queue, default_handlers(settings))
    fetched = finished_download(runner, queue, "llama-3-8b-sft:v3", demo_registry_dir)
    cached = finished_download(runner, queue, "llama-3-8b-sft:v3", demo_registry_dir)
    in_place = finished_download(runner, queue, "my-model:v2", demo_registry_dir)
    queue.close()
    assert cached.result["cache_hit"] and in_place.result["local_twin"]
    app = PaneApp(path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 3, "three rows")
        assert cell(app, cached.id, "bytes") == "cached"
        assert cell(app, in_place.id, "bytes") == "in place"
        size = compact_size(fetched.bytes_total)
        assert cell(app, fetched.id, "bytes") == f"{size}/{size}"
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("down")  # newest first: the cache hit is second
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == cached.id, "hit")
        await pilot.pause()
        text = detail_text(app)
        assert "already in the cache (8 files)" in text and "0 B of 0 B" not in text
        assert "null" not in text and "not set" not in text  # unset fields are left out
        words = " ".join(text.split())
        assert "reference llama-3-8b-sft:v3" in words and "from the cache yes" in words
        assert "where local" in words
        assert "offline_warning" not in text and "cache_hit" not in text  # no raw keys
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == fetched.id, "it")
        await pilot.pause()
        text = " ".join(detail_text(app).split())
        assert "8 of 8 files" in text
        # Each file the worker fetched is listed by name, done at its full size.
        assert len(fetched.files) == 8 and all(f.state == DONE for f in fetched.files)
        assert all(f.path in text for f in fetched.files) and "not recorded" not in text


async def test_a_log_job_that_sent_bytes_never_says_none_uploaded(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    job = cli_log_job(queue, tmp_path, "HFLLM_my-model_v3", "ARC", "fewshot_3__samples_10_31c6f")
    claimed = queue.claim_next(os.getpid())
    assert claimed is not None and claimed.id == job.id
    # A quick upload: its bytes were counted, no file was seen on its way.
    queue.report(job.id, bytes_done=21_504, bytes_total=21_504, files_done=5, files_total=5)
    queue.finish(job.id, {"run_id": "r1"})
    app = PaneApp(queue_file)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == job.id, "detail")
        await pilot.pause()
        text = detail_text(app)
        assert "not recorded one by one; 21.0 KiB sent (above)" in text
        assert "none uploaded" not in text


class SwitcherApp(App[None]):
    """The pane as a hidden tab of a ContentSwitcher, the way the app holds its panes."""

    BINDINGS: ClassVar[list[BindingType]] = [("t", "show('transfers')", "Transfers")]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with ContentSwitcher(initial="other"):
            yield Static("another pane", id="other")
            yield TransfersPane(queue_path=self.path, id="transfers")

    def action_show(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name


async def test_a_hidden_pane_keeps_its_hands_off_the_focus_until_shown(
    queue: TransferQueue, queue_file: Path
) -> None:
    job = queue.enqueue("download", "my-model:v3", {"ref": "my-model:v3"})
    app = SwitcherApp(queue_file)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        await pilot.pause(0.1)
        assert app.focused is None  # keys on the other tab must not reach the pane
        await pilot.press("s")
        await pilot.pause(0.3)
        assert len(queue.list()) == 1
        await pilot.press("t")
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: cell(app, job.id, "state") == CANCELLED, "cancelled")


async def test_a_chatty_job_is_coalesced_into_a_bounded_number_of_refreshes(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    # 1% of progress every 0.25 s; the job runs until the pane has shown it move three
    # times (and 1.5 s at least), so an event loop starved on a busy machine slows the
    # test instead of failing it.
    seconds, stop = 25.0, tmp_path / "stop"
    app = PaneApp(queue_file)
    async with app.run_test(size=SIZE) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.refresh_count, "the first listing")
        payload = {"total": 10 << 30, "seconds": seconds, "stop": str(stop)}
        job = queue.enqueue("log", "chatty", payload)
        # interval=0: every report is its own commit, the worst case for a watcher.
        with RunnerThread(queue_file, interval=0.0):
            # A log job that moves bytes is uploading.
            await wait_for(pilot, lambda: cell(app, job.id, "state") == "uploading", "running")
            before, started = pane.refresh_count, time.monotonic()
            seen = set()
            # At least as long as the job ran before it waited for the pane: 1.5 s.
            while (len(seen - {None}) < 3 or time.monotonic() - started < 1.5) and (
                time.monotonic() - started < 20
            ):
                seen.add(percent(app, job.id))
                await pilot.pause(0.02)
            stop.touch()
            while cell(app, job.id, "state") == RUNNING:
                await pilot.pause(0.02)
                assert time.monotonic() - started < 30
            elapsed = time.monotonic() - started
            refreshes = pane.refresh_count - before
            await wait_for(pilot, lambda: cell(app, job.id, "state") == DONE, "done")
        reports = queue.get(job.id).result["reports"]
        # Event-loop stalls are measured by bench/ui.py, not asserted on a shared machine.
        print(f"coalescing: {reports} reports, {refreshes} refreshes in {elapsed:.2f} s")
        assert reports > 20 * refreshes, (reports, refreshes)
        assert refreshes <= elapsed / MIN_REFRESH_SECONDS + 3, (refreshes, elapsed)
        assert len(seen - {None}) >= 3  # and still it moved on screen


async def test_a_new_app_on_the_same_queue_shows_the_jobs_and_follows_a_running_one(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    failed = queue.enqueue("upload", "results of arc", {"dst": "s3://bucket/arc"})
    with RunnerThread(queue_file) as runner:
        first = PaneApp(queue_file)
        async with first.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: cell(first, failed.id, "state") == FAILED, "failed")
            job = copy_job(queue, tmp_path, size=3 << 20, chunk=16 << 10, delay=0.01)
            await wait_for(pilot, lambda: cell(first, job.id, "state") == RUNNING, "running")
        second = PaneApp(queue_file)
        async with second.run_test(size=SIZE) as pilot:
            pane = pane_of(second)
            await wait_for(pilot, lambda: pane.table.row_count == 2, "both jobs")
            assert cell(second, failed.id, "state") == FAILED
            assert cell(second, job.id, "state") == RUNNING
            shown = await wait_for(pilot, lambda: percent(second, job.id), "progress")
            await wait_for(pilot, lambda: (percent(second, job.id) or 0) > shown, "advancing")
            await wait_for(pilot, lambda: cell(second, job.id, "state") == DONE, "done", 20)
            await wait_for(pilot, lambda: notes_titled(second, "Transfer done"), "a note")
            # The failure happened before this app opened: not announced again.
            assert not notes_titled(second, "Transfer failed")
        runner.stop()


async def test_an_unusable_queue_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "transfers.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    app = PaneApp(bad)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.notes, "a notification")
        _title, message, severity = app.notes[-1]
        assert severity == "error" and str(bad) in message and "\n" not in message
        assert "Transfers unavailable" in screen_text(app)


# --- text helpers ------------------------------------------------------------------------


def test_the_worker_note_says_what_runs_the_job_and_what_to_do_about_an_old_worker(
    tmp_path: Path,
) -> None:
    from tui.panes.transfers import worker_note
    from tui.services.worker import WorkerStatus

    log = tmp_path / "worker.log"
    running = worker_note(WorkerStatus(True, 41, "now", log))
    assert (running.text, running.severity, running.news) == (
        "the worker (pid 41) picks it up",
        "information",
        False,
    )
    assert worker_note(WorkerStatus(True, 42, "now", log, started=True)).text == (
        "started a worker (pid 42)"
    )
    restarted = worker_note(WorkerStatus(True, 43, "now", log, started=True, restarted=True))
    assert restarted.text == "restarted the transfer worker with the new settings (pid 43)"
    assert restarted.news and restarted.severity == "information"
    outdated = worker_note(WorkerStatus(True, 44, "now", log, outdated=True))
    assert outdated.news and outdated.severity == "warning"
    assert "older transfer worker (pid 44)" in outdated.text
    assert "`kill 44`" in outdated.text and "`evalwb-tui worker`" in outdated.text


def test_text_bar_fills_in_eighths() -> None:
    assert text_bar(0.425, 10) == "████▎" + " " * 7 + "42%"
    assert text_bar(1.0, 4) == "████ 100%"
    assert text_bar(0.0, 4) == "       0%"
    assert text_bar(None, 4).strip() == ""


def test_sizes_and_durations_stay_short() -> None:
    assert [compact_size(n) for n in (512, 9_728, 12 << 20, 1023 << 20, 3 << 40)] == [
        "512B",
        "9.5K",
        "12M",
        "1023M",
        "3.0T",
    ]
    assert bytes_cell(0, None) == "-" and bytes_cell(1536, 4096) == "1.5K/4.0K"
    assert [duration(s) for s in (None, 5, 125, 3 * 3600 + 420, 1e9)] == [
        "-",
        "5s",
        "2m05s",
        "3h07m",
        ">99h",
    ]


def test_the_what_column_takes_the_width_left() -> None:
    for width in (80, 100, 120, 200):
        columns = {c.key: c for c in table_columns(width)}
        assert sum(c.width + 1 for c in columns.values()) + 4 == width
        assert {"id", "kind", "what", "state", "progress", "bytes"} <= set(columns)
        assert columns["what"].width >= MIN_WHAT_WIDTH
        assert columns["kind"].width >= len("download")
    assert "rate" in {c.key for c in table_columns(100)}


# --- snapshots ---------------------------------------------------------------------------

T0 = 1_795_000_000.0  # fixed times, so the details read the same on every run


def deterministic_queue(path: Path) -> None:
    """Five jobs in five states, made through the queue's own API; then the clock columns
    are set to fixed values."""
    queue = TransferQueue(path)
    pid = os.getpid()
    done = queue.enqueue("download", "wandb-registry-model/my-model:production", {"ref": "v3"})
    queue.claim_next(pid)
    files = [
        FileProgress("config.json", 700, 700, DONE),
        FileProgress("model.safetensors", 3 << 30, 3 << 30, DONE),
    ]
    queue.report(done.id, bytes_done=(3 << 30) + 700, bytes_total=(3 << 30) + 700, files=files)
    queue.report(done.id, files_done=2, files_total=2)
    queue.finish(done.id, {"path": "artifacts/my-model/v3"})

    failed = queue.enqueue("upload", "results of mmlu", {"dst": "s3://bucket/mmlu"}, max_attempts=1)
    queue.claim_next(pid)
    queue.report(failed.id, bytes_done=300 << 20, bytes_total=1200 << 20)
    queue.fail(failed.id, ConnectionError("connection reset by peer"), retryable=False)

    cancelled = queue.enqueue("download", "my-model:v2", {"ref": "my-model:v2"})
    queue.claim_next(pid)
    queue.report(cancelled.id, bytes_done=1 << 30, bytes_total=4 << 30)
    queue.cancel(cancelled.id)
    queue.mark_cancelled(cancelled.id)

    queue.enqueue("log", "HFLLM_checkpoint my-model v3 · ARC", {"results": "out/arc"})
    queue.enqueue("sync", "sync pending offline runs", {"runs": "pending"})
    queue.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE jobs SET created_at = ? + id * 60, updated_at = ? + id * 60 + 30,"
            " next_attempt_at = ? + id * 60,"
            " started_at = CASE WHEN started_at IS NULL THEN NULL ELSE ? + id * 60 + 5 END,"
            " finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE ? + id * 60 + 25 END",
            (T0, T0, T0, T0, T0),
        )


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("size", "job_id"),
    [((80, 24), 2), ((120, 40), 1)],
    ids=["80x24-failed-upload", "120x40-finished-download"],
)
def test_snapshot(
    snap_compare: Any, queue_file: Path, utc: None, size: tuple[int, int], job_id: int
) -> None:
    deterministic_queue(queue_file)

    async def settled(pilot: Pilot) -> None:
        pane = pane_of(pilot.app)
        await wait_for(pilot, lambda: pane.table.row_count == 5, "five rows")
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press(*["down"] * (5 - job_id))  # newest first: job 5 is on top
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == job_id, "details")
        await pilot.pause()

    assert snap_compare(PaneApp(queue_file), terminal_size=size, run_before=settled)


async def test_jobs_queued_for_another_backend_say_where_they_belong(isolated_env: Path) -> None:
    local = load_settings(dict(os.environ))
    wandb = load_settings(
        {
            **os.environ,
            "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
            "WANDB_BASE_URL": "http://127.0.0.1:9",
            "WANDB_ENTITY": "team",
        }
    )
    queue = open_queue(wandb)
    remote = queue.enqueue("download", "my-model:v3", {"ref": "my-model:v3"})
    queue.close()
    queue = open_queue(local)
    here = queue.enqueue("download", "my-model:v2", {"ref": "my-model:v2"})
    queue.close()
    app = PaneApp(None, settings=local)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "two rows")
        assert cell(app, remote.id, "what") == "[W&B team] · my-model:v3"
        assert cell(app, here.id, "what") == "my-model:v2"
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == here.id, "here")
        await wait_for(pilot, lambda: pane.table.has_focus, "the table's focus")
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.detail_job and pane.detail_job.id == remote.id, "it")
        await pilot.pause()
        words = " ".join(detail_text(app).split())
        assert "where W&B team@127.0.0.1:9" in words and "place" not in words


async def test_phases_are_named_so_a_bar_never_seems_to_go_back(
    queue: TransferQueue, queue_file: Path, tmp_path: Path
) -> None:
    payload = {"ref": "my-model:v3"}
    download = queue.enqueue("download", "my-model:v3", payload)
    log = cli_log_job(queue, tmp_path, "HFLLM_my-model_v3", "ARC", "fewshot_3__samples_10_31c6f")
    claimed = {job.id: job for job in (queue.claim_next(os.getpid()) for _ in range(2)) if job}
    assert set(claimed) == {download.id, log.id}
    # Every byte is in; the last file is being hashed before it counts as verified.
    queue.report(download.id, bytes_done=4 << 20, bytes_total=4 << 20, files_done=2, files_total=3)
    # The log job wrote its offline run (4 of 5 steps): its bar stands at 80%.
    queue.report(log.id, files_done=4, files_total=5)
    app = PaneApp(queue_file)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = pane_of(app)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "two rows")
        await wait_for(pilot, lambda: cell(app, download.id, "state") == "verifying", "verifying")
        assert cell(app, log.id, "state") == "writing" and percent(app, log.id) == 80
        # Its upload starts at 0 bytes: another phase, named as such.
        queue.report(log.id, bytes_done=0, bytes_total=1 << 20)
        await wait_for(pilot, lambda: cell(app, log.id, "state") == "uploading", "uploading")
        assert percent(app, log.id) == 0
    status = status_text(queue.get(download.id))
    assert status.startswith("verifying… 4.0M/4.0M")

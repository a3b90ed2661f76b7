"""The transfer queue: state machine, persistence, concurrent claims, coalescing, crashes.

Run as a script, this file is also the child process of the crash and concurrency tests:
`python tests/test_transfers.py copy DB` runs a runner with the copy handler,
`python tests/test_transfers.py claim DB` claims jobs until none is left and prints ids.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tui.services.transfers import (
    CANCELLED,
    DONE,
    FAILED,
    PAUSED,
    PENDING_SYNC,
    QUEUED,
    RUNNING,
    Backoff,
    FileProgress,
    Job,
    JobNotFoundError,
    JobStateError,
    PendingSync,
    Progress,
    RetryableError,
    Runner,
    TransferQueue,
    TransferQueueError,
    mask_text,
)

HERE = Path(__file__).resolve()
FAST = Backoff(base=0.05, cap=0.2)
SECRET = "wandb-" + "Zq9" * 14


# --- real handlers used by the tests and by the child processes -----------------------


def copy_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """Copy payload src to dst in chunks, resuming from the bytes already in `dst.part`.

    What is on disk decides where to resume, not the stored progress, which may lag.
    """
    src, dst = Path(job.payload["src"]), Path(job.payload["dst"])
    chunk_size, delay = job.payload["chunk"], job.payload.get("delay", 0.0)
    size = src.stat().st_size
    if dst.exists() and dst.stat().st_size == size:
        return {"bytes": size, "resumed_from": size}
    part = dst.with_name(dst.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    progress.update(bytes_total=size, bytes_done=start, files_total=1, files_done=0)
    done = start
    with src.open("rb") as fin, part.open("ab") as fout:
        fin.seek(start)
        while chunk := fin.read(chunk_size):
            if progress.cancelled:
                return {"bytes": done, "resumed_from": start, "stopped": True}
            fout.write(chunk)
            fout.flush()
            done += len(chunk)
            progress.update(bytes_done=done, file=FileProgress(src.name, done, size))
            time.sleep(delay)
    os.replace(part, dst)
    progress.update(files_done=1, file=FileProgress(src.name, size, size, DONE))
    return {"bytes": size, "resumed_from": start}


def flaky_handler(job: Job, progress: Progress) -> dict[str, Any]:
    """Fail with a network error the first `failures` times (counted on disk), then succeed."""
    counter = Path(job.payload["counter"])
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < job.payload["failures"]:
        raise ConnectionError(f"connection reset (try {seen + 1})")
    return {"tries": seen + 1}


# --- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def queue(tmp_path: Path) -> TransferQueue:
    return TransferQueue(tmp_path / "state" / "transfers.sqlite", backoff=FAST)


def wait_for(predicate, timeout: float = 10.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent.parent)
    return env


# --- state machine ---------------------------------------------------------------------


def test_enqueue_claim_progress_finish(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "my-model:v3", {"ref": "my-model:v3"})
    assert (job.state, job.attempts, job.payload) == (QUEUED, 0, {"ref": "my-model:v3"})

    claimed = queue.claim_next(4242)
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.attempts, claimed.owner_pid) == (RUNNING, 1, 4242)
    assert queue.claim_next(4242) is None

    queue.report(job.id, bytes_done=0, bytes_total=1000, files_total=2)
    time.sleep(0.2)
    queue.report(job.id, bytes_done=500, file=FileProgress("a.bin", 500, 600))
    running = queue.get(job.id)
    assert running.bytes_done == 500 and running.bytes_total == 1000
    assert 500 < running.rate <= 500 / 0.2
    assert running.eta == pytest.approx(500 / running.rate)
    assert running.fraction == 0.5
    assert running.files == [FileProgress("a.bin", 500, 600, RUNNING)]

    assert queue.finish(job.id, {"path": "/cache/x"})
    done = queue.get(job.id)
    assert (done.state, done.result, done.eta, done.fraction) == (
        DONE,
        {"path": "/cache/x"},
        None,
        1,
    )
    assert done.finished_at is not None and done.finished_at >= done.started_at


def claim_when_due(queue: TransferQueue) -> Job:
    claimed: list[Job | None] = []
    wait_for(lambda: claimed.append(queue.claim_next()) or claimed[-1] is not None, timeout=2)
    return claimed[-1]


def test_retryable_failure_backs_off_then_fails_after_max_attempts(tmp_path: Path) -> None:
    backoff = Backoff(base=0.3, cap=1.0)  # long enough to see "not due yet" on a busy machine
    queue = TransferQueue(tmp_path / "q.sqlite", backoff=backoff)
    job = queue.enqueue("upload", "results", {}, max_attempts=3)
    for attempt in (1, 2, 3):
        assert claim_when_due(queue).attempts == attempt
        before = time.time()
        queue.fail(job.id, ConnectionError(f"reset by peer {attempt}"), retryable=True)
        after = queue.get(job.id)
        assert after.last_error == f"ConnectionError: reset by peer {attempt}"
        if attempt == 3:
            break
        assert after.state == QUEUED
        # Jittered exponential backoff: between half and all of base * 2**(n-1).
        full = min(backoff.cap, backoff.base * 2 ** (attempt - 1))
        assert before + full / 2 - 0.01 <= after.next_attempt_at <= time.time() + full
        assert queue.claim_next() is None  # not due yet
    assert (after.state, after.attempts, after.finished_at is not None) == (FAILED, 3, True)


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    for attempts, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [backoff.delay(attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_runner_retries_network_errors_until_success(queue: TransferQueue, tmp_path) -> None:
    job = queue.enqueue("upload", "flaky", {"counter": str(tmp_path / "n"), "failures": 2})
    runner = Runner(queue, {"upload": flaky_handler})
    assert runner.run_until_idle(timeout=10) == 3
    done = queue.get(job.id)
    assert (done.state, done.attempts, done.result) == (DONE, 3, {"tries": 3})


def test_runner_gives_up_after_max_attempts(queue: TransferQueue, tmp_path) -> None:
    payload = {"counter": str(tmp_path / "n"), "failures": 10}
    job = queue.enqueue("upload", "down", payload, max_attempts=3)
    Runner(queue, {"upload": flaky_handler}).run_until_idle(timeout=10)
    failed = queue.get(job.id)
    assert (failed.state, failed.attempts) == (FAILED, 3)
    assert failed.last_error == "ConnectionError: connection reset (try 3)"
    assert (tmp_path / "n").read_text() == "3"


def test_handler_bug_fails_at_once_with_a_masked_one_line_error(
    queue: TransferQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)

    def broken(job: Job, progress: Progress) -> dict[str, Any]:
        raise ValueError(f"server said:\n  bad key {SECRET}\n  url https://u:pw@h/x token=abc")

    job = queue.enqueue("log", "broken", {})
    Runner(queue, {"log": broken}).run_until_idle(timeout=5)
    failed = queue.get(job.id)
    assert (failed.state, failed.attempts) == (FAILED, 1)
    assert (
        failed.last_error == "ValueError: server said: bad key **** url https://****@h/x token=****"
    )
    files = [queue.path, Path(f"{queue.path}-wal")]
    assert all(SECRET.encode() not in f.read_bytes() for f in files if f.exists())


def test_a_result_that_is_not_a_json_object_fails_the_job(queue: TransferQueue) -> None:
    handlers = {
        "download": lambda job, progress: ["not", "a", "dict"],
        "upload": lambda job, progress: {"when": object()},
    }
    first = queue.enqueue("download", "list", {})
    second = queue.enqueue("upload", "object", {})
    assert Runner(queue, handlers).run_until_idle(timeout=5) == 2
    assert queue.get(first.id).last_error == "bad result: the download handler returned list"
    assert queue.get(second.id).state == FAILED
    assert queue.get(second.id).last_error.startswith("bad result: Object of type object")


def test_retryable_error_carries_a_minimum_delay(queue: TransferQueue) -> None:
    def busy(job: Job, progress: Progress) -> dict[str, Any]:
        raise RetryableError("429 too many requests", retry_after=30)

    job = queue.enqueue("download", "busy", {})
    Runner(queue, {"download": busy}).run_once()
    queued = queue.get(job.id)
    assert queued.state == QUEUED and queued.next_attempt_at >= time.time() + 29


def test_mask_text_hides_queue_secrets_and_credentials() -> None:
    text = f"key {SECRET} api_key='xyz' Authorization: Bearer abc.def s3://k:v@bucket/p"
    masked = mask_text(text, [SECRET])
    assert masked == "key **** api_key='****' Authorization: **** s3://****@bucket/p"
    for value in (SECRET, "xyz", "abc.def", "k:v"):
        assert value not in masked


def test_payload_with_a_secret_is_refused(tmp_path: Path) -> None:
    queue = TransferQueue(tmp_path / "q.sqlite", secrets=[SECRET])
    with pytest.raises(ValueError, match="must not hold secrets"):
        queue.enqueue("upload", "x", {"key": SECRET})
    with pytest.raises(ValueError, match="unknown job kind"):
        queue.enqueue("teleport", "x", {})
    assert queue.list() == []


def test_pending_sync_then_finish(queue: TransferQueue) -> None:
    def offline_log(job: Job, progress: Progress) -> PendingSync:
        return PendingSync({"run_dir": "/runs/offline-run-1"})

    job = queue.enqueue("log", "ARC fs3", {})
    Runner(queue, {"log": offline_log}).run_once()
    waiting = queue.get(job.id)
    assert (waiting.state, waiting.result) == (PENDING_SYNC, {"run_dir": "/runs/offline-run-1"})
    assert queue.finish(job.id, {"run_dir": "/runs/offline-run-1", "synced": True})
    assert queue.get(job.id).state == DONE


def test_a_stopped_runner_gives_its_job_back(queue: TransferQueue) -> None:
    def interrupted(job: Job, progress: Progress) -> dict[str, Any]:
        progress.update(bytes_done=3, bytes_total=9)
        raise KeyboardInterrupt

    job = queue.enqueue("download", "x", {})
    with pytest.raises(KeyboardInterrupt):
        Runner(queue, {"download": interrupted}).run_once()
    back = queue.get(job.id)
    assert (back.state, back.bytes_done, back.last_error) == (QUEUED, 3, None)
    # Stopping the runner is no failure of the job: the next claim continues the attempt.
    again = queue.claim_next()
    assert again is not None and again.attempts == 1


def test_a_handler_that_ends_its_runner_uses_up_its_attempts(queue: TransferQueue) -> None:
    def exits(job: Job, progress: Progress) -> dict[str, Any]:
        raise SystemExit(3)  # as a library's sys.exit would

    job = queue.enqueue("download", "x", {}, max_attempts=2)
    with pytest.raises(SystemExit):
        Runner(queue, {"download": exits}).run_once()
    assert (queue.get(job.id).state, queue.get(job.id).attempts) == (QUEUED, 1)
    with pytest.raises(SystemExit):
        Runner(queue, {"download": exits}).run_once()
    failed = queue.get(job.id)
    assert (failed.state, failed.attempts) == (FAILED, 2)
    assert failed.last_error == "the worker ended while running it, on its last attempt (2 of 2)"
    assert queue.claim_next() is None


def test_cancel_queued_job(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "m:v1", {})
    assert queue.cancel(job.id).state == CANCELLED
    assert queue.is_cancelled(job.id)
    assert queue.claim_next() is None
    with pytest.raises(JobStateError, match="only queued, running or paused"):
        queue.cancel(job.id)


def test_cancel_running_job_tells_the_handler(queue: TransferQueue, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1 << 20))
    payload = {"src": str(src), "dst": str(tmp_path / "dst.bin"), "chunk": 4096, "delay": 0.01}
    job = queue.enqueue("download", "slow copy", payload)
    runner = Runner(queue, {"download": copy_handler}, interval=0.02)
    thread = threading.Thread(target=runner.run_once)
    thread.start()
    wait_for(lambda: queue.get(job.id).bytes_done > 0)
    requested = queue.cancel(job.id)
    assert requested.state == RUNNING and requested.cancel_requested
    thread.join(timeout=10)
    assert not thread.is_alive()
    cancelled = queue.get(job.id)
    assert cancelled.state == CANCELLED
    assert not (tmp_path / "dst.bin").exists()
    assert 0 < cancelled.bytes_done < src.stat().st_size


def test_a_failure_after_a_cancel_request_ends_cancelled(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {})
    queue.claim_next()
    queue.cancel(job.id)
    assert queue.fail(job.id, TimeoutError("read timed out"), retryable=True)
    ended = queue.get(job.id)
    assert (ended.state, ended.last_error) == (CANCELLED, "TimeoutError: read timed out")


def test_a_paused_queued_job_is_not_claimed_until_resumed(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "m:v1", {})
    assert queue.pause(job.id).state == PAUSED
    assert queue.claim_next() is None and queue.next_due_in() is None
    with pytest.raises(JobStateError, match="only queued or running jobs can be paused"):
        queue.pause(job.id)
    assert queue.resume(job.id).state == QUEUED
    assert queue.claim_next().id == job.id
    with pytest.raises(JobStateError, match="only paused jobs can be resumed"):
        queue.resume(job.id)
    with pytest.raises(JobNotFoundError):
        queue.pause(job.id + 1)


def test_a_failure_after_a_pause_request_ends_paused(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {})
    queue.claim_next()
    queue.pause(job.id)
    assert queue.fail(job.id, TimeoutError("read timed out"), retryable=True)
    ended = queue.get(job.id)
    assert (ended.state, ended.pause_requested) == (PAUSED, False)
    assert queue.resume(job.id).state == QUEUED


def test_a_paused_job_can_be_cancelled(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "m:v1", {})
    queue.pause(job.id)
    assert queue.cancel(job.id).state == CANCELLED


def start_slow_copy(queue: TransferQueue, tmp_path: Path) -> tuple[Job, Path, threading.Thread]:
    """A 1 MiB copy in 4 KiB chunks, run by a runner in a thread, under way on return."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1 << 20))
    payload = {"src": str(src), "dst": str(tmp_path / "dst.bin"), "chunk": 4096, "delay": 0.005}
    job = queue.enqueue("download", "slow copy", payload)
    runner = Runner(queue, {"download": copy_handler}, interval=0.02)
    thread = threading.Thread(target=runner.run_once)
    thread.start()
    wait_for(lambda: queue.get(job.id).bytes_done > 0)
    return job, src, thread


def test_pause_running_job_hands_it_back_and_resume_continues(
    queue: TransferQueue, tmp_path: Path
) -> None:
    job, src, thread = start_slow_copy(queue, tmp_path)
    asked = queue.pause(job.id)
    assert asked.state == RUNNING and asked.pause_requested
    thread.join(timeout=10)
    assert not thread.is_alive()
    paused = queue.get(job.id)
    size = src.stat().st_size
    assert paused.state == PAUSED and not paused.pause_requested
    assert 0 < paused.bytes_done < size and paused.claim_token is None
    assert paused.attempts == 1
    # Its file stopped with it: the details and `transfers --json` say paused, not running.
    assert [f.state for f in paused.files] == [PAUSED]
    assert [f.state for f in queue.list(with_files=True)[0].files] == [PAUSED]
    part = tmp_path / "dst.bin.part"
    kept = part.stat().st_size
    assert kept > 0 and not (tmp_path / "dst.bin").exists()
    assert queue.claim_next() is None
    assert queue.resume(job.id).bytes_done == paused.bytes_done  # progress kept
    ended = Runner(queue, {"download": copy_handler}, interval=0.02).run_once()
    assert ended.state == DONE and ended.bytes_done == ended.bytes_total == size
    assert ended.attempts == 1  # the pause used up no attempt
    assert ended.result == {"bytes": size, "resumed_from": kept}
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()


def pause_and_resume(queue: TransferQueue, job_id: int) -> Job:
    """Pause the running job, have its runner hand it back, resume and claim it again."""
    claim = queue.get(job_id).claim_token
    queue.pause(job_id)
    assert queue.mark_paused(job_id, claim=claim)
    assert queue.get(job_id).state == PAUSED
    queue.resume(job_id)
    return queue.claim_next()


def test_pauses_use_up_no_attempts_and_failures_still_do(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {}, max_attempts=2)
    assert queue.claim_next().attempts == 1
    for _ in range(3):
        assert pause_and_resume(queue, job.id).attempts == 1
    assert queue.fail(job.id, TimeoutError("read timed out"), retryable=True)
    backing_off = queue.get(job.id)
    assert (backing_off.state, backing_off.attempts) == (QUEUED, 1)
    # The backoff after a real failure (FAST waits 25 to 50 ms after a first attempt).
    assert backing_off.next_attempt_at > backing_off.updated_at + 0.02
    assert claim_when_due(queue).attempts == 2
    assert pause_and_resume(queue, job.id).attempts == 2
    assert queue.fail(job.id, TimeoutError("read timed out"), retryable=True)
    assert (queue.get(job.id).state, queue.get(job.id).attempts) == (FAILED, 2)

    # A retry starts afresh, even for a job cancelled while paused.
    other = queue.enqueue("upload", "y", {})
    queue.claim_next()
    queue.pause(other.id)
    queue.mark_paused(other.id, claim=queue.get(other.id).claim_token)
    queue.cancel(other.id)
    queue.retry(other.id)
    assert queue.claim_next().attempts == 1


def test_a_job_handed_back_for_a_withdrawn_pause_keeps_its_attempt(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {})
    claim = queue.claim_next().claim_token
    queue.pause(job.id)
    queue.resume(job.id)  # withdrawn, but the runner had already stopped for it
    assert queue.mark_paused(job.id, claim=claim)
    assert queue.get(job.id).state == QUEUED
    assert queue.claim_next().attempts == 1


def test_a_pause_withdrawn_before_the_hand_back_keeps_the_job_going(
    queue: TransferQueue, tmp_path: Path
) -> None:
    job, _, thread = start_slow_copy(queue, tmp_path)
    queue.pause(job.id)
    assert queue.resume(job.id).state == RUNNING
    thread.join(timeout=20)
    # Done if the runner never saw the pause, else handed back as queued, never paused.
    assert queue.get(job.id).state in (DONE, QUEUED)


def test_pausing_a_job_whose_runner_died_pauses_it_at_once(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "m:v1", {})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    queue.claim_next(int(dead.stdout))
    queue.report(job.id, bytes_done=5, bytes_total=10)
    queue.pause(job.id)  # its runner is gone: paused at once
    back = queue.get(job.id)
    assert (back.state, back.bytes_done) == (PAUSED, 5)


def test_a_version_1_queue_file_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    from tui.services.transfers import _SCHEMA

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(_SCHEMA)
    old.execute(
        "INSERT INTO jobs (kind, title, payload, state, max_attempts, next_attempt_at,"
        " created_at, updated_at) VALUES ('download', 'old', '{}', 'queued', 5, 0, 0, 0)"
    )
    old.execute("PRAGMA user_version = 1")
    old.close()
    queue = TransferQueue(path)
    [job] = queue.list()
    assert (job.title, job.state, job.pause_requested) == ("old", QUEUED, False)
    assert queue.pause(job.id).state == PAUSED


def test_retry_requeues_failed_and_cancelled_jobs(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {}, max_attempts=1)
    queue.claim_next()
    queue.report(job.id, bytes_done=10, bytes_total=100)
    queue.fail(job.id, "disk full", retryable=True)
    assert queue.get(job.id).state == FAILED
    again = queue.retry(job.id)
    assert (again.state, again.attempts, again.last_error, again.bytes_done) == (
        QUEUED,
        0,
        None,
        10,
    )
    assert queue.claim_next() is not None
    with pytest.raises(JobStateError, match="only failed or cancelled"):
        queue.retry(job.id)
    other = queue.enqueue("upload", "y", {})
    queue.cancel(other.id)
    assert queue.retry(other.id).state == QUEUED
    with pytest.raises(JobNotFoundError, match="no transfer job with id 999"):
        queue.retry(999)


def test_queue_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "transfers.sqlite"
    first = TransferQueue(path)
    a = first.enqueue("download", "a", {"n": 1})
    b = first.enqueue("upload", "b", {"n": 2})
    first.claim_next()
    first.report(a.id, bytes_done=7, bytes_total=9, file=FileProgress("f", 7, 9))
    first.close()
    second = TransferQueue(path)
    jobs = {job.id: job for job in second.list(with_files=True)}
    assert set(jobs) == {a.id, b.id}
    assert (jobs[a.id].state, jobs[a.id].bytes_done, jobs[a.id].files) == (
        RUNNING,
        7,
        [FileProgress("f", 7, 9, RUNNING)],
    )
    assert (jobs[b.id].state, jobs[b.id].payload) == (QUEUED, {"n": 2})
    assert [j.id for j in second.list(states=[QUEUED])] == [b.id]


def test_watchers_see_other_processes_changes_through_data_version(tmp_path: Path) -> None:
    path = tmp_path / "transfers.sqlite"
    watcher, worker = TransferQueue(path), TransferQueue(path)
    seen = watcher.data_version()
    assert watcher.data_version() == seen  # nothing changed
    job = worker.enqueue("download", "x", {})
    assert watcher.data_version() != seen
    seen = watcher.data_version()
    worker.claim_next()
    worker.report(job.id, bytes_done=1)
    assert watcher.data_version() != seen
    assert watcher.get(job.id).bytes_done == 1


def test_damaged_database_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "transfers.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(TransferQueueError, match=str(path)):
        TransferQueue(path)


def test_queue_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "transfers.sqlite"
    TransferQueue(path).close()
    sqlite3.connect(path, isolation_level=None).execute("PRAGMA user_version = 99")
    with pytest.raises(TransferQueueError, match="newer evalwb-tui"):
        TransferQueue(path)


# --- processes ---------------------------------------------------------------------------


def test_concurrent_claims_never_take_the_same_job(queue: TransferQueue, tmp_path: Path) -> None:
    ids = [queue.enqueue("download", f"j{i}", {}).id for i in range(400)]
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(HERE), "claim", str(queue.path), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(3)
    ]
    # Start all claimers at once, after each has opened the queue.
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 3, timeout=30)
    go.touch()
    claimed: list[list[int]] = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        claimed.append([int(line) for line in out.split()])
    every = [i for ids_of_child in claimed for i in ids_of_child]
    assert sorted(every) == ids  # each job exactly once
    assert sum(1 for part in claimed if part) >= 2  # the children really competed
    owners = {job.owner_pid for job in queue.list()}
    assert owners <= {c.pid for c in children}


def count_job_writes(path: Path) -> sqlite3.Connection:
    """Count every UPDATE of a job row with a trigger in the real database."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE write_log (job_id INTEGER);"
        "CREATE TRIGGER count_writes AFTER UPDATE ON jobs"
        " BEGIN INSERT INTO write_log VALUES (new.id); END;"
    )
    return conn


def test_progress_writes_are_coalesced(queue: TransferQueue) -> None:
    counter = count_job_writes(queue.path)
    timing: dict[str, float] = {}

    def chatty(job: Job, progress: Progress) -> dict[str, Any]:
        start = time.monotonic()
        for i in range(1, 100_001):
            progress.update(bytes_done=i, bytes_total=100_000)
        timing["elapsed"] = time.monotonic() - start
        return {}

    job = queue.enqueue("download", "chatty", {})
    Runner(queue, {"download": chatty}).run_once()
    writes = counter.execute("SELECT COUNT(*) FROM write_log").fetchone()[0]
    done = queue.get(job.id)
    assert (done.state, done.bytes_done) == (DONE, 100_000)  # the last value is kept
    # Claim + finish + at most one progress write per 0.1 s (+1 for the final flush).
    assert 3 <= writes <= 2 + timing["elapsed"] / 0.1 + 2, (writes, timing)


def test_sigkill_mid_copy_then_recover_resumes_and_loses_nothing(
    queue: TransferQueue, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(20 * (1 << 20)))
    dst = tmp_path / "out" / "dst.bin"
    dst.parent.mkdir()
    payload = {"src": str(src), "dst": str(dst), "chunk": 1 << 18, "delay": 0.02}
    job = queue.enqueue("download", "20 MB copy", payload)
    child = subprocess.Popen([sys.executable, str(HERE), "copy", str(queue.path)], env=child_env())
    part = dst.with_name("dst.bin.part")
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 5 << 20, timeout=20)
        wait_for(lambda: queue.get(job.id).bytes_done > 0)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    left = queue.get(job.id)
    assert (left.state, left.owner_pid, left.attempts) == (RUNNING, child.pid, 1)
    assert part.stat().st_size < src.stat().st_size

    assert queue.recover() == [job.id]
    assert queue.get(job.id).state == QUEUED
    assert Runner(queue, {"download": copy_handler}).run_until_idle(timeout=20) == 1

    done = queue.get(job.id)
    assert (done.state, done.attempts) == (DONE, 2)
    assert done.result["resumed_from"] >= 5 << 20  # resumed, not restarted
    assert done.bytes_done == done.bytes_total == src.stat().st_size
    assert done.files == [FileProgress("src.bin", src.stat().st_size, src.stat().st_size, DONE)]
    assert dst.read_bytes() == src.read_bytes()
    assert not part.exists()


def test_recover_tells_live_owners_from_dead_and_reused_pids(queue: TransferQueue) -> None:
    alive = queue.enqueue("download", "alive", {})
    dead = queue.enqueue("download", "dead", {})
    reused = queue.enqueue("download", "reused", {})
    doomed = queue.enqueue("download", "cancel pending", {})
    exhausted = queue.enqueue("download", "keeps crashing", {}, max_attempts=1)

    queue.claim_next()  # this process: alive
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    queue.claim_next(gone.pid)
    queue.claim_next()  # this pid, but as if an earlier process had held it
    conn = sqlite3.connect(queue.path, isolation_level=None)
    conn.execute("UPDATE jobs SET owner_start = '1' WHERE id = ?", (reused.id,))
    queue.claim_next()
    queue.cancel(doomed.id)  # asked while its runner lived; then the runner dies
    conn.execute("UPDATE jobs SET owner_pid = ? WHERE id = ?", (gone.pid, doomed.id))
    queue.claim_next(gone.pid)

    assert [queue.get(j.id).stalled for j in (alive, dead, reused)] == [False, True, True]
    assert sorted(queue.recover()) == [dead.id, reused.id, doomed.id, exhausted.id]
    states = {job.id: job.state for job in queue.list()}
    assert states == {
        alive.id: RUNNING,
        dead.id: QUEUED,
        reused.id: QUEUED,
        doomed.id: CANCELLED,
        exhausted.id: FAILED,
    }
    assert queue.get(exhausted.id).last_error == "the runner died on every attempt"
    assert queue.recover() == []


def test_cancel_of_a_stalled_job_takes_effect_at_once(queue: TransferQueue) -> None:
    job = queue.enqueue("download", "orphan", {})
    queue.claim_next(999_999_999)  # no such process
    assert queue.cancel(job.id).state == CANCELLED
    assert queue.recover() == []


def test_runner_claims_only_kinds_it_has_handlers_for(queue: TransferQueue) -> None:
    job = queue.enqueue("sync", "offline runs", {})
    assert Runner(queue, {}).run_once() is None
    assert Runner(queue, {"download": copy_handler}).run_until_idle(timeout=1) == 0
    assert queue.get(job.id).state == QUEUED


def test_a_superseded_runner_cannot_overwrite_the_new_owner(queue: TransferQueue) -> None:
    job = queue.enqueue("upload", "x", {})
    old = queue.claim_next(999_999_999)
    assert queue.recover() == [job.id]
    new = queue.claim_next()
    assert not queue.report(job.id, bytes_done=5, claim=old.claim_token)
    assert not queue.finish(job.id, {"by": "old"}, claim=old.claim_token)
    assert queue.finish(job.id, {"by": "new"}, claim=new.claim_token)
    assert queue.get(job.id).result == {"by": "new"}


# --- command line ------------------------------------------------------------------------


def cli_queue(tmp_path: Path) -> TransferQueue:
    return TransferQueue(tmp_path / "xdg_state_home" / "evalwb-tui" / "transfers.sqlite")


def test_cli_lists_cancels_and_retries(tmp_path: Path, capsys) -> None:
    from tui.cli import main

    queue = cli_queue(tmp_path)
    a = queue.enqueue("download", "my-model:v3", {})
    b = queue.enqueue("upload", "ARC results", {})
    queue.claim_next()
    queue.report(a.id, bytes_done=3 << 20, bytes_total=12 << 20)
    queue.finish(a.id, {})

    assert main(["transfers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "ARC results" in lines[1] and "my-model" not in "".join(lines)

    assert main(["transfers", "--all", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(j["id"], j["state"]) for j in listed] == [(a.id, DONE), (b.id, QUEUED)]

    assert main(["transfers", "cancel", str(b.id)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["transfers", "retry", str(b.id)]) == 0
    assert queue.get(b.id).state == QUEUED
    capsys.readouterr()

    assert main(["transfers", "cancel", "77"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "77" in err and "Traceback" not in err


def test_cli_shows_stalled_and_backing_off_jobs(tmp_path: Path, capsys) -> None:
    from tui.cli import main

    queue = cli_queue(tmp_path)
    stalled = queue.enqueue("download", "orphan", {})
    waiting = queue.enqueue("upload", "flaky", {})
    queue.claim_next(999_999_999)
    queue.claim_next()
    queue.fail(waiting.id, "reset", retryable=True, retry_after=90)
    assert main(["transfers"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0].split()[:3] == [str(stalled.id), "download", "stalled"]
    assert lines[1].split()[:4] == [str(waiting.id), "upload", "retry", "1m30s"]


def test_cli_table_in_a_real_process(tmp_path: Path) -> None:
    queue = cli_queue(tmp_path)
    job = queue.enqueue("download", "my-model:v3", {})
    queue.claim_next()
    queue.report(job.id, bytes_done=0, bytes_total=8 << 20)
    time.sleep(0.1)
    queue.report(job.id, bytes_done=2 << 20)
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "transfers"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=True,
    ).stdout
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "KIND", "STATE"]
    assert f"{job.id}" in row and "running" in row and "25%" in row and "2.0 MiB/8.0 MiB" in row
    assert "/s" in row and "my-model:v3" in row


# --- child process entry point -----------------------------------------------------------


def _child(command: str, db: str, *rest: str) -> None:
    queue = TransferQueue(Path(db))
    if command == "copy":
        Runner(queue, {"download": copy_handler}).run_until_idle(timeout=60)
    elif command == "claim":
        go = Path(rest[0])
        (go.parent / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        while (job := queue.claim_next()) is not None:
            print(job.id, flush=True)


if __name__ == "__main__":
    _child(*sys.argv[1:])


def test_cli_pauses_and_resumes_a_job_and_refuses_bad_ids_in_one_line() -> None:
    from tui.services.settings import load_settings
    from tui.services.transfers import open_queue

    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "m:v1", {"ref": "m:v1"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tui.cli", "transfers", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env())

    paused = cli("pause", str(job.id))
    assert (paused.returncode, paused.stdout) == (0, f"job {job.id} paused: m:v1\n")
    assert queue.get(job.id).state == PAUSED
    assert f"{job.id}  " in cli().stdout and " paused " in cli().stdout
    again = cli("pause", str(job.id))
    assert again.returncode == 2 and again.stdout == ""
    assert len(again.stderr.splitlines()) == 1 and "only queued or running" in again.stderr
    resumed = cli("resume", str(job.id))
    assert (resumed.returncode, resumed.stdout) == (0, f"job {job.id} queued: m:v1\n")
    assert queue.get(job.id).state == QUEUED
    unknown = cli("resume", "999")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "999" in unknown.stderr and "Traceback" not in unknown.stderr


def test_state_errors_name_the_state_in_plain_words(queue: TransferQueue) -> None:
    failed = queue.enqueue("download", "m:v1", {})
    queue.claim_next()
    queue.fail(failed.id, "gone", retryable=False)
    with pytest.raises(JobStateError) as caught:
        queue.pause(failed.id)
    assert str(caught.value) == (
        f"transfer job {failed.id} has failed; only queued or running jobs can be paused"
    )
    cancelled = queue.enqueue("download", "m:v2", {})
    queue.cancel(cancelled.id)
    with pytest.raises(JobStateError, match=f"^transfer job {cancelled.id} was cancelled; "):
        queue.resume(cancelled.id)


def test_job_errors_show_the_projects_messages_without_a_class_name(
    queue: TransferQueue,
) -> None:
    from tui.services.evallog import EvalLogError
    from tui.services.registry.protocol import NotFoundError

    cases = [
        (NotFoundError("no collection 'm' in the local registry"), "no collection 'm' in"),
        (EvalLogError("WANDB_API_KEY is needed to sync"), "WANDB_API_KEY is needed to sync"),
        # A builtin's name says what failed where its message may not.
        (KeyError("ref"), "KeyError: 'ref'"),
        (ConnectionError(), "ConnectionError"),
    ]
    for error, shown in cases:
        job = queue.enqueue("download", "x", {})
        queue.claim_next()
        queue.fail(job.id, error, retryable=False)
        assert queue.get(job.id).last_error.startswith(shown)
        assert "NotFoundError" not in queue.get(job.id).last_error


def test_cli_says_in_plain_words_what_happens_to_a_running_job() -> None:
    from tui.services.settings import load_settings
    from tui.services.transfers import open_queue

    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "m:v1", {"ref": "m:v1"})
    assert queue.claim_next().id == job.id  # running, its runner (this process) alive

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tui.cli", "transfers", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env())

    paused = cli("pause", str(job.id))
    assert paused.stdout == (
        f"job {job.id} pausing: m:v1 (the worker stops it shortly, keeping its progress)\n"
    )
    cancelled = cli("cancel", str(job.id))
    assert cancelled.stdout == f"job {job.id} cancelling: m:v1 (the worker stops it shortly)\n"
    queue.mark_cancelled(job.id, claim=queue.get(job.id).claim_token)
    again = cli("pause", str(job.id))
    assert again.stderr == (
        f"evalwb-tui: transfer job {job.id} was cancelled; only queued or running jobs can be "
        "paused\n"
    )

"""The detached transfer worker and `transfers --watch`, with real processes.

Downloads come from real local registries: the seeded demo for a small version, and a
128 MiB version (16 shards) built once per module for jobs slow enough to interrupt.
Every process started here is killed in a finalizer; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.wandb_emulator import WandbService
from tui.services import cache
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Settings, load_settings
from tui.services.transfers import (
    Handler,
    Job,
    Progress,
    Runner,
    TransferQueue,
    open_queue,
    process_alive,
    process_start,
)
from tui.services.worker import (
    EXIT_ALREADY_RUNNING,
    WORKER_NICENESS,
    _download_handler,
    ensure_worker,
    log_path,
    worker_status,
)

SHARDS, SHARD_BYTES = 16, 8 * 1024 * 1024
BIG = "big-model:v0"
SMALL = "llama-3-8b-sft:best"  # a demo version without a -local twin: its bytes are copied
WORKER = [sys.executable, "-m", "tui.cli", "worker"]
CLI = [sys.executable, "-m", "tui.cli"]


@pytest.fixture(scope="module")
def big_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one 128 MiB checkpoint version; read-only for the tests."""
    root = tmp_path_factory.mktemp("big")
    source = root / "src" / "model"
    source.mkdir(parents=True)
    (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
    block = os.urandom(1024 * 1024)
    for i in range(SHARDS):
        # Each shard differs (its index leads every block), so no two digests agree.
        chunk = bytes([i]) + block[1:]
        (source / f"model-{i:05d}.safetensors").write_bytes(chunk * (SHARD_BYTES // len(chunk)))
    LocalRegistry(root / "registry").add_version("big-model", root / "src")
    return root / "registry"


@pytest.fixture
def env(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The isolated environment, with the download cache in tmp_path and a short idle
    time so a worker a test forgets ends by itself."""
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "cache"))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "3")
    return isolated_env


@pytest.fixture
def settings(env: Path) -> Settings:
    return load_settings(dict(os.environ))


@pytest.fixture
def reaper() -> Iterator[Callable[[subprocess.Popen[str] | int], None]]:
    """Register a child (Popen) or a detached pid; all are SIGKILLed at the end."""
    children: list[subprocess.Popen[str]] = []
    detached: list[tuple[int, str | None]] = []

    def track(proc: subprocess.Popen[str] | int) -> None:
        if isinstance(proc, int):
            detached.append((proc, process_start(proc)))
        else:
            children.append(proc)

    yield track
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    for pid, start in detached:
        if process_alive(pid, start):
            os.kill(pid, signal.SIGKILL)


def start(argv: list[str], track: Callable[..., None], **kwargs: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    track(proc)
    return proc


def wait_for(
    what: str, check: Callable[[], object], timeout: float = 60.0, every: float = 0.02
) -> object:
    """Poll `check` until it returns something true; fail after `timeout` seconds.

    The bounds here are generous: a wait ends as soon as its condition holds, and the
    worker runs at niceness +10, so on a busy machine (tests run in parallel) it is slow.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def first_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first line `proc` prints, waiting at most `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return proc.stdout.readline()


def job_in(queue: TransferQueue, job_id: int, *states: str) -> Job | None:
    job = queue.get(job_id)
    return job if job.state in states else None


def verify_download(settings: Settings, registry_dir: Path, job: Job) -> Path:
    """The job's version folder holds every manifest file with its md5, and is the only
    complete copy in the cache."""
    registry = LocalRegistry(registry_dir)
    folder = Path(job.result["folder"])
    entries = registry.files(job.result["ref"])
    assert all(cache.md5_b64_of(folder / e.path) == e.digest for e in entries)
    assert cache.read_marker(folder) is not None
    markers = list(settings.artifact_dir.rglob(cache.MARKER))
    assert markers == [folder / cache.MARKER]
    return folder


def test_two_workers_started_at_once_one_runs_the_other_says_why(env, settings, reaper):
    first = start([*WORKER, "--idle-exit", "30"], reaper)
    second = start([*WORKER, "--idle-exit", "30"], reaper)
    ended = wait_for(
        "one worker to give up", lambda: first.poll() is not None or second.poll() is not None
    )
    assert ended
    loser, winner = (first, second) if first.poll() is not None else (second, first)
    _, err = loser.communicate(timeout=5)
    assert loser.returncode == EXIT_ALREADY_RUNNING
    status = worker_status(settings)
    assert status.alive and status.pid == winner.pid
    assert f"another worker (pid {winner.pid}" in err and "this one exits" in err
    assert winner.poll() is None
    winner.send_signal(signal.SIGTERM)
    assert winner.wait(timeout=10) == 0
    assert not worker_status(settings).alive
    assert "stopped by SIGTERM" in log_path(settings).read_text()


def test_worker_started_detached_outlives_its_starter_and_sighup(
    env, settings, demo_registry_dir, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    starter_code = (
        "import os, time\n"
        "from tui.services.settings import load_settings\n"
        "from tui.services.transfers import open_queue\n"
        "from tui.services.worker import ensure_worker\n"
        "settings = load_settings(dict(os.environ))\n"
        f"job = open_queue(settings).enqueue('download', {SMALL!r}, {{'ref': {SMALL!r}}})\n"
        "status = ensure_worker(settings, wait=10)\n"
        "print(job.id, status.pid, status.started, flush=True)\n"
        "time.sleep(60)\n"
    )
    # The starter leads its own process group, like a shell job in a terminal that closes.
    starter = start([sys.executable, "-c", starter_code], reaper, start_new_session=True)
    line = first_line(starter, timeout=20).split()
    job_id, worker_pid, started = int(line[0]), int(line[1]), line[2]
    reaper(worker_pid)
    assert started == "True"
    # The worker takes its lock (which ends ensure_worker's wait) a moment before it sets
    # SIGHUP aside; its log's first line comes after. A hangup in between would end it.
    log = log_path(settings)
    wait_for("the worker to serve", lambda: log.is_file() and "worker started" in log.read_text())
    os.killpg(starter.pid, signal.SIGHUP)  # the terminal hangs up on the starter's group
    assert starter.wait(timeout=10) == -signal.SIGHUP
    os.kill(worker_pid, signal.SIGHUP)  # and a hangup sent to the worker itself is ignored
    queue = open_queue(settings)
    job = wait_for("the download to finish", lambda: job_in(queue, job_id, "done", "failed"))
    assert job.state == "done", job.last_error
    assert process_alive(worker_pid, None)  # still serving after both hangups
    assert job.owner_pid == worker_pid
    verify_download(settings, demo_registry_dir, job)
    assert job.result["bytes"] > 0 and not job.result["cache_hit"]


def test_sigkill_mid_download_then_a_new_worker_resumes_once(
    env, settings, big_registry, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(big_registry))
    queue = open_queue(settings)
    job = queue.enqueue("download", BIG, {"ref": BIG})
    worker = start([*WORKER, "--idle-exit", "5"], reaper)
    partway = wait_for(
        "the first shards",
        lambda: (j := queue.get(job.id)).state == "running" and j.files_done >= 2 and j,
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    killed = queue.get(job.id)
    assert killed.state == "running" and killed.stalled  # its runner is gone
    assert killed.files_done < killed.files_total, "the download ended before the kill"

    again = start([*WORKER, "--idle-exit", "1"], reaper)
    assert again.wait(timeout=90) == 0
    done = queue.get(job.id)
    assert done.state == "done", done.last_error
    assert done.attempts == 2
    total = SHARDS * SHARD_BYTES
    # The shards verified before the kill were not fetched again.
    assert done.result["bytes"] <= total - partway.files_done * SHARD_BYTES + SHARD_BYTES
    assert [j.id for j in queue.list(["done"])] == [job.id]
    verify_download(settings, big_registry, done)
    log = log_path(settings).read_text()
    assert f"resuming jobs [{job.id}]" in log


def test_sigterm_gives_the_running_job_back_to_the_queue(
    env, settings, big_registry, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(big_registry))
    queue = open_queue(settings)
    job = queue.enqueue("download", BIG, {"ref": BIG})
    worker = start([*WORKER, "--idle-exit", "5"], reaper)
    wait_for("the download to start", lambda: queue.get(job.id).files_done >= 1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    back = queue.get(job.id)
    assert back.state == "queued" and not back.stalled
    assert 0 < back.files_done < back.files_total
    assert not worker_status(settings).alive
    # A stopped worker is no failed attempt: the next claim goes on with the first.
    again = queue.claim_next()
    assert again is not None and again.id == job.id and again.attempts == 1


def test_idle_worker_exits_after_the_configured_time(env, settings, monkeypatch, reaper):
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "0.5")
    began = time.monotonic()
    worker = start(WORKER, reaper)
    assert worker.wait(timeout=10) == 0
    assert 0.5 <= time.monotonic() - began < 8
    assert "idle for 0.5 s; exiting" in log_path(settings).read_text()
    assert not worker_status(settings).alive


def test_bad_idle_setting_is_one_line_naming_the_variable(env, monkeypatch, reaper):
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "soon")
    worker = start(WORKER, reaper)
    _, err = worker.communicate(timeout=10)
    assert worker.returncode == 2
    assert err.strip().splitlines() == [
        "evalwb-tui: EVALWB_WORKER_IDLE_SEC must be a number of seconds, not 'soon'"
    ]


def test_watch_prints_a_line_per_change_and_ends_with_the_job(
    env, settings, big_registry, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(big_registry))
    job = open_queue(settings).enqueue("download", BIG, {"ref": BIG})
    # Two watchers at once, both attached before the worker starts.
    watchers = [start([*CLI, "transfers", "--watch"], reaper) for _ in range(2)]
    firsts = [first_line(watcher) for watcher in watchers]
    worker = start([*WORKER, "--idle-exit", "1"], reaper)
    for watcher, first in zip(watchers, firsts, strict=True):
        rest, err = watcher.communicate(timeout=90)
        assert watcher.returncode == 0, err
        out = first + rest
        assert "\033" not in out
        lines = out.splitlines()
        assert len(lines) >= 3
        assert all(line.split()[:2] == [str(job.id), "download"] for line in lines)
        assert len(set(lines)) == len(lines)  # a line only when something changed
        assert lines[0].split()[2] == "queued"
        assert lines[-1].split()[2:4] == ["done", "100%"]
        assert any(line.split()[2] == "running" for line in lines)
        assert "no transfer worker is running" in err
    assert worker.wait(timeout=60) == 0


def test_transfers_add_download_starts_a_worker_and_watch_waits_for_it(
    env, settings, demo_registry_dir, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    # Generous bounds: each command returns as soon as it is done, and the worker runs at
    # niceness +10, so on a busy machine it gets little CPU until the others are idle.
    add = subprocess.run(
        [*CLI, "transfers", "add", "download", SMALL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    words = add.stdout.split()
    assert words[:3] == ["job", "1", "queued:"]
    pid = int(words[words.index("pid") + 1])
    reaper(pid)
    watch = subprocess.run(
        [*CLI, "transfers", "--watch", "--json"], capture_output=True, text=True, timeout=120
    )
    assert watch.returncode == 0, watch.stderr
    frames = [json.loads(line) for line in watch.stdout.splitlines()]
    if frames:  # it may have finished before the watcher looked
        assert frames[-1][0]["state"] == "done"
    job = open_queue(settings).get(1)
    assert job.state == "done", job.last_error
    verify_download(settings, demo_registry_dir, job)
    bad = subprocess.run(
        [*CLI, "transfers", "add", "download", "no:such:ref"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    # A version the registry lacks is refused as `download` refuses it: nothing queued.
    missing = subprocess.run(
        [*CLI, "transfers", "add", "download", "nope:v1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"evalwb-tui: no collection 'nope' in the local registry at {demo_registry_dir}"
    ]
    assert [j.id for j in open_queue(settings).list()] == [1]
    # The app titles its downloads as the command does.
    from tui.panes.registry import _queued_download

    app_job = _queued_download(TransferQueue(settings.paths.state / "app.sqlite"), SMALL, None)
    assert job.title == app_job.title == SMALL


def detail_text(job: Job) -> str:
    """The Transfers pane's details of `job`, as plain text."""
    import io

    from rich.console import Console

    from tui.widgets.job_detail import render_job

    out = io.StringIO()
    Console(width=120, file=out, color_system=None).print(render_job(job))
    return out.getvalue()


def test_log_job_writes_the_run_offline_then_sync_retries_without_a_server(
    env, settings, monkeypatch, reaper
):
    from tui.services.evallog import pending_runs

    results = next(Path(__file__).resolve().parents[1].glob("tui/demo_data/**/metadata.json"))
    payload = {"results": str(results.parent), "project": "evals", "checkpoint": "my-model:v3"}
    queue = open_queue(settings)
    job = queue.enqueue("log", "demo results", payload)
    worker = start([*WORKER, "--idle-exit", "0.2"], reaper)
    assert worker.wait(timeout=90) == 0
    logged = queue.get(job.id)
    assert logged.state == "pending_sync", logged.last_error  # no key: offline, durable
    assert logged.result["group"] == "my-model:v3" and logged.result["mode"] == "offline"
    assert Path(logged.result["wandb_file"]).stat().st_size > 0
    assert [run.run_id for run in pending_runs(settings)] == [logged.result["run_id"]]
    assert logged.files_done == logged.files_total == 4
    details = detail_text(logged)  # the file fields count logging steps, and say so
    assert "4 of 4 steps" in details and "of 4 files" not in details

    # A sync job with a key but no server: retried with backoff, then failed; the offline
    # run stays pending and the key shows nowhere.
    secret = "sync-test-key-0123456789abcdef"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port}")
    sync = queue.enqueue("sync", "pending runs", {}, max_attempts=2)
    worker = start([*WORKER, "--idle-exit", "0.2"], reaper)
    assert worker.wait(timeout=90) == 0
    failed = queue.get(sync.id)
    assert failed.state == "failed" and failed.attempts == 2
    assert "1 of 1 run(s) not synced" in failed.last_error
    assert "not reachable" in failed.last_error
    assert queue.get(job.id).state == "pending_sync"
    log = log_path(settings).read_text()
    assert f"job {sync.id} sync 'pending runs': queued" in log  # the first, retryable failure
    assert secret not in log and secret not in failed.last_error


def test_cancel_stops_a_running_download_and_the_worker_goes_on(
    env, settings, big_registry, monkeypatch, reaper
):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(big_registry))
    queue = open_queue(settings)
    job = queue.enqueue("download", BIG, {"ref": BIG})
    worker = start([*WORKER, "--idle-exit", "0.5"], reaper)
    wait_for("the download to start", lambda: queue.get(job.id).files_done >= 1)
    assert queue.cancel(job.id).cancel_requested
    assert worker.wait(timeout=60) == 0  # it stopped the job, then went idle
    stopped = queue.get(job.id)
    assert stopped.state == "cancelled"
    assert stopped.files_done < stopped.files_total
    assert not list(settings.artifact_dir.rglob(cache.MARKER))  # nothing published


def test_a_job_waiting_for_the_real_artifact_says_so_then_fails_on_the_timeout(
    env, monkeypatch, reaper
):
    shared = env / "shared" / "ckpt"
    shared.mkdir(parents=True)
    (shared / "config.json").write_text("{}")
    (shared / "model.safetensors").write_bytes(os.urandom(1000))
    LocalRegistry(env / "registry").add_version("m-local", f"file://{shared}")
    (shared / "model.safetensors").unlink()
    monkeypatch.setenv("WANDB_ARTIFACT_WAIT_TIMEOUT_SEC", "2")
    settings = load_settings(dict(os.environ))
    queue = open_queue(settings)
    job = queue.enqueue("download", "m", {"ref": "m"})
    watcher = start([*CLI, "transfers", "--watch"], reaper)
    first_line(watcher)
    start([*WORKER, "--idle-exit", "1"], reaper)

    wait_for("the job to run", lambda: job_in(queue, job.id, "running"))
    waiting = wait_for("the note", lambda: queue.get(job.id).note)
    assert waiting.startswith("waiting for m:latest: m-local:latest misses 1 file(s)")
    assert "model.safetensors" in waiting and "s left" in waiting
    listed = subprocess.run([*CLI, "transfers"], capture_output=True, text=True, timeout=30)
    assert "(waiting for m:latest" in listed.stdout

    failed = wait_for("the failure", lambda: job_in(queue, job.id, "failed"))
    assert "did not appear within 2 s (WANDB_ARTIFACT_WAIT_TIMEOUT_SEC)" in failed.last_error
    listed = subprocess.run([*CLI, "transfers"], capture_output=True, text=True, timeout=30)
    assert "(waiting for" not in listed.stdout  # a failed job shows its state, not the note
    watched = watcher.communicate(timeout=60)[0].splitlines()
    assert any("running" in line and "(waiting for m:latest" in line for line in watched)
    assert watched[-1].split()[2] == "failed"


def test_cli_download_prints_the_wait_in_a_log_once_per_change(env, monkeypatch):
    shared = env / "shared" / "ckpt"
    shared.mkdir(parents=True)
    (shared / "config.json").write_text("{}")
    LocalRegistry(env / "registry").add_version("m-local", f"file://{shared}")
    (shared / "config.json").unlink()
    monkeypatch.setenv("WANDB_ARTIFACT_WAIT_TIMEOUT_SEC", "1")
    done = subprocess.run([*CLI, "download", "m"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("evalwb-tui: waiting for m:latest: m-local:latest misses")
    assert "WANDB_ARTIFACT_WAIT_TIMEOUT_SEC" in lines[1]


def test_a_download_job_names_an_unusable_wandb_artifact_dir(env, monkeypatch, reaper):
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(env / "registry"))
    source = env / "src" / "hf"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    LocalRegistry(env / "registry").add_version("m", env / "src")
    (env / "a-file").write_text("x")
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(env / "a-file"))
    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "m", {"ref": "m"})
    start([*WORKER, "--idle-exit", "1"], reaper)

    failed = wait_for("the failure", lambda: job_in(queue, job.id, "failed"))
    assert failed.attempts == 1  # no retry can help
    assert failed.last_error.endswith(
        f"WANDB_ARTIFACT_DIR {env / 'a-file'}: cannot create the cache folder "
        "(it is a file, not a folder)"
    )


def test_the_worker_runs_below_the_apps_priority(env, settings, monkeypatch, reaper):
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "30")
    worker = start(WORKER, reaper)
    deadline = time.monotonic() + 10
    while not worker_status(settings).alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_status(settings).alive
    # Field 19 of /proc/PID/stat is the nice value; fields after the ')' of the name.
    fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(fields[16]) == os.nice(0) + WORKER_NICENESS
    worker.terminate()
    assert worker.wait(timeout=10) == 0


def test_a_download_job_uses_the_local_registry_it_names(env, monkeypatch, reaper):
    # The app on --demo browses a registry the worker's settings do not name.
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(env / "configured-and-empty"))
    other = env / "the-apps-registry"
    source = env / "src" / "hf"
    source.mkdir(parents=True)
    (source / "config.json").write_text('{"model_type": "llama"}')
    LocalRegistry(other).add_version("m", env / "src")
    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "m", {"ref": "m", "registry": str(other)})
    start([*WORKER, "--idle-exit", "1"], reaper)

    done = wait_for("the download", lambda: job_in(queue, job.id, "done"))
    checkpoint = Path(done.result["path"])  # the folder holding config.json
    assert (checkpoint / "config.json").read_text() == '{"model_type": "llama"}'


def test_a_worker_started_with_other_settings_is_replaced_by_one_with_these(
    env, demo_registry_dir, monkeypatch, reaper
):
    """A worker started before the settings changed (another registry, a secret added)
    is stopped and a fresh one runs the job; the same settings keep the worker."""
    from tui.services.worker import ensure_worker, lock_path, settings_fingerprint

    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "60")
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(env / "empty-registry"))
    old = ensure_worker(load_settings(dict(os.environ)), wait=30)
    reaper(old.pid)
    assert old.started and not old.restarted and old.alive

    # A secret changed too (not WANDB_API_KEY: that would make W&B the registry).
    secret = "restart-test-secret-0123456789abcdef"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    settings = load_settings(dict(os.environ))
    new = ensure_worker(settings, wait=30, restart_timeout=60)
    reaper(new.pid)
    assert new.restarted and new.started and new.alive and new.pid != old.pid
    assert not process_alive(old.pid, None)
    assert worker_status(settings).fingerprint == settings_fingerprint(settings)
    again = ensure_worker(settings, wait=30)
    assert (again.pid, again.started, again.restarted) == (new.pid, False, False)

    # The job needs the new settings: its ref is only in the registry named now.
    queue = open_queue(settings)
    job = queue.enqueue("download", SMALL, {"ref": SMALL})
    done = wait_for("the download", lambda: job_in(queue, job.id, "done", "failed"), 120)
    assert done.state == "done", done.last_error
    assert done.owner_pid == new.pid
    assert "stopped by SIGTERM" in log_path(settings).read_text()
    for text in (lock_path(settings).read_text(), log_path(settings).read_text()):
        assert secret not in text


def test_the_settings_fingerprint_follows_each_setting_and_hides_secrets(env):
    from tui.services.worker import settings_fingerprint

    base = {"WANDB_ARTIFACT_DIR": str(env / "cache")}
    same = settings_fingerprint(load_settings(base))
    assert settings_fingerprint(load_settings(dict(base))) == same
    secret = "fingerprint-key-0123456789"
    changes = [
        {"WANDB_API_KEY": secret},
        {"WANDB_API_KEY": secret + "x"},
        {"WANDB_BASE_URL": "http://127.0.0.1:9"},
        {"WANDB_ENTITY": "team"},
        {"WANDB_PROJECT": "p"},
        {"EVALWB_REGISTRY_DIR": str(env / "r")},
        {"WANDB_ARTIFACT_DIR": str(env / "other-cache")},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
        {"AWS_SECRET_ACCESS_KEY": secret},
    ]
    prints = {settings_fingerprint(load_settings(base | change)) for change in changes}
    assert len(prints) == len(changes) and same not in prints
    assert all(secret not in p for p in prints)
    # Only settings jobs use count: the theme is the app's alone.
    assert settings_fingerprint(load_settings(base | {"EVALWB_THEME": "ansi"})) == same


def test_demo_transfers_add_download_names_the_demo_registry_for_the_worker(
    env, demo_registry_dir, monkeypatch, reaper
):
    # The worker's own settings name the default (empty) registry, not the demo's.
    monkeypatch.delenv("EVALWB_REGISTRY_DIR")
    settings = load_settings(dict(os.environ))
    demo_root = settings.paths.data / "demo"
    demo_root.parent.mkdir(parents=True, exist_ok=True)
    demo_registry_dir.rename(demo_root)
    add = subprocess.run(
        [*CLI, "--demo", "transfers", "add", "download", SMALL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    reaper(int(add.stdout.split("pid ")[1].split()[0]))
    queue = open_queue(settings)
    job = queue.get(1)
    assert job.payload["registry"] == str(demo_root)
    done = wait_for("the download", lambda: job_in(queue, 1, "done", "failed"), 120)
    assert done.state == "done", done.last_error
    verify_download(settings, demo_root, done)


def one_big_file(tmp_path: Path, size: int) -> Path:
    """A registry holding `one:v0`: a config and one `size`-byte shard."""
    src = tmp_path / "one-src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (src / "model.safetensors").write_bytes(os.urandom(size))
    LocalRegistry(tmp_path / "one-registry").add_version("one", src)
    return tmp_path / "one-registry"


def _cancel_watch_alive() -> bool:
    return any(t.name == "cancel-watch" for t in threading.enumerate())


def recording(handler: Handler, seen: list[dict], pause_at: int | None = None) -> Handler:
    """`handler`, with every progress update recorded; with `pause_at`, the job is paused
    through the queue once that many bytes are reported, and the handler waits (bounded)
    until it sees the pause, as it would with a user pressing `p` at that moment."""

    def run(job: Job, progress: Progress) -> dict:
        real = progress.update

        def update(**values: object) -> None:
            seen.append(values)
            real(**values)
            done = values.get("bytes_done")
            if pause_at is not None and isinstance(done, int) and done >= pause_at:
                if not progress.queue.get(job.id).pause_requested and not progress.paused:
                    progress.queue.pause(job.id)
                deadline = time.monotonic() + 10
                while not progress.cancelled and time.monotonic() < deadline:
                    time.sleep(0.01)
                # The copy sees the pause through the event the cancel watcher sets; the
                # watcher ends right after setting it. Until then a fast disk would copy
                # the rest of the file (the watcher polls every CANCEL_POLL_SEC).
                while _cancel_watch_alive() and time.monotonic() < deadline:
                    time.sleep(0.01)

        progress.update = update  # type: ignore[method-assign]
        return handler(job, progress)

    return run


def test_a_paused_download_resumes_where_it_was_instead_of_starting_over(
    env, settings, tmp_path, monkeypatch
):
    monkeypatch.setattr(cache, "COPY_CHUNK", 256 * 1024)
    size = 32 * 1024 * 1024
    registry = one_big_file(tmp_path, size)
    queue = open_queue(settings)
    job = queue.enqueue("download", "one", {"ref": "one", "registry": str(registry)})
    handler = _download_handler(settings)
    before: list[dict] = []
    Runner(queue, {"download": recording(handler, before, pause_at=size // 2)}).run_once()
    paused = queue.get(job.id)
    assert paused.state == "paused", paused.last_error
    assert size // 2 <= paused.bytes_done < paused.bytes_total
    [part] = (settings.artifact_dir / cache.PARTIAL_DIR).rglob("model.safetensors")
    left = part.stat().st_size
    assert left >= size // 2  # the partial file is kept, outside the cache folder

    queue.resume(job.id)
    after: list[dict] = []
    Runner(queue, {"download": recording(handler, after)}).run_once()

    done = queue.get(job.id)
    assert done.state == "done", done.last_error
    moved = [v["bytes_done"] for v in after if v.get("bytes_done") is not None]
    assert moved[0] >= left and moved == sorted(moved)  # never back to the start
    assert done.bytes_done == done.bytes_total == paused.bytes_total
    assert done.result["bytes"] == size - left  # only the rest was read
    verify_download(settings, registry, done)
    # Each file is recorded by name, done at its size.
    files = {f.path: (f.bytes_done, f.size, f.state) for f in done.files}
    sizes = {e.path: e.size for e in LocalRegistry(registry).files("one:v0")}
    assert files == {path: (n, n, "done") for path, n in sizes.items()}


def test_the_worker_does_not_inherit_the_wandb_service_of_this_process(
    env, settings, monkeypatch, reaper
):
    # The wandb SDK sets WANDB_SERVICE once it is used here (the app's W&B backend); a
    # worker that inherited it would fail its jobs once this process and its service end.
    monkeypatch.setenv("WANDB_SERVICE", "2-4242-tcp-localhost-1")
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "30")
    status = ensure_worker(settings, wait=60)
    assert status.started and status.pid is not None
    reaper(status.pid)
    environ = Path(f"/proc/{status.pid}/environ").read_bytes().split(b"\0")
    assert not [item for item in environ if item.startswith(b"WANDB_SERVICE=")]
    assert b"EVALWB_WORKER_IDLE_SEC=30" in environ


def test_a_worker_downloads_from_both_wandb_registries(
    env, monkeypatch, reaper, wandb_service, tmp_path
):
    """Against the W&B emulator in each profile: one worker downloads `my-model` of the
    model registry and of `checkpoints`, each verified, into a folder of its registry."""
    from tests.wandb_emulator import FAKE_KEY

    service: WandbService = wandb_service
    model, checkpoints = (LocalRegistry(tmp_path / name) for name in ("model", "checkpoints"))
    for registry, step in ((model, "final"), (checkpoints, "step-500")):
        source = tmp_path / "src" / step
        source.mkdir(parents=True)
        (source / "config.json").write_text(json.dumps({"model_type": "llama", "step": step}))
        (source / f"{step}.safetensors").write_bytes(os.urandom(4096))
        registry.add_version("my-model", source)
    service.serve(model, checkpoints)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", service.emulator.base_url)
    monkeypatch.setenv("WANDB_ENTITY", "team")
    queue = open_queue(load_settings(dict(os.environ)))
    refs = ("my-model:v0", "wandb-registry-checkpoints/my-model:v0")
    jobs = [queue.enqueue("download", ref, {"ref": ref}) for ref in refs]
    start([*WORKER, "--idle-exit", "1"], reaper)

    done = [
        wait_for(f"job {j.id}", lambda j=j: job_in(queue, j.id, "done", "failed")) for j in jobs
    ]
    assert [j.state for j in done] == ["done", "done"], [j.last_error for j in done]
    folders = [Path(j.result["folder"]) for j in done]
    assert folders[0] != folders[1] and "wandb-registry-checkpoints" in folders[1].parts
    for registry, folder in zip((model, checkpoints), folders, strict=True):
        entries = registry.files("my-model:v0")
        assert all(cache.md5_b64_of(folder / e.path) == e.digest for e in entries)
    service.check()

"""Online logging through the detached worker, against the W&B API emulator.

A log job writes the run offline first, then the worker uploads it with `wandb sync` and
applies its lineage. Everything the server ends with is read back with the SDK's own
`wandb.Api`. Processes are real (the CLI, the worker, `wandb sync`, `wandb-core`), killed
in finalizers; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.wandb_emulator import FAKE_KEY, ORG_ENTITY, PROFILES, WandbEmulator
from tui.services.evallog import content_alias, pending_runs, run_artifact_name
from tui.services.registry.local import LocalRegistry
from tui.services.results import read_run
from tui.services.settings import Settings, load_settings
from tui.services.transfers import DONE, RUNNING, Job, open_queue
from tui.services.worker import log_path, temp_root, worker_status

REPO = Path(__file__).resolve().parent.parent
RESULTS = next(REPO.glob("tui/demo_data/eval-framework/*my-model_v3/*ARC*/*/metadata.json")).parent
CLI = [sys.executable, "-m", "tui.cli"]
PROJECT, CHECKPOINT = "evals", "my-model:v3"


@pytest.fixture
def env(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated folders (the SDK's too), a key, and a short worker idle time."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = isolated_env / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "2")
    return isolated_env


@pytest.fixture
def serve(
    env: Path,
    demo_registry_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., WandbEmulator]]:
    """Start an emulator over the demo registry (optionally on a given port) and point
    WANDB_BASE_URL at it; every one started is stopped at the end. Its profile is
    `saas` unless a test parametrizes `serve` indirectly."""
    started: list[WandbEmulator] = []
    profile = getattr(request, "param", "saas")

    def start(port: int = 0) -> WandbEmulator:
        registry = LocalRegistry(demo_registry_dir)
        emulator = WandbEmulator(registry, port=port, max_seconds=120, profile=profile)
        started.append(emulator.start())
        monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def reap() -> Iterator[Callable[[int], None]]:
    """Register a process id; it and its descendants are SIGKILLed at the end."""
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        kill_tree(pid)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, found through /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything it started, as a crash would end them."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def settings_now() -> Settings:
    return load_settings(dict(os.environ))


def enqueue_log(settings: Settings, results: Path = RESULTS, project: str | None = PROJECT) -> Job:
    payload = {"results": str(results), "checkpoint": CHECKPOINT}
    if project is not None:
        payload["project"] = project
    return open_queue(settings).enqueue("log", "ARC demo results", payload)


def start_worker(
    reap: Callable[[int], None], idle: float = 2, **popen: Any
) -> subprocess.Popen[bytes]:
    """A worker started as `ensure_worker` starts one: its own session, no terminal."""
    proc = subprocess.Popen(
        [*CLI, "worker", "--idle-exit", str(idle)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **popen,
    )
    reap(proc.pid)
    return proc


def job_done(settings: Settings, job_id: int) -> Job | None:
    job = open_queue(settings).get(job_id)
    assert job.state not in ("failed", "cancelled", "pending_sync"), job.last_error
    return job if job.state == DONE else None


def api(emulator: WandbEmulator) -> Any:
    import wandb

    return wandb.Api(api_key=FAKE_KEY, overrides={"base_url": emulator.base_url}, timeout=30)


def check_server(emulator: WandbEmulator, job: Job) -> None:
    """The server holds exactly one run and one results artifact version for the job,
    with group, config, summary, aliases, files and the lineage edge; read with wandb.Api."""
    run = read_run(RESULTS)
    name, alias = run_artifact_name(run), content_alias(RESULTS)
    assert (job.result["artifact_name"], job.result["artifact_alias"]) == (name, alias)
    client = api(emulator)
    runs = list(client.runs(f"team/{PROJECT}"))
    assert [r.id for r in runs] == [job.result["run_id"]]
    [wb_run] = runs
    assert (wb_run.group, wb_run.job_type, wb_run.state) == (CHECKPOINT, "ARC", "finished")
    # One logged step, one history row: a resumed upload does not append it again.
    assert wb_run._attrs["historyLineCount"] == 1
    assert wb_run.config["checkpoint_name"] == "my-model"
    assert wb_run.config["checkpoint_version"] == "v3"
    for key, value in run.aggregated.items():
        assert wb_run.summary[f"ARC/{key}"] == pytest.approx(value, nan_ok=True)
    results = client.artifacts("eval", f"team/{PROJECT}/{name}")
    assert [a.version for a in results] == ["v0"]
    artifact = client.artifact(f"team/{PROJECT}/{name}:{alias}")
    assert sorted(artifact.aliases) == sorted([alias, "latest"])
    assert sorted(f.name for f in artifact.files()) == sorted(run.files)
    assert artifact.logged_by().id == wb_run.id
    # Linked on the organisation's registry, whose entity is not the team's.
    model = client.artifact(f"{ORG_ENTITY}/wandb-registry-model/{CHECKPOINT}")
    assert wb_run.id in [r.id for r in model.used_by()]
    assert emulator.errors == []


@pytest.mark.parametrize("serve", list(PROFILES), indirect=True)
def test_log_command_killed_and_hung_up_the_worker_still_uploads(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    # One results file is held a second, so the upload is seen in flight.
    emulator.faults.add("PUT /storage/artifact", 1, delay=1.0)
    command = subprocess.Popen(
        [*CLI, "log", str(RESULTS), "--project", PROJECT, "--checkpoint", CHECKPOINT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own terminal session, as over SSH
    )
    reap(command.pid)
    job = wait_for(
        "the log job to start",
        lambda: [j for j in open_queue(settings).list() if j.state in (RUNNING, DONE)],
    )[0]
    worker = worker_status(settings)
    assert worker.alive and worker.pid != command.pid
    reap(worker.pid)  # detached: not below the command once that is gone
    os.killpg(command.pid, signal.SIGHUP)  # the terminal goes away...
    os.kill(command.pid, signal.SIGKILL)  # ...and the command with it
    command.wait(timeout=10)
    status = open_queue(settings).get(job.id)
    assert status.state in (RUNNING, DONE)
    seen: list[tuple[int, int]] = []

    def finished() -> Job | None:
        job_now = open_queue(settings).get(job.id)
        if job_now.state == RUNNING and job_now.bytes_total:
            seen.append((job_now.bytes_done, job_now.bytes_total))
        return job_done(settings, job.id)

    done = wait_for("the worker to finish the job", finished, 60)
    assert done.result["pending_sync"] is False and done.result["lineage_pending"] is False
    # Upload progress reached the queue while the upload ran, and ended whole.
    assert seen and all(d <= t for d, t in seen)
    assert done.bytes_done == done.bytes_total >= max(t for _, t in seen)
    check_server(emulator, done)


def test_upload_progress_is_read_from_wandb_core_operation_stats() -> None:
    """The shape of wandb-core's sync status (a private API) that upload progress reads."""
    from wandb.proto import wandb_internal_pb2 as pb

    from tui.services.evallog import UploadTally

    big = pb.Operation(desc="big.bin", progress="54.9MB/64.0MB")
    stats = pb.OperationStats(
        label="team/evals/r1",
        total_operations=3,
        operations=[
            pb.Operation(desc="uploading artifact results", subtasks=[big]),
            pb.Operation(desc="uploading config.yaml", progress="865B/865B"),
            pb.Operation(desc="updating run metadata"),
        ],
    )
    events: list[Any] = []
    tally = UploadTally()
    tally.add([stats])
    tally.add([pb.OperationStats(label="team/evals/r1")])  # finished uploads leave the stats
    tally.report(events.append)
    files = {e.detail: (e.done, e.total) for e in events if e.stage == "upload_file"}
    assert files == {
        "artifact results/big.bin": (int(54.9 * 2**20), 64 * 2**20),
        "config.yaml": (865, 865),
    }
    [total] = [(e.done, e.total) for e in events if e.stage == "upload"]
    assert total == (int(54.9 * 2**20) + 865, 64 * 2**20 + 865)
    assert [(e.done, e.total) for e in events if e.stage == "upload_files"] == [(1, 2)]
    tally.finish()
    assert tally.files["artifact results/big.bin"] == (64 * 2**20, 64 * 2**20)


def test_a_fast_log_job_ends_with_its_whole_upload_counted(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    """No upload is held in flight: the totals come from the plan, not from polling."""
    serve()
    settings = settings_now()
    job = enqueue_log(settings)
    start_worker(reap)
    done = wait_for("the log job", lambda: job_done(settings, job.id), 60)
    assert done.result["pending_sync"] is False
    results = sum(path.stat().st_size for path in read_run(RESULTS).files.values())
    assert done.bytes_done == done.bytes_total > results > 0  # the results and the run's files
    assert done.files_done == done.files_total > 0


def test_the_upload_plan_counts_unseen_files_and_ends_whole() -> None:
    from tui.services.evallog import UploadTally

    events: list[Any] = []
    tally = UploadTally({"run/config.yaml": 865, "artifact/results.json": 4000})
    tally.report(events.append)
    tally.finish()
    tally.report(events.append)
    uploads = [(e.done, e.total) for e in events if e.stage == "upload"]
    assert uploads == [(0, 4865), (4865, 4865)]
    assert [(e.done, e.total) for e in events if e.stage == "upload_files"] == [(0, 2), (2, 2)]


def test_worker_killed_mid_upload_a_new_worker_resumes_without_doubles(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    # The first results-file upload is held, so the worker is surely mid-upload.
    emulator.faults.add("PUT /storage/artifact", 1, delay=20)
    job = enqueue_log(settings)
    first = start_worker(reap)
    wait_for("an upload to be under way", lambda: emulator.faults.hits, 60)
    kill_tree(first.pid)
    assert open_queue(settings).get(job.id).state == RUNNING
    # Killed with an artifact created but not committed, and no run finished.
    assert any(a.state == "PENDING" for a in emulator.uploads.artifacts)
    assert all(r.state == "running" for r in emulator.uploads.runs.values())
    start_worker(reap)
    done = wait_for("the new worker to finish the job", lambda: job_done(settings, job.id), 60)
    assert done.attempts == 2
    check_server(emulator, done)
    assert [r.name for r in emulator.uploads.runs.values()] == [done.result["run_id"]]


@pytest.mark.parametrize(
    ("hold", "killed_when"),
    [
        # The results upload is held; the file stream posts the history meanwhile.
        ("PUT /storage/artifact", "history"),
        # The upload is finished and marked synced; the lineage is being applied.
        ("UseArtifact", "finished"),
    ],
)
def test_worker_killed_after_the_history_reached_the_server_leaves_one_row(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None], hold: str, killed_when: str
) -> None:
    emulator = serve()
    settings = settings_now()
    emulator.faults.add(hold, 1, delay=45)
    job = enqueue_log(settings)
    first = start_worker(reap)

    def reached() -> bool:
        runs = list(emulator.uploads.runs.values())
        if killed_when == "history":
            return bool(emulator.faults.hits) and any(r.history for r in runs)
        return bool(emulator.faults.hits) and any(r.state == "finished" for r in runs)

    wait_for(f"the run's {killed_when} on the server", reached, 60)
    kill_tree(first.pid)
    [record] = emulator.uploads.runs.values()
    assert len(record.history) == 1
    assert open_queue(settings).get(job.id).state == RUNNING
    emulator.faults.clear()
    start_worker(reap)
    done = wait_for("the new worker to finish the job", lambda: job_done(settings, job.id), 90)
    assert done.attempts == 2
    check_server(emulator, done)
    assert sorted(record.history) == [0]
    # The copy the upload resumed from is gone; the run's own log is marked synced.
    run_dir = Path(done.result["run_dir"])
    assert not list(run_dir.glob("*.resume.wandb*"))
    assert Path(done.result["wandb_file"] + ".synced").exists()


def test_server_down_then_failing_the_job_retries_and_nothing_is_lost_or_doubled(
    env: Path,
    serve: Callable[..., WandbEmulator],
    reap: Callable[[int], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    settings = settings_now()
    job = enqueue_log(settings)
    start_worker(reap)
    # Nobody listens yet: the run is written offline and the upload waits to be retried.
    waiting = wait_for(
        "a failed first attempt",
        lambda: (j := open_queue(settings).get(job.id)).last_error and j.state == "queued" and j,
        60,
    )
    assert "not reachable" in waiting.last_error
    emulator = serve(port)
    for operation in ("UpsertBucket", "CreateArtifact", "CommitArtifact"):
        emulator.faults.add(operation, 1)
    emulator.faults.add("/file_stream", 1, drop=True)
    emulator.faults.add("PUT /storage", 1, drop=True)
    done = wait_for("the retried job to finish", lambda: job_done(settings, job.id), 90)
    assert done.attempts >= 2
    assert emulator.faults.pending == 0, emulator.faults.hits
    check_server(emulator, done)
    [record] = emulator.uploads.runs.values()
    assert len(record.history) == 1  # one logged step, sent again after a drop, kept once
    assert FAKE_KEY not in log_path(settings).read_text() + waiting.last_error


@pytest.mark.parametrize("serve", list(PROFILES), indirect=True)
def test_the_registry_views_show_the_uploaded_results_and_lineage(
    env: Path,
    serve: Callable[..., WandbEmulator],
    reap: Callable[[int], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tui.services.eval_results import lineage_detail, results_by_version
    from tui.services.registry.wandb import WandbRegistry
    from tui.services.settings import DEFAULT_RESULTS_PROJECT as DEFAULT

    emulator = serve()
    # No WANDB_PROJECT: the results go to the default project, and are looked up there.
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    settings = settings_now()
    # Another config hash: the demo registry already holds eval collections named after
    # the demo results, and the backend finds a collection by name.
    results = env / RESULTS.parent.parent.name / RESULTS.parent.name / "fewshot_3__samples_10_0e0e0"
    shutil.copytree(RESULTS, results)
    job = enqueue_log(settings, results, project=None)
    start_worker(reap)
    done = wait_for("the job to finish", lambda: job_done(settings, job.id), 60)
    registry = WandbRegistry(settings)
    name, run_id = done.result["artifact_name"], done.result["run_id"]
    # Lineage view: the model version lists the uploaded run among its users...
    detail = lineage_detail(registry, registry.resolve(CHECKPOINT))
    [run] = [r for r, _ in detail.used_by if r.id == run_id]
    assert (run.group, run.project, run.job_type) == (CHECKPOINT, DEFAULT, "ARC")
    # ...and the default project's eval collections hold its results, produced by that run.
    [found] = [c for c in registry.list_collections(type="eval") if c.name == name]
    assert (found.project, found.aliases) == (
        DEFAULT,
        {done.result["artifact_alias"]: "v0", "latest": "v0"},
    )
    [version] = registry.list_versions(f"{DEFAULT}/{name}")
    assert registry.lineage(version.ref()).produced_by.id == run_id
    assert emulator.errors == []
    table = results_by_version(registry, "my-model")
    assert {r.version for r in table.results if r.run.id == run_id} == {"v3"}


def test_without_the_sync_service_the_wandb_sync_command_uploads(
    serve: Callable[..., WandbEmulator], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tui.services import evallog

    def no_service(*args: object) -> None:
        raise AttributeError("'ServiceConnection' object has no attribute 'init_sync'")

    emulator = serve()
    monkeypatch.delenv("WANDB_DIR", raising=False)  # the command must still not use the cwd
    settings = settings_now()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    logged = evallog.log_run(read_run(RESULTS), settings=settings, project=PROJECT, offline=True)
    monkeypatch.setattr(evallog, "_sync_here", no_service)  # an SDK without it
    [result] = evallog.sync_pending(settings)
    assert result.ok, result.message
    assert [r.name for r in emulator.uploads.runs.values()] == [logged.run_id]
    [artifact] = [a for a in emulator.uploads.artifacts if a.type == "eval"]
    assert (artifact.state, sorted(artifact.aliases)) == (
        "COMMITTED",
        [logged.artifact_alias, "latest"],
    )
    assert emulator.errors == []
    assert list(cwd.iterdir()) == []  # the wandb command wrote nothing where it was started


def test_a_sync_job_uploads_an_offline_run_and_reports_bytes(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    queue = open_queue(settings)
    offline = {"results": str(RESULTS), "project": PROJECT, "offline": True}
    logged = queue.enqueue("log", "offline results", offline)
    emulator.faults.add("PUT /storage/artifact", 1, delay=1.0)  # seen in flight
    sync = queue.enqueue("sync", "pending runs", {})
    start_worker(reap)
    done = wait_for("the sync job", lambda: job_done(settings, sync.id), 60)
    run_id = open_queue(settings).get(logged.id).result["run_id"]
    assert done.result == {"synced": [run_id], "lineage_pending": []}
    assert done.bytes_done == done.bytes_total > 0
    assert [r.name for r in emulator.uploads.runs.values()] == [run_id]
    assert open_queue(settings).get(logged.id).state == DONE  # its log job is done too


def test_a_log_job_uploads_its_own_run_and_leaves_the_pending_ones_for_sync(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    queue = open_queue(settings)
    others = sorted(RESULTS.parent.parent.glob("v*_GSM8K*/*/metadata.json"))[:1]
    others += sorted(RESULTS.parent.parent.glob("v*_MMLU/*/metadata.json"))[:1]
    offline = [
        queue.enqueue(
            "log", "offline", {"results": str(m.parent), "project": PROJECT, "offline": True}
        )
        for m in others
    ]
    job = enqueue_log(settings)
    start_worker(reap)
    done = wait_for("the online log job", lambda: job_done(settings, job.id), 90)
    check_server(emulator, done)  # its own run, and no other
    waiting = {queue.get(j.id).result["run_id"] for j in offline}
    assert len(waiting) == 2
    assert {run.run_id for run in pending_runs(settings)} == waiting
    assert all(queue.get(j.id).state == "pending_sync" for j in offline)


def test_an_upload_writes_nothing_in_the_current_folder_and_cleans_its_temp_files(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None], tmp_path: Path
) -> None:
    serve()
    settings = settings_now()
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    job = enqueue_log(settings)
    worker = start_worker(reap, idle=15, cwd=cwd, env={**os.environ, "TMPDIR": str(temp)})
    wait_for("the log job", lambda: job_done(settings, job.id), 90)
    # While the worker waits for more work: only the SDK's own (empty) folders are kept.
    [own] = temp_root(settings).iterdir()
    left = list(own.rglob("*"))
    assert all(p.is_dir() and p.name.endswith(("wandb-media", "wandb-artifacts")) for p in left)
    assert worker.wait(timeout=60) == 0  # its idle exit
    assert list(cwd.rglob("*")) == []  # no wandb/logs/debug-sync.*.log here
    assert list(temp.rglob("*")) == []  # nor wandb's temp folders or results.table.json
    assert list(temp_root(settings).rglob("*")) == []  # its own temp folder is gone


def test_a_waiting_log_restarts_its_dead_worker_and_reports_what_it_logged(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    emulator.faults.add("PUT /storage/artifact", 1, delay=45)  # the first upload hangs
    command = subprocess.Popen(
        [*CLI, "log", str(RESULTS), "--project", PROJECT, "--checkpoint", CHECKPOINT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    reap(command.pid)
    wait_for("the upload to be under way", lambda: emulator.faults.hits, 60)
    first = worker_status(settings)
    assert first.alive and first.pid is not None
    reap(first.pid)
    kill_tree(first.pid)  # the run is in the log index; its upload is cut
    emulator.faults.clear()
    # Nothing else starts a worker: the waiting command notices and starts one.
    out, err = command.communicate(timeout=90)
    assert command.returncode == 0, err
    assert "the transfer worker stopped; started a new one" in err
    second = worker_status(settings)
    if second.alive:
        reap(second.pid)
    # The run it logged is reported as logged by this command, not as found logged.
    [line] = out.splitlines()
    assert line.startswith("logged  ARC"), line
    assert "skipped" not in out and "--force" not in out
    [job] = open_queue(settings).list()
    assert (job.state, job.attempts, job.result["skipped_duplicate"]) == (DONE, 2, False)
    check_server(emulator, job)


def test_transfers_watch_restarts_a_dead_worker_and_follows_its_job_to_the_end(
    serve: Callable[..., WandbEmulator], reap: Callable[[int], None]
) -> None:
    emulator = serve()
    settings = settings_now()
    emulator.faults.add("PUT /storage/artifact", 1, delay=45)
    job = enqueue_log(settings)
    first = start_worker(reap, idle=30)
    wait_for("the upload to be under way", lambda: emulator.faults.hits, 60)
    watch = subprocess.Popen(
        [*CLI, "transfers", "--watch"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    reap(watch.pid)
    wait_for("the watcher to show the job", lambda: watch.stdout.readline())
    kill_tree(first.pid)
    emulator.faults.clear()
    out, err = watch.communicate(timeout=90)
    assert watch.returncode == 0, err
    assert "the transfer worker stopped; started a new one" in err
    second = worker_status(settings)
    if second.alive:
        reap(second.pid)
    assert out.splitlines()[-1].split()[:3] == [str(job.id), "log", "done"]
    check_server(emulator, open_queue(settings).get(job.id))

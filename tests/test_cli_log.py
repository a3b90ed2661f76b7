"""`evalwb-tui log` as a user runs it: real CLI processes, the real wandb SDK offline, and
the W&B API emulator as the reachable server that makes logging go through the worker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.silent_server import SilentServer
from tests.wandb_emulator import FAKE_KEY, WandbEmulator
from tui.services.evallog import pending_runs
from tui.services.registry.local import LocalRegistry
from tui.services.settings import load_settings
from tui.services.transfers import open_queue
from tui.services.worker import worker_status

REPO = Path(__file__).resolve().parent.parent
RESULTS = next(REPO.glob("tui/demo_data/eval-framework/*my-model_v3/*ARC*/*/metadata.json")).parent
CLI = [sys.executable, "-m", "tui.cli"]


@pytest.fixture
def env(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated folders, the SDK's too, and a short worker idle time."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = isolated_env / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "2")
    return isolated_env


@pytest.fixture
def online(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbEmulator]:
    """A key and a reachable server, so `log` goes through the transfer worker."""
    emulator = WandbEmulator(LocalRegistry(env / "server"), port=0, max_seconds=120).start()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
    yield emulator
    emulator.stop()


def log(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "log", str(RESULTS), *args], capture_output=True, text=True, timeout=120
    )


def test_results_logged_before_are_said_so_and_not_queued_again(online):
    first = log("--offline", "--json")
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]

    again = log()  # online: a key and a reachable server
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"skipped {json.loads(first.stdout)['name']}: already logged as run {run_id}; "
        "--force logs it again"
    ]
    as_json = json.loads(log("--json").stdout)
    assert as_json["skipped_duplicate"] and as_json["run_id"] == run_id
    settings = load_settings(dict(os.environ))
    assert open_queue(settings).list() == []  # no job, so no second run either
    assert not worker_status(settings).alive

    offline = log("--offline")
    assert offline.stdout.startswith("skipped ") and "--force logs it again" in offline.stdout
    assert [run.run_id for run in pending_runs(settings)] == [run_id]


@pytest.mark.parametrize("prefix", ["notas3", "s3:/bucket", "https://bucket/prefix"])
def test_a_bad_s3_prefix_is_one_line_before_anything_is_queued(online, prefix):
    done = log("--s3-prefix", prefix)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"evalwb-tui: --s3-prefix {prefix!r} must look like s3://bucket/prefix"
    ]
    settings = load_settings(dict(os.environ))
    assert open_queue(settings).list() == []
    assert pending_runs(settings) == []


def test_sync_says_synced_once_and_why_not_when_it_could_not(env, monkeypatch):
    logged = log("--json")  # no key: offline, pending sync
    assert logged.returncode == 0, logged.stderr
    run_id = json.loads(logged.stdout)["run_id"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed)
    down = sync()
    assert down.returncode == 1
    assert down.stdout == f"run {run_id} not synced: W&B server {closed} is not reachable\n"

    emulator = WandbEmulator(LocalRegistry(env / "server"), port=0, max_seconds=120).start()
    try:
        monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
        up = sync()
    finally:
        emulator.stop()
    assert (up.returncode, up.stdout) == (0, f"synced run {run_id}\n"), up.stderr
    assert pending_runs(load_settings(dict(os.environ))) == []


def sync() -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "sync"], capture_output=True, text=True, timeout=120)


def test_a_queued_log_job_is_titled_as_the_run_pane_titles_it(env, demo_registry_dir, monkeypatch):
    from tui.services.evalrun import log_title

    emulator = WandbEmulator(LocalRegistry(demo_registry_dir), port=0, max_seconds=120).start()
    try:
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
        done = log("--checkpoint", "my-model:v3")
    finally:
        emulator.stop()
    assert done.returncode == 0, done.stderr
    [job] = open_queue(load_settings(dict(os.environ))).list(["done"])
    assert job.title == log_title(RESULTS, "my-model:v3")
    assert job.title.startswith("ARC · my-model:v3 · ")


def test_the_same_results_under_another_checkpoint_are_refused_unless_forced(env):
    first = log("--checkpoint", "my-model:v3", "--json")
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]

    other = log("--checkpoint", "my-model:v2")
    assert other.returncode == 2 and other.stdout == ""
    assert other.stderr.splitlines()[-1] == (
        f"evalwb-tui: {RESULTS}: these results were logged under checkpoint my-model:v3 "
        f"(run {run_id}); a run belongs to one checkpoint, so --force logs them under "
        "my-model:v2 as another run"
    )
    settings = load_settings(dict(os.environ))
    assert [run.run_id for run in pending_runs(settings)] == [run_id]

    forced = log("--checkpoint", "my-model:v2", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["group"] == "my-model:v2"
    assert len(pending_runs(settings)) == 2


def test_log_against_a_server_that_never_answers_keeps_the_run_offline(env, monkeypatch):
    """A server that accepts TCP and never answers passed the reachability check; the
    upload then waited on it for up to 1,800 s an attempt. Now `log` falls back to an
    offline run at once (the subprocess timeout is the bound)."""
    with SilentServer(max_seconds=90) as silent:
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", silent.url)
        done = subprocess.run(
            [*CLI, "log", str(RESULTS), "--json"], capture_output=True, text=True, timeout=60
        )
    # One probe, and nothing else: the SDK's own telemetry, sent to the server as the
    # process ended, waited on it for 10 s more, offline run or not.
    assert silent.accepted == 1
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["pending_sync"] and record["mode"] == "offline"
    settings = load_settings(dict(os.environ))
    assert [run.run_id for run in pending_runs(settings)] == [record["run_id"]]
    assert open_queue(settings).list() == []  # nothing left waiting on the server


def test_log_of_a_folder_whose_output_jsonl_is_a_fifo_is_one_line(env, tmp_path):
    """`log` hashed output.jsonl for the content alias; a FIFO of that name made it wait
    for a writer forever (the subprocess timeout is the bound)."""
    folder = tmp_path / "results" / RESULTS.name
    shutil.copytree(RESULTS, folder)
    (folder / "output.jsonl").unlink()
    os.mkfifo(folder / "output.jsonl")
    done = subprocess.run([*CLI, "log", str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"evalwb-tui: {folder / 'output.jsonl'}: is a FIFO, not a regular file; "
        "eval-framework writes plain files here, so move it away"
    ]
    assert pending_runs(load_settings(dict(os.environ))) == []

"""Continuous evaluation on the demo registry: `watch` rules, the watcher as a real process
(killed with SIGKILL and started again), the fake eval command, the real transfer worker
logging offline, and compare's gate."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.wandb_emulator import wandb_services  # noqa: F401 - a fixture
from tui.services.promote import AUDIT_KEY, promotions
from tui.services.registry.local import LocalRegistry
from tui.services.settings import load_settings
from tui.services.transfers import PENDING_SYNC, open_queue
from tui.services.watch import (
    LOGGING,
    RUNNING,
    WatchState,
    claim_token,
    claimed_processes,
)

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).with_name("fake_eval_framework.py")
PROGRAM = shlex.join([sys.executable, str(FAKE)])


@pytest.fixture
def demo(isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo registry, a short worker idle time and preset P (ARC, 10 samples)."""
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "1")
    cli("run", "--task", "ARC", "--samples", "10", "--output-dir", str(isolated_env / "out"),
        "--eval-command", PROGRAM, "--save-preset", "P")  # fmt: skip
    return isolated_env


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """Run `evalwb-tui ARGV` as a process; its stdout (a failure shows stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", *argv],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env or dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def watcher(*argv: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "watch", *argv],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def new_version(tmp: Path, name: str = "ck") -> str:
    folder = tmp / name
    folder.mkdir()
    # Other files each time: the same files again are the same version, as on W&B.
    (folder / "config.json").write_text(json.dumps({"name": name}))
    return cli("registry", "add", "my-model", str(folder)).split()[0]


def history() -> list[dict[str, Any]]:
    return json.loads(cli("watch", "history", "--json"))


def wait_for(predicate: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def state_of(version: str) -> str | None:
    with WatchState(load_settings()) as state:
        item = state.get("1", version)
    return item.state if item else None


def log_jobs() -> list[Any]:
    queue = open_queue(load_settings())
    try:
        return [job for job in queue.list() if job.kind == "log"]
    finally:
        queue.close()


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("aggregated_results.json"))


def test_a_new_version_is_evaluated_logged_by_version_and_reported_once(demo: Path) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    assert json.loads(cli("watch", "run", "--once", "--json")) == []  # v0-v4 were there
    version = new_version(demo)
    assert version == "my-model:v5"
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["checkpoint"] == "my-model:v5" and item["state"] == "logged"
    assert item["launches"] == 1 and len(item["run_dirs"]) == 1
    (job,) = log_jobs()
    assert job.id == item["jobs"][0] and job.state == PENDING_SYNC  # offline, awaiting sync
    assert job.payload["checkpoint"] == "my-model:v5"  # grouped by that version
    assert job.payload["results"] == item["run_dirs"][0]
    assert list((demo / "wandb").rglob("*.wandb"))
    assert json.loads(cli("watch", "run", "--once", "--json")) == []  # nothing more to do
    assert len(log_jobs()) == 1 and len(run_folders(demo / "out")) == 1


def test_a_version_registered_while_the_watcher_runs_is_evaluated_once(demo: Path) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    proc = watcher("run", "--interval", "0.3")
    try:
        new_version(demo)
        wait_for(lambda: state_of("v5") == "logged", "v5 logged")
        new_version(demo, "ck2")
        wait_for(lambda: state_of("v6") == "logged", "v6 logged")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    items = {i["version"]: i for i in history()}
    assert set(items) == {"v5", "v6"}
    assert [items[v]["launches"] for v in ("v5", "v6")] == [1, 1]
    assert len(log_jobs()) == 2 and len(run_folders(demo / "out")) == 2
    assert json.loads(cli("watch", "run", "--once", "--json")) == []


def _alive(version: str) -> bool:
    return bool(claimed_processes(claim_token("1", version)))


@pytest.mark.parametrize("point", ["eval-running", "eval-killed-too", "logging"])
def test_a_watcher_killed_mid_run_neither_skips_nor_doubles(demo: Path, point: str) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    new_version(demo)
    proc = watcher("run", "--once", FAKE_EF_SECONDS="3" if point != "logging" else "0")
    try:
        if point == "logging":
            wait_for(lambda: state_of("v5") == LOGGING, "v5 logging")
        else:
            wait_for(lambda: state_of("v5") == RUNNING and _alive("v5"), "the eval running")
    finally:
        proc.kill()
        proc.wait()
    if point == "eval-killed-too":
        for pid in claimed_processes(claim_token("1", "v5")):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive("v5"), "the eval gone")
    else:
        assert state_of("v5") in (RUNNING, LOGGING)
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["version"] == "v5" and item["state"] == "logged", item
    # Adopted when it ran on or had finished; launched again only when it had died.
    assert item["launches"] == (2 if point == "eval-killed-too" else 1)
    assert len(run_folders(demo / "out")) == 1
    assert len(log_jobs()) == 1
    assert json.loads(cli("watch", "run", "--once", "--json")) == []


def test_log_jobs_queued_by_a_watcher_that_died_before_recording_them_are_reused(
    demo: Path,
) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    new_version(demo)
    (first,) = json.loads(cli("watch", "run", "--once", "--json"))
    with WatchState(load_settings()) as state:  # as if killed right after queueing
        assert state.update("1", "v5", "logged", state=LOGGING, jobs=[])
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["state"] == "logged" and item["jobs"] == first["jobs"]
    assert len(log_jobs()) == 1


def test_a_version_claimed_by_a_watcher_that_died_before_launching_is_launched(
    demo: Path,
) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    new_version(demo)
    with WatchState(load_settings()) as state:  # what a watcher killed after the claim left
        assert state.claim("1", "v5", "my-model:v5")
        assert not state.claim("1", "v5", "my-model:v5")
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["state"] == "logged" and item["launches"] == 1


def test_an_alias_trigger_evaluates_the_version_the_alias_is_added_to(demo: Path) -> None:
    cli("watch", "add", "my-model", "--alias", "candidate", "--preset", "P")
    assert json.loads(cli("watch", "run", "--once", "--json")) == []  # v4 held it already
    cli("registry", "alias", "my-model:v2", "candidate")
    new_version(demo)  # a new version without the alias is not evaluated
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["checkpoint"] == "my-model:v2" and item["state"] == "logged"
    assert {i["version"] for i in history()} == {"v2"}


def test_a_paused_rule_claims_nothing_until_resumed(demo: Path) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    cli("watch", "pause", "1")
    new_version(demo)
    assert json.loads(cli("watch", "run", "--once", "--json")) == []
    assert json.loads(cli("watch", "ls", "--json"))[0]["paused"] is True
    cli("watch", "resume", "1")
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["version"] == "v5"


def test_a_gate_that_refuses_records_why_and_moves_nothing(
    demo: Path, demo_registry_dir: Path
) -> None:
    # v4 holds `candidate`; --backfill evaluates it although it was there before the rule.
    cli("watch", "add", "my-model", "--alias", "candidate", "--preset", "P",
        "--promote", "production", "--require", "ARC", "--backfill")  # fmt: skip
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["version"] == "v4" and item["state"] == "refused"
    assert item["verdict"] == "production: v3 → v4 refused: ARC shows no clear difference"
    registry = LocalRegistry(demo_registry_dir)
    assert registry.resolve("my-model:production").version == "v3"
    assert AUDIT_KEY not in registry.resolve("my-model:v4").metadata


def test_a_gate_that_passes_promotes_with_an_audit_record(
    demo: Path, demo_registry_dir: Path
) -> None:
    cli("watch", "add", "my-model", "--alias", "candidate", "--preset", "P",
        "--promote", "production", "--require", "ARC:BitsPerByte_bits", "--backfill")  # fmt: skip
    (item,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert item["state"] == "promoted", item
    assert "allowed" in item["verdict"]
    promoted = LocalRegistry(demo_registry_dir).resolve("my-model:production")
    assert promoted.version == "v4"
    (record,) = promotions(promoted)
    assert record["from"] == "my-model:v3" and record["to"] == "my-model:v4"
    assert record["required"][0]["requirement"] == "ARC:BitsPerByte_bits"
    # Killed after the move, before its record: the move is found, not made again.
    with WatchState(load_settings()) as state:
        assert state.update("1", "v4", "promoted", state=LOGGING)
    (again,) = json.loads(cli("watch", "run", "--once", "--json"))
    assert again["state"] == "promoted" and again["verdict"] == "my-model:v4 holds production"
    assert len(promotions(LocalRegistry(demo_registry_dir).resolve("my-model:v4"))) == 1


def test_watch_add_refuses_a_missing_preset_in_one_line(demo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "watch", "add", "my-model", "--preset", "nope"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("evalwb-tui: ") and done.stderr.count("\n") == 1
    assert json.loads(cli("watch", "ls", "--json")) == []


def test_the_determined_path_through_the_real_det_cli_and_the_master_emulator(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.determined_master import Master

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DET_USER", "determined")
    monkeypatch.setenv("DET_PASS", "emulated-password-1")
    with Master(max_seconds=300) as master:
        monkeypatch.setenv("DET_MASTER", master.url)
        cli("watch", "add", "my-model", "--preset", "P", "--determined")
        new_version(demo)
        (item,) = json.loads(cli("watch", "run", "--once", "--json"))
        again = json.loads(cli("watch", "run", "--once", "--json"))
        trials = subprocess.run(
            ["det", "experiment", "list-trials", "1", "--csv"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    assert "COMPLETED" in trials.splitlines()[1], trials
    assert item["state"] == "logged" and item["experiment"] == 1, item
    assert again == []
    assert ("POST", "/api/v1/experiments") in master.requests
    assert ("GET", "/api/v1/experiments/1") in master.requests
    (exp,) = master.experiments.values()
    assert exp["state"] == "STATE_COMPLETED"
    hp = exp["config"]["hyperparameters"]
    assert hp["llm_args"]["artifact_name"] == "my-model:v5"
    assert hp["output_dir"] == item["output_dir"]
    (run_dir,) = item["run_dirs"]
    assert run_dir.startswith(item["output_dir"]) and (Path(run_dir) / "metadata.json").is_file()
    (job,) = log_jobs()
    assert job.payload["checkpoint"] == "my-model:v5" and job.payload["results"] == run_dir


def test_run_save_preset_writes_the_f7_file_and_runs_nothing(demo: Path) -> None:
    from tui.services.evalrun import load_preset, preset_path

    settings = load_settings()
    config = load_preset("P", settings)  # saved by the fixture, the file F7 writes
    assert preset_path("P", settings).is_file()
    assert config.tasks == ["ARC"] and config.num_samples == 10 and config.command == PROGRAM
    assert config.checkpoint == "" and not (demo / "out").exists()


def test_watch_run_detach_polls_in_the_background_until_stopped(demo: Path) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    out = cli("watch", "run", "--detach", "--interval", "0.3")
    pid = int(out.split()[2])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tui.cli", "watch", "run", "--detach"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 2 and "a watcher already runs" in done.stderr
        new_version(demo)
        wait_for(lambda: state_of("v5") == "logged", "v5 logged by the detached watcher")
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: _zombie(pid), "the watcher gone")


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone meanwhile
    return stat[stat.rfind(")") + 2] == "Z"


@pytest.mark.parametrize("point", ["followed", "id-unrecorded"])
def test_a_watcher_killed_while_determined_runs_adopts_the_experiment(
    demo: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    from tests.determined_master import Master

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DET_USER", "determined")
    monkeypatch.setenv("DET_PASS", "emulated-password-1")
    monkeypatch.setenv("FAKE_EF_SECONDS", "3")  # the emulated trial takes a while
    with Master(max_seconds=300) as master:
        monkeypatch.setenv("DET_MASTER", master.url)
        cli("watch", "add", "my-model", "--preset", "P", "--determined")
        new_version(demo)
        proc = watcher("run", "--once")
        try:
            wait_for(lambda: _experiment_of("v5") is not None, "the experiment recorded")
        finally:
            proc.kill()
            proc.wait()
        if point == "id-unrecorded":  # as if killed after det answered, before the record
            with WatchState(load_settings()) as state:
                assert state.update("1", "v5", RUNNING, experiment=None)
        (item,) = json.loads(cli("watch", "run", "--once", "--json"))
        assert len(master.experiments) == 1  # found again, never submitted twice
    assert item["state"] == "logged" and item["experiment"] == 1 and item["launches"] == 1
    assert len(log_jobs()) == 1


def _experiment_of(version: str) -> int | None:
    with WatchState(load_settings()) as state:
        item = state.get("1", version)
    return item.experiment if item else None


class CountingRegistry:
    """The real local registry, with every call it answers counted by name."""

    def __init__(self, inner: LocalRegistry) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)


def test_a_poll_costs_one_listing_per_active_rule_and_no_other_request(
    demo: Path, demo_registry_dir: Path
) -> None:
    from tui.services.watch import Watcher, add_rule, set_paused

    settings = load_settings()
    registry = CountingRegistry(LocalRegistry(demo_registry_dir))
    add_rule(settings, registry.inner, "my-model", "P")
    add_rule(settings, registry.inner, "my-model", "P", alias="candidate")
    add_rule(settings, registry.inner, "mistral-7b-dpo", "P")
    set_paused(settings, "3", True)
    queue = open_queue(settings)
    try:
        watcher = Watcher(settings, lambda: registry, queue=queue)  # type: ignore[arg-type]
        with WatchState(settings) as state:
            for _ in range(3):
                assert watcher.poll(state, registry) == []  # type: ignore[arg-type]
                watcher.advance(state, registry)  # type: ignore[arg-type]
    finally:
        queue.close()
    assert registry.calls == ["list_versions"] * 6


def test_the_watcher_polls_a_wandb_registry_with_one_listing_per_poll(
    isolated_env: Path, demo_registry_dir: Path, request: pytest.FixtureRequest
) -> None:
    """The same rules on the W&B backend (the API emulator holding the demo registry):
    versions there when the rule is added are skipped; a new one is claimed by version."""
    from tui.services.evalrun import EvalRunConfig, save_preset
    from tui.services.watch import Watcher, add_rule

    service: Any = request.getfixturevalue("wandb_services")("saas")
    local = LocalRegistry(demo_registry_dir)
    backend = service.serve(local)
    settings = service.settings
    save_preset("P", EvalRunConfig(tasks=["ARC"]), settings)
    add_rule(settings, backend, "my-model", "P")
    watcher = Watcher(settings, lambda: backend, queue=None)  # type: ignore[arg-type]
    with WatchState(settings) as state:
        assert watcher.poll(state, backend) == []
        folder = isolated_env / "ck"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        local.add_version("my-model", folder)
        before = len(service.emulator.operations)
        (claimed,) = watcher.poll(state, backend)
        asked = service.emulator.operations[before:]
    assert claimed.version == "v5" and claimed.checkpoint == "my-model:v5"
    assert claimed.state == "seen"
    assert asked == ["ProjectArtifacts"]  # one GraphQL request: the collection's versions
    service.check()


def test_an_eval_that_fails_is_recorded_failed_with_its_error_and_not_rerun(demo: Path) -> None:
    cli("watch", "add", "my-model", "--preset", "P")
    new_version(demo)
    env = {**os.environ, "FAKE_EF_EXIT": "3"}
    (item,) = json.loads(cli("watch", "run", "--once", "--json", env=env))
    assert item["state"] == "failed" and item["launches"] == 1
    assert item["error"].startswith("eval exited with status 3: ")
    assert "\n" not in item["error"] and log_jobs() == []
    assert json.loads(cli("watch", "run", "--once", "--json")) == []
    assert "failed" in cli("watch", "history")

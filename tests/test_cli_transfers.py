"""`evalwb-tui transfers` lists jobs in the words the Transfers pane uses for bytes."""

from __future__ import annotations

import os
from pathlib import Path

from tui.cli import main
from tui.services.registry.local import LocalRegistry
from tui.services.settings import load_settings
from tui.services.transfers import DONE, Runner, open_queue
from tui.services.worker import default_handlers
from tui.widgets.format import human_size


def test_cache_hits_and_runs_waiting_for_sync_show_words_not_zero_bytes(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "cache"))
    settings = load_settings(dict(os.environ))
    queue = open_queue(settings)
    runner = Runner(queue, default_handlers(settings))
    payload = {"ref": "llama-3-8b-sft:v3", "registry": str(demo_registry_dir)}
    fetched = queue.enqueue("download", "fetched", payload)
    runner.run_once()
    hit = queue.enqueue("download", "hit", payload)
    runner.run_once()
    assert queue.get(hit.id).result["cache_hit"] and queue.get(fetched.id).state == DONE
    waiting = queue.enqueue("log", "waiting", {"results": "out"})
    claimed = queue.claim_next(kinds=["log"])
    assert claimed is not None and claimed.id == waiting.id
    queue.mark_pending_sync(waiting.id, {"pending_sync": True}, claim=claimed.claim_token)

    assert main(["transfers", "--all"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}

    assert " cached " in lines[str(hit.id)]
    assert " - " in lines[str(waiting.id)] and "pending" in lines[str(waiting.id)]
    done = queue.get(fetched.id)
    size = human_size(done.bytes_total)
    assert f" {size}/{size} " in lines[str(fetched.id)]  # figures where bytes moved
    assert all("0 B/0 B" not in line and "0 B/?" not in line for line in lines.values())


def test_json_lists_each_jobs_files_with_their_progress(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch, capsys
):
    import json
    import threading

    from tui.services.registry.local import LocalRegistry
    from tui.services.transfers import FileProgress

    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "cache"))
    settings = load_settings(dict(os.environ))
    queue = open_queue(settings)
    payload = {"ref": "llama-3-8b-sft:v3", "registry": str(demo_registry_dir)}
    fetched = queue.enqueue("download", "fetched", payload)
    Runner(queue, default_handlers(settings)).run_once()
    stored = LocalRegistry(demo_registry_dir).files("llama-3-8b-sft:v3")

    assert main(["transfers", "--all", "--json"]) == 0
    [job] = json.loads(capsys.readouterr().out)
    assert job["id"] == fetched.id and job["state"] == DONE
    assert sorted((f["path"], f["bytes_done"], f["size"], f["state"]) for f in job["files"]) == (
        sorted((f.path, f.size, f.size, "done") for f in stored)
    )

    # Following the queue: every line carries the running job's files as they move.
    running = queue.enqueue("upload", "results", {})
    claim = queue.claim_next(kinds=["upload"]).claim_token
    part = FileProgress("results.json", bytes_done=10, size=40, state="running")
    queue.report(running.id, bytes_done=10, bytes_total=40, file=part, claim=claim)
    timer = threading.Timer(0.5, queue.finish, (running.id, {}), {"claim": claim})
    timer.start()
    try:
        assert main(["transfers", "--watch", "--json"]) == 0
    finally:
        timer.cancel()
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert frames[0][0]["files"] == [
        {"path": "results.json", "bytes_done": 10, "size": 40, "state": "running"}
    ]
    assert frames[-1][0]["state"] == DONE and frames[-1][0]["files"]


def test_all_lists_the_error_of_a_failed_job(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "cache"))
    settings = load_settings(dict(os.environ))
    queue = open_queue(settings)
    payload = {"ref": "my-model:gone", "registry": str(demo_registry_dir)}
    failed = queue.enqueue("download", "my-model:gone", payload, max_attempts=1)
    Runner(queue, default_handlers(settings)).run_once()
    assert queue.get(failed.id).state == "failed"

    assert main(["transfers", "--all"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.split()[0] == str(failed.id))
    assert line.endswith(
        "my-model:gone  (error: my-model has no alias 'gone'; its aliases are "
        + ", ".join(sorted(LocalRegistry(demo_registry_dir).get_collection("my-model").aliases))
        + ")"
    )


def test_a_download_hashing_its_last_file_says_verifying(isolated_env: Path, capsys):
    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "my-model:v3", {"ref": "my-model:v3"})
    assert queue.claim_next(os.getpid()) is not None
    queue.report(job.id, bytes_done=4 << 20, bytes_total=4 << 20, files_done=2, files_total=3)

    assert main(["transfers"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:4] == [str(job.id), "download", "verifying", "100%"]


def test_a_download_reading_back_a_kept_file_says_verifying(isolated_env: Path, capsys):
    """No byte moves while a continued file's kept bytes are read back and hashed: the
    job says so instead of sitting at `running 98%`."""
    queue = open_queue(load_settings(dict(os.environ)))
    job = queue.enqueue("download", "my-model:v3", {"ref": "my-model:v3"})
    assert queue.claim_next(os.getpid()) is not None
    note = "verifying: reading the 3932160 bytes of model.safetensors kept"
    queue.report(job.id, bytes_done=98, bytes_total=100, files_done=2, files_total=3, note=note)
    queue.report(job.id, bytes_done=98, bytes_total=100)  # the note stays until replaced

    assert main(["transfers"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:4] == [str(job.id), "download", "verifying", "98%"]
    assert line.endswith(f"({note})")


def test_a_job_queued_for_another_backend_names_its_place(isolated_env: Path, capsys):
    wandb = {
        **os.environ,
        "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_ENTITY": "team",
    }
    remote = open_queue(load_settings(wandb)).enqueue("download", "my-model:v3", {"ref": "x"})
    here = open_queue(load_settings(dict(os.environ))).enqueue("download", "m:v1", {"ref": "y"})
    assert remote.payload["place"] == "W&B team@127.0.0.1:9" and here.payload["place"] == "local"

    assert main(["transfers"]) == 0  # no key here: the local place
    lines = {x.split()[0]: x for x in capsys.readouterr().out.splitlines()[1:]}
    assert lines[str(remote.id)].endswith(" [W&B team] my-model:v3")
    assert lines[str(here.id)].endswith(" m:v1")

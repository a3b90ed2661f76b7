"""The download cache against the real local registry: stored files and file:// refs.

S3 references have their own file (test_s3.py); this one covers layout, hits that read
no byte, repair, resumption after SIGKILL, two processes at once, path traversal,
checkpoint roots, `-local` twins and the offline fallback.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.wandb_emulator import WandbService
from tui.services import cache
from tui.services.cache import (
    CheckpointError,
    DownloadCancelled,
    DownloadError,
    UnsafePathError,
    download,
)
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def make_checkpoint(folder: Path, shards: int = 3, shard_bytes: int = 300_000) -> Path:
    """A small HF-style checkpoint: config.json, tokenizer, shards of random bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    for i in range(shards):
        (folder / f"model-{i:05d}.safetensors").write_bytes(os.urandom(shard_bytes))
    return folder


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "EVALWB_REGISTRY_DIR": str(tmp_path / "registry"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "cache"),
    }
    env.update(extra)
    return env


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    paths = Paths(*(tmp_path / "dirs" / n for n in ("data", "cache", "state", "config")))
    return load_settings(env_for(tmp_path, **extra), paths=paths)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
def registry(settings: Settings) -> LocalRegistry:
    return LocalRegistry(settings.registry_dir)


def digests_match(folder: Path, registry: LocalRegistry, ref: str) -> bool:
    return all(cache.md5_b64_of(folder / e.path) == e.digest for e in registry.files(ref))


def test_download_stored_files_lands_verified_in_readable_layout(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src" / "model")
    registry.add_version("llama-mini", tmp_path / "src", aliases=["production"])
    events: list[cache.DownloadProgress] = []

    result = download(
        "llama-mini:production", registry=registry, settings=settings, progress=events.append
    )

    folder = tmp_path / "cache" / "local" / "local" / "llama-mini" / "v0"
    assert result.folder == folder
    assert result.path == folder / "model"
    assert (result.path / "config.json").is_file()
    assert not result.cache_hit
    assert result.bytes == registry.resolve("llama-mini:v0").size
    assert result.files == 5
    assert digests_match(folder, registry, "llama-mini:v0")
    assert cache.read_marker(folder)["version"] == "v0"
    assert not (tmp_path / "cache" / ".partial" / "local" / "local" / "llama-mini" / "v0").exists()
    assert events[-1].phase == "done"
    assert events[-1].done == result.bytes and events[-1].files_done == 5
    shard = [e for e in events if e.path == "model/model-00000.safetensors"]
    assert shard[-1].file_done == shard[-1].file_size == 300_000
    assert {e.path for e in events if e.phase == "downloading" and e.path} >= {
        "model/config.json",
        "model/model-00000.safetensors",
    }


def test_hit_reads_no_byte_and_verify_rehashes(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src")
    first = download("m", registry=registry, settings=settings)
    shard = first.folder / "model-00001.safetensors"
    # Same size and mtime, different bytes: only a re-hash can tell.
    st = shard.stat()
    shard.write_bytes(b"\0" * st.st_size)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))

    hit = download("m", registry=registry, settings=settings)
    assert hit.cache_hit and hit.bytes == 0 and hit.path == first.path
    assert shard.read_bytes() == b"\0" * st.st_size  # not re-read, not refetched

    repaired = download("m", registry=registry, settings=settings, verify=True)
    assert not repaired.cache_hit
    assert repaired.bytes == st.st_size  # only the damaged file came again
    assert digests_match(repaired.folder, registry, "m:v0")
    again = download("m", registry=registry, settings=settings, verify=True)
    assert again.cache_hit and again.bytes == 0


def test_changed_size_is_no_hit_and_only_that_file_is_fetched(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src")
    first = download("m", registry=registry, settings=settings)
    (first.folder / "tokenizer.json").write_text("{}")

    second = download("m", registry=registry, settings=settings)

    assert not second.cache_hit
    assert second.bytes == len(json.dumps({"version": "1.0"}))
    assert digests_match(second.folder, registry, "m:v0")


def test_file_refs_are_copied_and_a_changed_source_is_refused(tmp_path, settings, registry):
    source = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m", f"file://{source}")
    result = download("m", registry=registry, settings=settings)
    assert result.path == result.folder and digests_match(result.folder, registry, "m:v0")

    (source / "tokenizer.json").write_text("{}")  # other files: a new version
    registry.add_version("m", f"file://{source}")  # v1, then its source changes
    (source / "model-00002.safetensors").write_bytes(os.urandom(300_000))
    with pytest.raises(DownloadError, match=r"model-00002.safetensors has md5 .* changed"):
        download("m:v1", registry=registry, settings=settings)
    assert not (tmp_path / "cache" / "local" / "local" / "m" / "v1").exists()


@pytest.mark.parametrize(
    "bad",
    [
        "../../escaped.bin",
        "/etc/evil",
        "a/../../b",
        ".evalwb-complete.json",
        # Each names a file another way than the folder listing does: `.` failed with
        # "tuple index out of range", `a/./b` was fetched, deleted as a stray, then missed.
        ".",
        "./",
        "a/./b",
        "a//b",
        "a/",
        "",
    ],
)
def test_unsafe_manifest_paths_are_refused(tmp_path, settings, registry, bad):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src")
    # A manifest as a hostile server could send it: rewrite one path in the real index.
    with sqlite3.connect(registry.index_path) as conn:
        conn.execute("UPDATE files SET path = ? WHERE path = 'tokenizer.json'", (bad,))

    with pytest.raises(UnsafePathError, match="refusing to download") as info:
        download("m", registry=registry, settings=settings)
    assert repr(bad)[1:-1] in str(info.value)
    assert not (tmp_path / "escaped.bin").exists()
    assert not (tmp_path / "cache" / "local" / "local" / "m").exists()


def test_checkpoint_root_must_be_a_single_config_json(tmp_path, settings, registry):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "weights.bin").write_bytes(b"x")
    registry.add_version("none", tmp_path / "none")
    with pytest.raises(CheckpointError, match=r"holds no config\.json"):
        download("none", registry=registry, settings=settings)
    plain = download("none", registry=registry, settings=settings, checkpoint=False)
    assert plain.path == plain.folder and plain.cache_hit  # the bytes were kept

    make_checkpoint(tmp_path / "two" / "a", shards=1)
    make_checkpoint(tmp_path / "two" / "b", shards=1)
    registry.add_version("two", tmp_path / "two")
    with pytest.raises(CheckpointError, match=r"2 config.json files \(a/config.json, b/config"):
        download("two", registry=registry, settings=settings)


def test_cancel_keeps_verified_files_for_the_next_run(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src", shards=4)
    registry.add_version("m", tmp_path / "src")
    cancel = threading.Event()

    def stop_after_two(event: cache.DownloadProgress) -> None:
        if event.files_done >= 2:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        download("m", registry=registry, settings=settings, progress=stop_after_two, cancel=cancel)
    assert not (tmp_path / "cache" / "local" / "local" / "m" / "v0").exists()

    result = download("m", registry=registry, settings=settings)
    total = registry.resolve("m").size
    assert 0 < result.bytes < total
    assert digests_match(result.folder, registry, "m:v0")


def run_download_process(tmp_path: Path, ref: str, sleep: float) -> subprocess.Popen[str]:
    """`download` in a real subprocess, slowed by sleeping in its progress callback."""
    code = f"""
import json, sys, time
from tui.services.cache import download
from tui.services.registry import open_registry
from tui.services.settings import load_settings
settings = load_settings()
phases = []
def slow(event):
    phases.append(event.phase)
    if event.phase == "downloading":
        print("files_done", event.files_done, flush=True)
        time.sleep({sleep})
result = download({ref!r}, registry=open_registry(settings), settings=settings, progress=slow)
print("RESULT", json.dumps({{**result.as_json(), "phases": phases}}), flush=True)
"""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env_for(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_midway_leaves_nothing_complete_and_rerun_finishes(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src", shards=6)
    registry.add_version("m", tmp_path / "src")
    proc = run_download_process(tmp_path, "m:latest", sleep=0.2)
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("files_done") and int(line.split()[1]) >= 3:
            break
        assert time.monotonic() < deadline, "the download never got going"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    folder = tmp_path / "cache" / "local" / "local" / "m" / "v0"
    assert not folder.exists()
    assert not list((tmp_path / "cache").rglob(cache.MARKER))

    result = download("m", registry=registry, settings=settings)
    assert 0 < result.bytes < registry.resolve("m").size  # verified files were kept
    assert digests_match(result.folder, registry, "m:v0")


def test_two_processes_one_downloads_the_other_waits(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src", shards=4)
    registry.add_version("m", tmp_path / "src")
    procs = [run_download_process(tmp_path, "m:latest", sleep=0.25) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))

    by_hit = sorted(results, key=lambda r: r["cache_hit"])
    assert [r["cache_hit"] for r in by_hit] == [False, True]
    assert by_hit[0]["bytes"] == registry.resolve("m").size and by_hit[1]["bytes"] == 0
    assert by_hit[0]["path"] == by_hit[1]["path"]
    assert "locked" in by_hit[1]["phases"]  # it waited on the lock, not on luck
    assert digests_match(Path(by_hit[0]["folder"]), registry, "m:v0")


def test_local_twin_with_the_same_files_is_used_in_place(tmp_path, settings, registry):
    shared = make_checkpoint(tmp_path / "shared" / "run-7" / "checkpoint")
    registry.add_version("m-local", f"file://{shared.parent}", aliases=["production"])
    registry.add_version("m", shared.parent, aliases=["production"])

    result = download("m:production", registry=registry, settings=settings)

    assert result.local_twin and result.cache_hit and result.bytes == 0
    assert result.path == shared
    # The version asked for, served by its twin's files: no word needed.
    assert result.version.collection == "m" and result.twin == "m-local:v0"
    assert result.twin_note is None
    assert not (tmp_path / "cache" / "local").exists()  # nothing copied


def test_a_twin_whose_alias_names_other_files_is_not_used(tmp_path, settings, registry):
    old = make_checkpoint(tmp_path / "shared" / "old")
    new = make_checkpoint(tmp_path / "shared" / "new")
    for folder in (old, new):
        registry.add_version("m", folder)
        registry.add_version("m-local", f"file://{folder}")
    # `production` moves back to v0 on the named collection only; the twin's stays on v1.
    registry.set_alias("m:v1", "production")
    registry.set_alias("m-local:v1", "production")
    registry.set_alias("m:v0", "production")

    result = download("m:production", registry=registry, settings=settings)

    assert result.version.collection == "m" and result.version.version == "v0"
    assert not result.local_twin and result.twin is None
    assert digests_match(result.folder, registry, "m:v0")
    assert result.twin_note == (
        "m-local:production is v1, whose files differ from m:production (v0); used m:v0"
    )
    assert result.as_json()["twin_note"] == result.twin_note
    assert result.as_json()["ref"] == "local/m:v0"


def test_a_twin_stands_in_for_a_version_not_published_yet(tmp_path, settings, registry):
    shared = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m-local", f"file://{shared}", aliases=["production"])

    result = download("m:production", registry=registry, settings=settings)

    assert result.local_twin and result.path == shared
    assert result.version.collection == "m-local"
    assert result.twin_note == "m:production does not exist; used its twin m-local:v0"


def test_no_twin_means_the_real_artifact(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src", aliases=["production"])
    result = download("m:production", registry=registry, settings=settings)
    assert not result.local_twin and result.version.collection == "m"


def test_twin_with_missing_files_waits_for_the_real_artifact(tmp_path, registry):
    settings = settings_for(tmp_path, WANDB_ARTIFACT_WAIT_TIMEOUT_SEC="20")
    shared = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m-local", f"file://{shared}", aliases=["production"])
    (shared / "model-00001.safetensors").unlink()
    make_checkpoint(tmp_path / "src")
    events: list[cache.DownloadProgress] = []

    def publish_later() -> None:
        time.sleep(0.4)
        registry.add_version("m", tmp_path / "src", aliases=["production"])

    writer = threading.Thread(target=publish_later)
    writer.start()
    try:
        result = download(
            "m:production",
            registry=registry,
            settings=settings,
            progress=events.append,
            poll_interval=0.05,
        )
    finally:
        writer.join()

    assert result.version.collection == "m" and not result.local_twin
    waits = [e for e in events if e.phase == "waiting"]
    assert len(waits) >= 3
    assert "model-00001.safetensors" in waits[0].message and "s left" in waits[0].message
    assert waits[0].seconds_left > waits[-1].seconds_left


def test_twin_with_missing_files_times_out_with_a_clear_error(tmp_path, registry):
    settings = settings_for(tmp_path, WANDB_ARTIFACT_WAIT_TIMEOUT_SEC="0.3")
    shared = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m-local", f"file://{shared}")
    (shared / "config.json").unlink()
    started = time.monotonic()
    with pytest.raises(
        DownloadError,
        match=r"m:latest did not appear within 0.3 s "
        r"\(WANDB_ARTIFACT_WAIT_TIMEOUT_SEC\).*config.json",
    ):
        download("m", registry=registry, settings=settings, poll_interval=0.05)
    assert time.monotonic() - started < 3


def test_offline_fallback_returns_the_cached_version_with_a_warning(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src", aliases=["production"])
    first = download("m:production", registry=registry, settings=settings)
    # The registry becomes unreadable: its index is no database any more.
    registry.index_path.write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(registry.index_path) + suffix).unlink(missing_ok=True)

    result = download("m:production", registry=registry, settings=settings)
    assert result.cache_hit and result.path == first.path and result.bytes == 0
    assert result.offline_warning.startswith("offline, alias last resolved at 20")
    assert result.version.version == "v0"

    with pytest.raises(DownloadError, match="never downloaded here"):
        download("m:other", registry=registry, settings=settings)


def test_cli_download_prints_the_folder_and_json(tmp_path, registry):
    make_checkpoint(tmp_path / "src" / "hf")
    registry.add_version("m", tmp_path / "src", aliases=["production"])
    env = {**env_for(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tui.cli", "download", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    plain = cli("m:production")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == str(tmp_path / "cache/local/local/m/v0/hf")
    as_json = json.loads(cli("m:production", "--json", "--verify").stdout)
    assert as_json["cache_hit"] is True and as_json["bytes"] == 0
    assert as_json["version"] == "v0" and as_json["files"] == 5
    other_root = json.loads(cli("m:production", "--json", "--root", str(tmp_path / "r2")).stdout)
    assert other_root["path"].startswith(str(tmp_path / "r2")) and not other_root["cache_hit"]
    missing = cli("m:nope")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "no alias 'nope'" in missing.stderr


def test_cli_download_says_in_one_line_which_of_two_disagreeing_versions_it_used(
    tmp_path, registry
):
    for name in ("old", "new"):
        folder = make_checkpoint(tmp_path / "shared" / name)
        registry.add_version("m", folder, aliases=["production"])
        registry.add_version("m-local", f"file://{folder}", aliases=["production"])
    registry.set_alias("m:v0", "production")
    env = {**env_for(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tui.cli", "download", "m:production", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    plain = cli()
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == str(tmp_path / "cache/local/local/m/v0")
    note = "m-local:production is v1, whose files differ from m:production (v0); used m:v0"
    assert plain.stderr.strip().splitlines()[-1] == f"evalwb-tui: {note}"
    as_json = json.loads(cli("--json").stdout)
    assert as_json["ref"] == "local/m:v0" and as_json["twin_note"] == note


def test_asking_for_the_twin_itself_uses_it_in_place_or_names_the_missing_file(
    tmp_path, settings, registry
):
    shared = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m-local", f"file://{shared}")
    result = download("m-local", registry=registry, settings=settings)
    assert result.local_twin and result.path == shared

    (shared / "tokenizer.json").unlink()
    with pytest.raises(DownloadError, match=r"tokenizer.json refers to .*, which is missing"):
        download("m-local", registry=registry, settings=settings)


def test_journal_reset_voids_earlier_parts_and_cut_lines_are_skipped(tmp_path):
    from tui.services.registry.protocol import FileEntry

    entry = FileEntry(path="w.bin", size=10, digest="etag1", ref="s3://b/w.bin")
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    lines = [
        {"part": "w.bin", "start": 0, "end": 5, "etag": "etag1"},
        {"part": "w.bin", "start": 5, "end": 10, "etag": "other"},
    ]
    journal = tmp_path / cache.JOURNAL
    journal.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"part": "w.b')
    assert cache._Journal.read(tmp_path).present(tmp_path, entry) == {(0, 5)}
    with journal.open("a") as fh:
        fh.write("\n" + json.dumps({"reset": "w.bin"}) + "\n")
    assert cache._Journal.read(tmp_path).present(tmp_path, entry) == frozenset()


def test_waiting_for_the_real_artifact_can_be_cancelled(tmp_path, registry):
    settings = settings_for(tmp_path, WANDB_ARTIFACT_WAIT_TIMEOUT_SEC="60")
    shared = make_checkpoint(tmp_path / "shared" / "ckpt")
    registry.add_version("m-local", f"file://{shared}")
    (shared / "config.json").unlink()
    cancel = threading.Event()
    events: list[cache.DownloadProgress] = []
    timer = threading.Timer(0.3, cancel.set)  # mid-sleep, long after the first poll
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(DownloadCancelled):
            download(
                "m",
                registry=registry,
                settings=settings,
                progress=events.append,
                cancel=cancel,
                poll_interval=30,
            )
    finally:
        timer.cancel()
    assert [e.phase for e in events].count("waiting") == 1
    assert time.monotonic() - started < 5  # not the 30 s poll interval


def test_a_version_larger_than_the_free_space_is_refused_up_front(tmp_path, settings, registry):
    make_checkpoint(tmp_path / "src")
    registry.add_version("m", tmp_path / "src")
    with sqlite3.connect(registry.index_path) as conn:  # a manifest claiming 1 EiB
        conn.execute("UPDATE files SET size = ? WHERE path = 'tokenizer.json'", (2**60,))
    with pytest.raises(DownloadError, match=r"needs \d+\.\d GiB more .* WANDB_ARTIFACT_DIR"):
        download("m", registry=registry, settings=settings)
    partial = tmp_path / "cache" / ".partial" / "local" / "local" / "m" / "v0"
    assert [p.name for p in partial.iterdir()] == []  # nothing fetched


def test_wandb_stored_files_stream_from_their_download_urls(tmp_path, registry, wandb_service):
    service: WandbService = wandb_service
    make_checkpoint(tmp_path / "src" / "hf")
    registry.add_version("wb-model", tmp_path / "src", aliases=["production"])
    wandb = service.serve(registry)
    start = len(service.emulator.requests)
    events: list[cache.DownloadProgress] = []

    result = download(
        "wb-model:production",
        registry=wandb,
        settings=service.settings,
        root=tmp_path / "cache",
        progress=events.append,
    )

    entries = registry.files("wb-model:v0")
    assert result.path.name == "hf" and result.version.entity  # the org entity's registry
    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in entries)
    assert result.bytes == sum(e.size for e in entries)
    fetched = [op for op, _ in service.emulator.requests[start:] if op == "GET /files"]
    assert len(fetched) == len(entries)
    # Some URLs lead through a redirect from the W&B host (which takes the key), the
    # others straight to storage; storage never sees the key, nor any Authorization.
    ops = [op for op, _ in service.emulator.requests[start:]]
    assert 0 < ops.count("GET /files redirect") < len(entries)
    key = service.settings.wandb_api_key.reveal()
    token = base64.b64encode(f"api:{key}".encode()).decode()
    for path, headers in service.emulator.storage.requests:
        assert "authorization" not in {name.lower() for name in headers}, path
        assert not any(key in v or token in v for v in (path, *headers.values()))
    assert any(e.phase == "downloading" and e.file_done == e.file_size > 0 for e in events)
    again = download(
        "wb-model:production",
        registry=wandb,
        settings=service.settings,
        root=tmp_path / "cache",
    )
    assert again.cache_hit and again.bytes == 0
    service.check()


def test_a_download_whose_urls_expire_midway_completes_verified(tmp_path, registry, wandb_service):
    """URLs live 2 s and storage sends 200 kB/s: files started later than 2 s after
    the URLs were listed meet 400 ExpiredToken, and are asked for again with fresh ones."""
    service: WandbService = wandb_service
    make_checkpoint(tmp_path / "src", shards=3, shard_bytes=300_000)
    registry.add_version("wb-expiring", tmp_path / "src")
    backend = service.serve(registry)
    storage = service.emulator.storage
    start = len(storage.requests)
    storage.ttl, storage.bytes_per_sec = 2.0, 200_000
    try:
        result = download(
            "wb-expiring", registry=backend, settings=service.settings, root=tmp_path / "cache"
        )
    finally:
        storage.ttl, storage.bytes_per_sec = 3600.0, None
    entries = registry.files("wb-expiring:v0")
    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in entries)
    assert result.bytes == sum(e.size for e in entries)
    assert storage.expired_count(start) >= 1
    service.check()


def test_the_same_name_in_two_wandb_registries_downloads_to_two_folders(
    tmp_path, registry, wandb_service
):
    """`my-model` of the model registry and of `checkpoints` are two collections: each
    download lands in a folder of its own registry, with its own files."""
    service: WandbService = wandb_service
    make_checkpoint(tmp_path / "model-src", shards=1, shard_bytes=1000)
    registry.add_version("my-model", tmp_path / "model-src")
    checkpoints = LocalRegistry(tmp_path / "checkpoints-registry")
    (tmp_path / "step-500").mkdir()
    (tmp_path / "step-500" / "optimizer.pt").write_bytes(os.urandom(2000))
    (tmp_path / "step-500" / "config.json").write_text(json.dumps({"model_type": "step-500"}))
    checkpoints.add_version("my-model", tmp_path / "step-500")
    backend = service.serve(registry, checkpoints)

    model = download(
        "my-model:v0", registry=backend, settings=service.settings, root=tmp_path / "cache"
    )
    step = download(
        "wandb-registry-checkpoints/my-model:v0",
        registry=backend,
        settings=service.settings,
        root=tmp_path / "cache",
    )

    assert model.version.project == "wandb-registry-model"
    assert step.version.project == "wandb-registry-checkpoints"
    assert model.folder != step.folder
    assert "wandb-registry-checkpoints" in step.folder.relative_to(tmp_path / "cache").parts
    assert digests_match(model.folder, registry, "my-model:v0")
    assert digests_match(step.folder, checkpoints, "my-model:v0")
    assert sorted(p.name for p in step.folder.glob("[!.]*")) == ["config.json", "optimizer.pt"]
    assert (step.folder / "config.json").read_text() != (model.folder / "config.json").read_text()
    assert "optimizer.pt" not in {p.name for p in model.folder.iterdir()}
    service.check()


def test_the_wandb_key_goes_only_to_the_wandb_server(tmp_path):
    settings = settings_for(
        tmp_path, WANDB_API_KEY="k" * 40, WANDB_BASE_URL="http://127.0.0.1:8080"
    )
    own = cache._auth_headers(settings, "http://127.0.0.1:8080/files/m/v0/config.json")
    assert own["Authorization"].startswith("Basic ")
    for elsewhere in (
        "http://127.0.0.1:9000/bucket/x?X-Amz-Signature=1",
        "https://127.0.0.1:8080/x",
    ):
        assert cache._auth_headers(settings, elsewhere) == {}


class FileUrlsThroughProxy:
    """The real W&B backend, with its file URLs routed through a faulty proxy."""

    def __init__(self, backend: object, emulator_url: str, proxy_url: str) -> None:
        self.backend, self.emulator_url, self.proxy_url = backend, emulator_url, proxy_url

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    def file_urls(self, ref: object) -> dict[str, str]:
        urls = self.backend.file_urls(ref)
        return {p: u.replace(self.emulator_url, self.proxy_url) for p, u in urls.items()}


def test_wandb_file_downloads_survive_throttling_and_a_cut_connection(
    tmp_path, registry, wandb_service
):
    from tests.faulty_proxy import FaultyProxy

    service: WandbService = wandb_service
    make_checkpoint(tmp_path / "src", shards=1, shard_bytes=400_000)
    registry.add_version("wb-flaky", tmp_path / "src")
    backend = service.serve(registry)
    base = service.emulator.storage.base_url  # these files' URLs lead straight to storage
    host, port = base.rsplit("/", 1)[1].split(":")
    # urllib opens one connection per file: the first is throttled, the next cut short
    # (after the headers, inside the body).
    with FaultyProxy((host, int(port)), after_bytes=170, cuts=1, slow_downs=1) as proxy:
        flaky = FileUrlsThroughProxy(backend, base, proxy.url)
        result = download(
            "wb-flaky", registry=flaky, settings=service.settings, root=tmp_path / "cache"
        )
    assert proxy.slow_down_count == 1 and proxy.cut_count == 1
    entries = registry.files("wb-flaky:v0")
    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in entries)
    assert result.bytes == sum(e.size for e in entries)
    service.check()


def test_wandb_cache_is_used_only_when_wandb_cache_skip_is_false(
    tmp_path, registry, wandb_service, monkeypatch
):
    import dataclasses

    service: WandbService = wandb_service
    make_checkpoint(tmp_path / "src" / "hf", shards=2, shard_bytes=50_000)
    registry.add_version("wb-cached", tmp_path / "src")
    wandb = service.serve(registry)
    wandb_cache = tmp_path / "wandb-cache"
    monkeypatch.setenv("WANDB_CACHE_DIR", str(wandb_cache))

    def fetched(since: int) -> int:
        return sum(1 for op, _ in service.emulator.requests[since:] if op == "GET /files")

    def stored_in_wandb_cache() -> list[Path]:
        return [p for p in (wandb_cache / "artifacts" / "obj").rglob("*") if p.is_file()]

    download("wb-cached", registry=wandb, settings=service.settings, root=tmp_path / "a")
    assert not (wandb_cache / "artifacts" / "obj").exists()  # skipped by default

    use_cache = dataclasses.replace(service.settings, wandb_cache_skip=False)
    entries = registry.files("wb-cached:v0")
    start = len(service.emulator.requests)
    download("wb-cached", registry=wandb, settings=use_cache, root=tmp_path / "b")
    assert fetched(start) == len(entries)
    assert len(stored_in_wandb_cache()) == len(entries)

    start = len(service.emulator.requests)
    again = download("wb-cached", registry=wandb, settings=use_cache, root=tmp_path / "c")
    assert fetched(start) == 0  # every byte came from W&B's cache
    assert not again.cache_hit
    assert all(cache.md5_b64_of(again.folder / e.path) == e.digest for e in entries)
    service.check()


@pytest.mark.parametrize("where", ["option", "variable"])
@pytest.mark.parametrize("bad", ["missing-parent", "file"])
def test_an_unusable_cache_root_is_one_line_naming_its_option(
    tmp_path, registry, monkeypatch, capsys, where, bad
):
    from tui.cli import main

    make_checkpoint(tmp_path / "src" / "hf", shards=1, shard_bytes=10)
    registry.add_version("m", tmp_path / "src")
    for name, value in env_for(tmp_path).items():
        monkeypatch.setenv(name, value)
    target = Path("/proc/evalwb-no-such/cache")  # nothing can be created under /proc
    if bad == "file":
        target = tmp_path / "a-file"
        target.write_text("x")
    args = ["download", "m"]
    if where == "option":
        args += ["--root", str(target)]
    else:
        monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(target))

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    name = "--root" if where == "option" else "WANDB_ARTIFACT_DIR"
    reason = "it is a file, not a folder" if bad == "file" else "No such file or directory"
    assert err == f"evalwb-tui: {name} {target}: cannot create the cache folder ({reason})"


def test_file_data_is_on_disk_before_the_marker_and_the_rename(
    tmp_path, settings, registry, monkeypatch
):
    """A hit trusts size and mtime alone: after a power loss the marker must not stand
    over data that never reached the disk. Each fsync is recorded by the path its
    descriptor names, with each rename, in order."""
    make_checkpoint(tmp_path / "src" / "model")
    registry.add_version("llama-mini", tmp_path / "src")
    events: list[tuple[str, ...]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst, *args, **kwargs) -> None:
        events.append(("rename", str(src), str(dst)))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    result = download("llama-mini:latest", registry=registry, settings=settings)

    root = (tmp_path / "cache").resolve()
    partial = root / ".partial" / "local" / "local" / "llama-mini" / "v0"
    final = root / "local" / "local" / "llama-mini" / "v0"
    assert result.folder.resolve() == final
    marker_at = next(
        i for i, e in enumerate(events) if e[0] == "fsync" and cache.MARKER in Path(e[1]).name
    )
    rename_at = events.index(("rename", str(partial), str(final)))
    before_marker = events[:marker_at]
    for entry in registry.files("llama-mini:v0"):
        assert ("fsync", str(partial / entry.path)) in before_marker, entry.path
    assert ("fsync", str(partial / "model")) in before_marker  # the names of the files
    assert ("fsync", str(partial)) in events[marker_at:rename_at]  # the marker's name
    assert ("fsync", str(final.parent)) in events[rename_at:]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (".", "is not in normal form"),
        # The SDK writes these as hf/config.json, the name of another entry.
        ("hf/./config.json", "appears twice"),
        ("hf//config.json", "appears twice"),
    ],
)
def test_a_wandb_manifest_path_out_of_normal_form_is_refused_before_any_fetch(
    tmp_path, registry, request, bad, why
):
    """W&B's manifests enter the cache too: such a path failed with 'tuple index out of
    range', or two entries landed on one file and the download failed midway."""
    service: WandbService = request.getfixturevalue("wandb_services")("saas")
    make_checkpoint(tmp_path / "src" / "hf")
    registry.add_version("wb-model", tmp_path / "src", aliases=["production"])
    # The manifest as a damaged or hostile server could send it.
    with sqlite3.connect(registry.index_path) as conn:
        conn.execute("UPDATE files SET path = ? WHERE path = 'hf/tokenizer.json'", (bad,))
    wandb = service.serve(registry)
    start = len(service.emulator.requests)
    with pytest.raises(UnsafePathError) as info:
        download("wb-model:production", registry=wandb, settings=service.settings, root=tmp_path)
    assert str(info.value).startswith("refusing to download wb-model:production: its manifest")
    assert why in str(info.value) and "\n" not in str(info.value)
    assert [op for op, _ in service.emulator.requests[start:] if op == "GET /files"] == []
    assert not (tmp_path / "local").exists() and not list(tmp_path.glob("*/*/wb-model"))

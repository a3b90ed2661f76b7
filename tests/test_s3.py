"""S3 references against moto's real server on 127.0.0.1, directly and through a faulty proxy."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.faulty_proxy import FaultyProxy
from tui.services import cache, s3
from tui.services.cache import DownloadError, download
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
KEY_ID = "test-key-id"
SECRET = "s3cr3t-never-shown-0123456789"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 also reads the process environment and ~/.aws: keep both out of the tests.
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def env_for(tmp_path: Path, endpoint: str | None, **extra: str) -> dict[str, str]:
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "EVALWB_REGISTRY_DIR": str(tmp_path / "registry"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "cache"),
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def settings_for(tmp_path: Path, endpoint: str | None, **extra: str) -> Settings:
    paths = Paths(*(tmp_path / "dirs" / n for n in ("data", "cache", "state", "config")))
    return load_settings(env_for(tmp_path, endpoint, **extra), paths=paths)


def put_checkpoint(moto_url: str, sizes: dict[str, int]) -> tuple[str, dict[str, bytes]]:
    """A fresh bucket holding `ckpt/<name>` objects of random bytes; (prefix URI, bytes)."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    data = {"config.json": json.dumps({"model_type": "llama"}).encode()}
    data.update({name: os.urandom(size) for name, size in sizes.items()})
    for name, body in data.items():
        client.put_object(Bucket=bucket, Key=f"ckpt/{name}", Body=body)
    return f"s3://{bucket}/ckpt", data


def same_bytes(folder: Path, data: dict[str, bytes]) -> bool:
    return all((folder / name).read_bytes() == body for name, body in data.items())


@pytest.fixture
def settings(tmp_path: Path, moto_url: str) -> Settings:
    return settings_for(tmp_path, moto_url)


@pytest.fixture
def registry(settings: Settings) -> LocalRegistry:
    return LocalRegistry(settings.registry_dir)


def test_s3_references_download_in_ranged_parts_and_hit_after(settings, registry, moto_url):
    # 20 MiB spans two parts; the rest are single parts.
    uri, data = put_checkpoint(moto_url, {"a.safetensors": 20 * MiB, "b.safetensors": 3 * MiB})
    registry.add_version("m", uri, aliases=["production"], settings=settings)
    events: list[cache.DownloadProgress] = []

    result = download("m:production", registry=registry, settings=settings, progress=events.append)

    assert not result.cache_hit and result.bytes == sum(map(len, data.values()))
    assert same_bytes(result.path, data)
    moving = [e.done for e in events if e.phase == "downloading"]
    assert moving == sorted(moving) and moving[-1] == result.bytes
    assert len(moving) > 20  # per MiB, not per file
    hit = download("m:production", registry=registry, settings=settings)
    assert hit.cache_hit and hit.bytes == 0


def test_multipart_etags_are_checked_by_size_and_etag(settings, registry, moto_url):
    uri, data = put_checkpoint(moto_url, {"small.bin": 1000})
    bucket = uri[len("s3://") :].split("/")[0]
    client = s3.make_client(settings)
    parts = [os.urandom(5 * MiB), os.urandom(MiB + 7)]
    upload = client.create_multipart_upload(Bucket=bucket, Key="ckpt/big.bin")
    done = [
        {
            "PartNumber": i,
            "ETag": client.upload_part(
                Bucket=bucket,
                Key="ckpt/big.bin",
                PartNumber=i,
                UploadId=upload["UploadId"],
                Body=body,
            )["ETag"],
        }
        for i, body in enumerate(parts, start=1)
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="ckpt/big.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
    )
    data["big.bin"] = b"".join(parts)
    registry.add_version("m", uri, settings=settings)
    etags = {e.path: e.digest for e in registry.files("m")}
    assert etags["big.bin"].endswith("-2") and "-" not in etags["small.bin"]

    result = download("m", registry=registry, settings=settings)
    assert same_bytes(result.path, data)
    assert download("m", registry=registry, settings=settings, verify=True).cache_hit

    # A single-part ETag is the content md5, so a re-hash catches damage of equal size.
    small = result.path / "small.bin"
    st = small.stat()
    small.write_bytes(b"\0" * 1000)
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashlib.md5(small.read_bytes()).hexdigest() != etags["small.bin"]
    repaired = download("m", registry=registry, settings=settings, verify=True)
    assert not repaired.cache_hit and repaired.bytes == 1000
    assert same_bytes(repaired.path, data)


def test_object_replaced_after_registration_is_refused(settings, registry, moto_url):
    uri, _ = put_checkpoint(moto_url, {"w.bin": 2 * MiB})
    registry.add_version("m", uri, settings=settings)
    bucket = uri[len("s3://") :].split("/")[0]
    s3.make_client(settings).put_object(Bucket=bucket, Key="ckpt/w.bin", Body=os.urandom(2 * MiB))

    with pytest.raises(DownloadError, match=r"ckpt/w.bin changed since it was registered"):
        download("m", registry=registry, settings=settings)
    assert not list((settings.artifact_dir).rglob(cache.MARKER))


def test_missing_aws_variable_is_named_only_when_s3_is_needed(
    tmp_path, settings, registry, moto_url
):
    uri, _ = put_checkpoint(moto_url, {"w.bin": 1000})
    registry.add_version("s3-model", uri, settings=settings)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    registry.add_version("stored-model", tmp_path / "src")

    no_secret = settings_for(tmp_path, moto_url, AWS_SECRET_ACCESS_KEY="")
    with pytest.raises(DownloadError, match="AWS_SECRET_ACCESS_KEY is not set"):
        download("s3-model", registry=registry, settings=no_secret)
    nothing = settings_for(tmp_path, None, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    with pytest.raises(DownloadError, match="AWS_ACCESS_KEY_ID is not set"):
        download("s3-model", registry=registry, settings=nothing)
    assert download("stored-model", registry=registry, settings=nothing).files == 1


def test_sdk_endpoint_variable_is_honoured(tmp_path, registry, moto_url):
    settings = settings_for(tmp_path, None, AWS_S3_ENDPOINT_URL=moto_url)
    uri, data = put_checkpoint(moto_url, {"w.bin": 1000})
    registry.add_version("m", uri, settings=settings)
    assert same_bytes(download("m", registry=registry, settings=settings).path, data)


def test_connections_cut_midway_are_resumed_and_verified(tmp_path, settings, registry, moto_url):
    uri, data = put_checkpoint(moto_url, {"a.bin": 20 * MiB, "b.bin": 6 * MiB})
    registry.add_version("m", uri, settings=settings)
    host, port = moto_url.rsplit("/", 1)[1].split(":")
    with FaultyProxy((host, int(port)), after_bytes=700_000, cuts=4) as proxy:
        through = settings_for(tmp_path, proxy.url)
        result = download("m", registry=registry, settings=through)
    assert proxy.cut_count >= 2  # the small config.json response is never cut
    assert result.bytes == sum(map(len, data.values()))
    assert same_bytes(result.path, data)


def test_sigkill_midway_then_rerun_completes(tmp_path, settings, registry, moto_url):
    sizes = {f"shard-{i}.bin": 2 * MiB + i for i in range(4)}
    uri, data = put_checkpoint(moto_url, sizes)
    registry.add_version("m", uri, settings=settings)
    code = """
import time
from tui.services.cache import download
from tui.services.registry import open_registry
from tui.services.settings import load_settings
settings = load_settings()
def slow(event):
    if event.phase == "downloading":
        print("files_done", event.files_done, flush=True)
        time.sleep(0.15)
download("m", registry=open_registry(settings), settings=settings, progress=slow)
print("finished", flush=True)
"""
    env = {**env_for(tmp_path, moto_url), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    for line in proc.stdout:
        assert not line.startswith("finished"), "the download ended before it was killed"
        if line.startswith("files_done") and int(line.split()[1]) >= 2:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not list(settings.artifact_dir.rglob(cache.MARKER))

    result = download("m", registry=registry, settings=settings)
    assert 0 < result.bytes < sum(map(len, data.values()))
    assert same_bytes(result.path, data)


def test_failures_never_show_the_secret(tmp_path, settings, registry, moto_url):
    uri, _ = put_checkpoint(moto_url, {"w.bin": 1000})
    registry.add_version("m", uri, settings=settings)
    bucket = uri[len("s3://") :].split("/")[0]
    s3.make_client(settings).delete_object(Bucket=bucket, Key="ckpt/w.bin")
    env = {**env_for(tmp_path, moto_url), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "tui.cli", "download", "m"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "w.bin: no such object" in run.stderr and run.stderr.count("\n") == 1
    assert SECRET not in run.stderr + run.stdout


def test_throttling_is_retried_with_backoff(tmp_path, settings, registry, moto_url):
    uri, data = put_checkpoint(moto_url, {"a.bin": 3 * MiB})
    registry.add_version("m", uri, settings=settings)
    host, port = moto_url.rsplit("/", 1)[1].split(":")
    with FaultyProxy((host, int(port)), after_bytes=0, cuts=0, slow_downs=3) as proxy:
        result = download("m", registry=registry, settings=settings_for(tmp_path, proxy.url))
    assert proxy.slow_down_count == 3 and proxy.connections > 3
    assert same_bytes(result.path, data)


def test_transient_and_permanent_errors_are_told_apart():
    from botocore.exceptions import ClientError, ReadTimeoutError, ResponseStreamingError

    def client_error(code: str, status: int) -> ClientError:
        meta = {"HTTPStatusCode": status}
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": meta}, "GetObject")

    assert s3.is_transient(client_error("SlowDown", 503))
    assert s3.is_transient(client_error("InternalError", 500))
    assert s3.is_transient(client_error("Throttling", 400))
    assert s3.is_transient(ConnectionResetError())
    assert s3.is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1"))
    assert s3.is_transient(ResponseStreamingError(error="reset"))
    assert not s3.is_transient(client_error("NoSuchKey", 404))
    assert not s3.is_transient(client_error("AccessDenied", 403))
    assert not s3.is_transient(s3.S3Error("changed since it was registered"))


def test_sigkill_keeps_finished_parts_of_unfinished_files(tmp_path, settings, registry, moto_url):
    # Two objects of a 16 MiB part and a 2 MiB part each: the small parts land first.
    uri, data = put_checkpoint(moto_url, {"a.bin": 18 * MiB, "b.bin": 18 * MiB})
    registry.add_version("m", uri, settings=settings)
    code = """
import time
from tui.services.cache import download
from tui.services.registry import open_registry
from tui.services.settings import load_settings
settings = load_settings()
def slow(event):
    if event.phase == "downloading":
        print(event.done, flush=True)
        time.sleep(0.05)
download("m", registry=open_registry(settings), settings=settings, progress=slow)
"""
    env = {**env_for(tmp_path, moto_url), "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    journal = settings.artifact_dir / ".partial" / "local" / "local" / "m" / "v0" / cache.JOURNAL
    deadline = time.monotonic() + 20

    def shard_part_journaled() -> bool:  # config.json's single part does not count
        text = journal.read_text() if journal.exists() else ""
        return '"part": "a.bin"' in text or '"part": "b.bin"' in text

    while not shard_part_journaled():
        assert proc.poll() is None, "the download ended before it was killed"
        assert time.monotonic() < deadline, "no part was journaled"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert not [x for x in lines if "digest" in x and x["path"].endswith(".bin")]  # no whole file
    total = sum(map(len, data.values()))
    # The part was journaled while a 16 MiB part was still under way, not at the end.
    assert max(int(x) for x in out.split()) < total - 8 * MiB

    result = download("m", registry=registry, settings=settings)
    assert 0 < result.bytes <= total - 2 * MiB  # at least one finished part was kept
    assert same_bytes(result.path, data)


def test_each_part_is_on_disk_before_it_is_reported(settings, moto_url, monkeypatch, tmp_path):
    """`on_part` is what the cache journals as verified, and a resumed download skips
    journaled parts: each must be on disk (fsynced) before it is reported."""
    uri, data = put_checkpoint(moto_url, {"a.bin": 20 * MiB, "b.bin": 3 * MiB})
    client = s3.make_client(settings)
    bucket, _ = s3.split_uri(uri)
    jobs = [
        s3.ObjectJob(f"s3://{bucket}/{key}", tmp_path / Path(key).name, size, etag)
        for key, size, etag in s3.list_prefix(uri, client)
    ]
    events: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        events.append(("fsync", path))

    monkeypatch.setattr(os, "fsync", fsync)
    s3.download_objects(
        jobs,
        client,
        on_part=lambda job, start, end: events.append(("part", str(job.dest.resolve()))),
        on_done=lambda job: events.append(("done", str(job.dest.resolve()))),
        part_size=8 * MiB,
    )
    assert same_bytes(tmp_path, {name: data[name] for name in ("a.bin", "b.bin")})
    reported = [e for e in events if e[0] != "fsync"]
    assert [kind for kind, _ in reported].count("part") == 3 + 1 + 1  # config.json too
    # Each part (and the whole file, when done) has an fsync of its own before its
    # report: the n-th report of a file comes after at least n fsyncs of it. Parts run
    # in threads, so two may be flushed before either is reported.
    for at, (kind, path) in enumerate(events):
        if kind != "fsync":
            reports = sum(1 for e in events[: at + 1] if e[0] != "fsync" and e[1] == path)
            assert events[:at].count(("fsync", path)) >= reports, (kind, path)

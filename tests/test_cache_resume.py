"""A download stopped partway (pause, cancel) goes on from where it was, for every source:
local registry objects, W&B download URLs (ranged GETs) and s3:// references."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cache import make_checkpoint, settings_for
from tui.services import cache
from tui.services.cache import DownloadCancelled, DownloadProgress, download
from tui.services.refs import ArtifactRef
from tui.services.registry.local import LocalRegistry

MiB = 1024 * 1024
BIG = 24 * MiB


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "COPY_CHUNK", 256 * 1024)  # many events, a precise stop


def big_version(
    tmp_path: Path, registry: LocalRegistry, name: str = "big", refs: bool = False
) -> int:
    """A version of a config, a tokenizer, and one BIG shard, stored in the registry or
    as `file://` references (as the demo's big-model is); its total size."""
    src = make_checkpoint(tmp_path / f"src-{name}", shards=0)
    (src / "model.safetensors").write_bytes(os.urandom(BIG))
    registry.add_version(name, [p.as_uri() for p in sorted(src.iterdir())] if refs else src)
    return sum(e.size for e in registry.files(f"{name}:v0"))


def stop_at_half(cancel: threading.Event, seen: list[DownloadProgress]):
    def progress(event: DownloadProgress) -> None:
        seen.append(event)
        if event.path == "model.safetensors" and event.file_done >= BIG // 2:
            cancel.set()

    return progress


def partial_shard(root: Path) -> Path:
    [path] = (root / cache.PARTIAL_DIR).rglob("model.safetensors")
    return path


def resumed(first: list[DownloadProgress], second: list[DownloadProgress]) -> int:
    """Check the rerun counted only the rest; the bytes the first call left written."""
    written = max(e.file_done for e in first if e.path == "model.safetensors")
    moving = [e for e in second if e.phase == "downloading"]
    assert moving[0].kept >= written  # the whole-version progress starts where it was
    assert all(e.kept + e.total == moving[0].kept + moving[0].total for e in moving)
    return written


@pytest.mark.parametrize("refs", [False, True], ids=["stored", "file-refs"])
def test_a_cancelled_local_copy_continues_from_its_last_byte(tmp_path, small_chunks, refs):
    settings = settings_for(tmp_path)
    registry = LocalRegistry(settings.registry_dir)
    total = big_version(tmp_path, registry, refs=refs)
    assert all((e.ref is not None) == refs for e in registry.files("big"))
    cancel, first = threading.Event(), []
    with pytest.raises(DownloadCancelled):
        download(
            "big",
            registry=registry,
            settings=settings,
            progress=stop_at_half(cancel, first),
            cancel=cancel,
        )
    left = partial_shard(settings.artifact_dir).stat().st_size
    assert BIG // 2 <= left < BIG  # kept outside the cache folder, not published
    assert not list(settings.artifact_dir.rglob(cache.MARKER))

    second: list[DownloadProgress] = []
    result = download("big", registry=registry, settings=settings, progress=second.append)

    written = resumed(first, second)
    assert written == left
    # Only the rest of the shard (the small files may have been verified before the stop).
    assert result.bytes <= total - left and result.bytes >= BIG - left
    assert second[-1].kept + second[-1].done == total
    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in registry.files("big"))
    assert not list((settings.artifact_dir / cache.PARTIAL_DIR).rglob("*.safetensors"))


def test_a_damaged_kept_prefix_is_caught_by_the_md5_and_fetched_whole(tmp_path, small_chunks):
    settings = settings_for(tmp_path)
    registry = LocalRegistry(settings.registry_dir)
    total = big_version(tmp_path, registry)
    cancel = threading.Event()
    with pytest.raises(DownloadCancelled):
        download(
            "big",
            registry=registry,
            settings=settings,
            progress=stop_at_half(cancel, []),
            cancel=cancel,
        )
    shard = partial_shard(settings.artifact_dir)
    with shard.open("r+b") as fh:  # what a crash of the machine may leave: zeros
        fh.write(b"\0" * 4096)

    result = download("big", registry=registry, settings=settings)

    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in registry.files("big"))
    assert BIG <= result.bytes <= total  # the shard came whole; bytes count what landed


class RangeServer:
    """Serves a local registry's stored files over HTTP on 127.0.0.1, honouring (or, with
    `ranges=False`, ignoring) Range headers as a storage host does; records each GET."""

    def __init__(self, registry: LocalRegistry, ranges: bool) -> None:
        self.registry, self.ranges = registry, ranges
        self.gets: list[tuple[str, str | None, int]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                quoted, _, path = self.path.lstrip("/").partition("/")
                ref = urllib.parse.unquote(quoted)
                [entry] = [e for e in owner.registry.files(ref) if e.path == path]
                data = owner.registry.object_path(entry).read_bytes()
                asked = self.headers.get("Range")
                start = 0
                if asked and owner.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
                self.send_response(206 if start or (asked and owner.ranges) else 200)
                if start or (asked and owner.ranges):
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                owner.gets.append((path, asked, len(data) - start))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data[start:])  # unless the client stopped reading

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def url(self, ref: str, path: str) -> str:
        quoted = urllib.parse.quote(ref, safe="")
        return f"http://127.0.0.1:{self.server.server_address[1]}/{quoted}/{path}"


class UrlBackend:
    """A registry whose stored files come from download URLs, as W&B's do (no local
    objects: `cache` must fetch over HTTP)."""

    def __init__(self, registry: LocalRegistry, server: RangeServer) -> None:
        self.registry, self.server = registry, server

    def resolve(self, ref: ArtifactRef | str):
        return self.registry.resolve(ref)

    def files(self, ref: ArtifactRef | str):
        return self.registry.files(ref)

    def file_urls(self, ref: ArtifactRef | str) -> dict[str, str]:
        return {e.path: self.server.url(str(ref), e.path) for e in self.registry.files(ref)}


@pytest.mark.parametrize("ranges", [True, False], ids=["ranged", "range-ignored"])
def test_a_cancelled_url_download_asks_only_for_the_rest(tmp_path, small_chunks, ranges):
    settings = settings_for(tmp_path)
    registry = LocalRegistry(settings.registry_dir)
    total = big_version(tmp_path, registry)
    ref = str(registry.resolve("big").ref())
    with RangeServer(registry, ranges) as server:
        backend = UrlBackend(registry, server)
        assert isinstance(backend, cache.FileUrlSource)
        assert not isinstance(backend, cache.ObjectStore)
        cancel, first = threading.Event(), []
        with pytest.raises(DownloadCancelled):
            download(
                ref,
                registry=backend,
                settings=settings,
                progress=stop_at_half(cancel, first),
                cancel=cancel,
            )
        left = partial_shard(settings.artifact_dir).stat().st_size
        server.gets.clear()
        second: list[DownloadProgress] = []
        result = download(ref, registry=backend, settings=settings, progress=second.append)

    entries = registry.files(ref)
    assert all(cache.md5_b64_of(result.folder / e.path) == e.digest for e in entries)
    shard_gets = [g for g in server.gets if g[0] == "model.safetensors"]
    assert [asked for _, asked, _ in shard_gets] == [f"bytes={left}-"]
    if ranges:
        resumed(first, second)
        assert shard_gets[0][2] == BIG - left  # the server sent the rest only
        assert BIG - left <= result.bytes <= total - left
    else:
        # A server that ignores the range sends it all: the file starts over, counted so.
        assert result.bytes >= BIG
        assert second[-1].kept + second[-1].done == total


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_cancelled_s3_download_keeps_its_finished_parts(tmp_path, monkeypatch, moto_url):
    from tests import test_s3

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = test_s3.settings_for(tmp_path, moto_url)
    registry = LocalRegistry(settings.registry_dir)
    size = 3 * 16 * MiB  # three parts
    uri, data = test_s3.put_checkpoint(moto_url, {"model.safetensors": size})
    registry.add_version("s3big", uri, settings=settings)
    cancel, first = threading.Event(), []
    # One part at a time: with all three in flight at once the other two could finish
    # before the cancel is seen, and nothing would be left to continue.
    from concurrent.futures import ThreadPoolExecutor

    from tui.services import s3

    monkeypatch.setattr(
        s3, "ThreadPoolExecutor", lambda max_workers, **kw: ThreadPoolExecutor(1, **kw)
    )

    def part_journaled(event: DownloadProgress) -> None:
        first.append(event)
        journal = list((settings.artifact_dir / cache.PARTIAL_DIR).rglob(cache.JOURNAL))
        if journal and '"part": "model.safetensors"' in journal[0].read_text():
            cancel.set()

    with pytest.raises(DownloadCancelled):
        download(
            "s3big", registry=registry, settings=settings, progress=part_journaled, cancel=cancel
        )
    second: list[DownloadProgress] = []
    result = download("s3big", registry=registry, settings=settings, progress=second.append)

    assert test_s3.same_bytes(result.path, data)
    moving = [e for e in second if e.phase == "downloading"]
    assert moving[0].kept >= 16 * MiB
    assert result.bytes <= size + len(data["config.json"]) - 16 * MiB
    assert json.loads((result.folder / "config.json").read_text())["model_type"] == "llama"

"""The local registry on real disk, real SQLite, real processes and moto's S3 server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tui.services.demo import DEMO_TAG, MARKER_NAME, default_demo_root, seed_demo
from tui.services.registry.local import INDEX_NAME, LocalRegistry, StoreProgress
from tui.services.registry.protocol import NotFoundError, RegistryError, RunInfo
from tui.services.settings import Paths, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def make_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


CHECKPOINT = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": bytes(range(256)) * 40,
    "tokenizer/tokenizer_config.json": b'{"bos_token": "<s>"}',
}


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


# -- adding versions --------------------------------------------------------------


def test_add_from_folder_stores_content_addressed_copies(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    source = make_folder(tmp_path / "ckpt", CHECKPOINT)
    version = registry.add_version("m", source, aliases=["production"], metadata={"step": 1})
    assert (version.version, version.aliases) == ("v0", ("latest", "production"))
    entries = registry.files("m:v0")
    assert [e.path for e in entries] == sorted(CHECKPOINT)
    for entry in entries:
        data = CHECKPOINT[entry.path]
        assert (entry.size, entry.digest, entry.ref) == (len(data), b64md5(data), None)
        stored = registry.object_path(entry)
        assert stored.read_bytes() == data
        hex_digest = hashlib.md5(data).hexdigest()
        assert stored == registry.root / "objects" / hex_digest[:2] / hex_digest
    assert version.size == sum(len(d) for d in CHECKPOINT.values())
    assert version.file_count == 3
    assert registry.get_collection("m").type == "model"


def test_identical_bytes_are_stored_once(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add_version("m", make_folder(tmp_path / "a", CHECKPOINT))
    registry.add_version("n", make_folder(tmp_path / "b", CHECKPOINT))
    objects = [p for p in (registry.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == len(CHECKPOINT)
    assert not [p for p in objects if p.name.startswith(".tmp-")]
    assert registry.resolve("m:v0").digest == registry.resolve("n:v0").digest


def test_adding_the_same_files_again_returns_the_existing_version(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    first = registry.add_version(
        "m", make_folder(tmp_path / "a", CHECKPOINT), description="first", metadata={"step": 1}
    )
    registry.add_version("m", make_folder(tmp_path / "other", {"w": b"other"}))
    again = registry.add_version(
        "m",
        make_folder(tmp_path / "b", CHECKPOINT),
        aliases=["production"],
        description="second",
        metadata={"step": 2},
    )
    # W&B returns the existing version for the same digest; so does the local registry.
    assert again.version == first.version == "v0"
    assert registry.get_collection("m").version_count == 2
    assert again.aliases == ("production",) and again.description == "first"
    assert dict(again.metadata) == {"step": 1}
    assert registry.resolve("m:latest").version == "v1"  # latest stays on the newest
    # The same bytes referenced elsewhere are other entries: a new version.
    referenced = registry.add_version("m", (tmp_path / "b").as_uri())
    assert referenced.version == "v2"


def test_progress_hook_hears_each_stored_file_hashed_then_copied(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    big = os.urandom(3 * (1 << 20) + 17)  # four chunks
    src = make_folder(tmp_path / "src", {"model.bin": big, "config.json": b"{}"})
    events: list[StoreProgress] = []

    registry.add_version("m", src, progress=events.append)

    assert [(e.index, e.path) for e in events if e.done == 0 and e.phase == "hashing"] == [
        (1, "config.json"),
        (2, "model.bin"),
    ]
    model = [e for e in events if e.path == "model.bin"]
    assert {e.count for e in events} == {2} and {e.size for e in model} == {len(big)}
    for phase in ("hashing", "copying"):
        done = [e.done for e in model if e.phase == phase]
        assert done == sorted(done) and done[-1] == len(big) and len(done) >= 4
    assert [e.phase for e in model].index("copying") > [e.phase for e in model].index("hashing")

    # The same bytes again are hashed, but the object store already holds them.
    again: list[StoreProgress] = []
    registry.add_version("m", src, progress=again.append)
    assert {e.phase for e in again} == {"hashing"}
    assert max(e.done for e in again if e.path == "model.bin") == len(big)


def test_add_from_file_uri_references_without_copying(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    source = make_folder(tmp_path / "shared disk" / "ckpt", CHECKPOINT)
    registry.add_version("m-local", source.as_uri())
    registry.add_version("m-local", f"file://{source / 'config.json'}")
    entries = registry.files("m-local:v0")
    assert [e.path for e in entries] == sorted(CHECKPOINT)
    for entry in entries:
        assert entry.ref == (source / entry.path).as_uri()
        assert "%20" in entry.ref
        assert entry.digest == b64md5(CHECKPOINT[entry.path])
        with pytest.raises(RegistryError, match="is a reference"):
            registry.object_path(entry)
    single = registry.files("m-local:v1")
    assert [(e.path, e.size) for e in single] == [("config.json", len(CHECKPOINT["config.json"]))]
    assert not (registry.root / "objects").exists()


def test_add_from_a_list_of_sources(registry: LocalRegistry, tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", {"x.bin": b"x"})
    b = make_folder(tmp_path / "b", {"y.bin": b"y"})
    version = registry.add_version("m", [a.as_uri(), b.as_uri()])
    assert [e.path for e in registry.files(version.ref())] == ["x.bin", "y.bin"]
    make_folder(b, {"x.bin": b"other"})
    with pytest.raises(RegistryError, match=r"x\.bin"):
        registry.add_version("m", [a.as_uri(), b.as_uri()])


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{tmp}/missing", "does not exist"),
        ("{tmp}/empty", "holds no files"),
        ("http://example.invalid/ckpt", "file:// URI or an s3://"),
        ("file://relative/path", "file:///absolute/path"),
        ("s3://", "names no bucket"),
    ],
)
def test_bad_sources_say_what_to_fix(
    registry: LocalRegistry, tmp_path: Path, source: str, needle: str
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match=needle) as info:
        registry.add_version("m", source.format(tmp=tmp_path))
    assert "\n" not in str(info.value)
    assert registry.list_collections() == []


def test_bad_names_and_metadata_are_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "ckpt", CHECKPOINT)
    with pytest.raises(RegistryError, match="collection name"):
        registry.add_version("bad name", source)
    with pytest.raises(RegistryError, match="version number"):
        registry.add_version("m", source, aliases=["v3"])
    with pytest.raises(RegistryError, match="metadata"):
        registry.add_version("m", source, metadata={"when": object()})
    assert registry.list_collections() == []


# -- aliases ----------------------------------------------------------------------


def test_latest_moves_to_the_newest_version(registry: LocalRegistry, tmp_path: Path) -> None:
    for step in range(3):
        registry.add_version("m", make_folder(tmp_path / f"s{step}", {"w": bytes([step])}))
        assert registry.resolve("m:latest").version == f"v{step}"
        holders = [v.version for v in registry.list_versions("m") if "latest" in v.aliases]
        assert holders == [f"v{step}"]
    with pytest.raises(RegistryError, match="newest"):
        registry.set_alias("m:v0", "latest")
    with pytest.raises(RegistryError, match="newest"):
        registry.remove_alias("m:v2", "latest")
    assert registry.set_alias("m:v2", "latest").version == "v2"


def test_an_alias_lives_on_one_version_only(registry: LocalRegistry, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "ckpt", CHECKPOINT)
    registry.add_version("m", source, aliases=["production"])
    registry.add_version("m", source.as_uri(), aliases=["production", "best"])
    assert registry.resolve("m:v0").aliases == ()
    assert registry.resolve("m:v1").aliases == ("best", "latest", "production")
    registry.set_alias("m:v0", "best")
    assert registry.get_collection("m").aliases == {
        "best": "v0",
        "latest": "v1",
        "production": "v1",
    }
    # Aliases are per collection: another collection may use the same name.
    registry.add_version("n", source, aliases=["production"])
    assert registry.resolve("m:production").version == "v1"
    with pytest.raises(NotFoundError, match="has no alias 'gone'"):
        registry.remove_alias("m:v1", "gone")


def test_lineage_records_are_kept_in_order_and_updated(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    registry.add_version("m", make_folder(tmp_path / "ckpt", CHECKPOINT))
    registry.add_lineage("m:v0", produced_by=RunInfo(id="t1", job_type="train"))
    registry.add_lineage("m:v0", used_by=[RunInfo(id="e1"), RunInfo(id="e2", state="running")])
    registry.add_lineage(
        "m:latest",
        produced_by=RunInfo(id="t2", job_type="train"),
        used_by=[RunInfo(id="e2", state="finished")],
    )
    lineage = registry.lineage("m:v0")
    assert lineage.produced_by == RunInfo(id="t2", job_type="train")
    assert [(r.id, r.state) for r in lineage.used_by] == [("e1", ""), ("e2", "finished")]


# -- s3 references ----------------------------------------------------------------


@pytest.fixture
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings(tmp_path: Path, endpoint: str, **env: str) -> Settings:
    base = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_ENDPOINT_URL": endpoint,
    }
    base.update(env)
    paths = Paths(data=tmp_path / "d", cache=tmp_path / "c", state=tmp_path / "s", config=tmp_path)
    return load_settings({k: v for k, v in base.items() if v}, paths=paths)


def test_add_from_s3_references_with_etags(
    registry: LocalRegistry, tmp_path: Path, s3_server: str
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="ckpts")
    for rel, data in CHECKPOINT.items():
        client.put_object(Bucket="ckpts", Key=f"runs/ckpt/{rel}", Body=data)
    client.put_object(Bucket="ckpts", Key="runs/ckpt-other/config.json", Body=b"{}")
    settings = s3_settings(tmp_path, s3_server)

    version = registry.add_version("m", "s3://ckpts/runs/ckpt", settings=settings)
    entries = registry.files(version.ref())
    assert [e.path for e in entries] == sorted(CHECKPOINT)
    for entry in entries:
        head = client.head_object(Bucket="ckpts", Key=f"runs/ckpt/{entry.path}")
        etag = head["ETag"].strip('"')
        assert entry.ref == f"s3://ckpts/runs/ckpt/{entry.path}"
        assert (entry.size, entry.digest, entry.extra["etag"]) == (
            len(CHECKPOINT[entry.path]),
            etag,
            etag,
        )
        assert etag == hashlib.md5(CHECKPOINT[entry.path]).hexdigest()

    single = registry.add_version("m", "s3://ckpts/runs/ckpt/config.json", settings=settings)
    assert [e.path for e in registry.files(single.ref())] == ["config.json"]

    with pytest.raises(RegistryError, match="holds no objects"):
        registry.add_version("m", "s3://ckpts/nothing-here", settings=settings)
    with pytest.raises(RegistryError, match=r"(?i)no ?such ?bucket"):
        registry.add_version("m", "s3://no-such-bucket/x", settings=settings)


def test_s3_without_credentials_names_the_variable(registry: LocalRegistry, tmp_path: Path) -> None:
    settings = s3_settings(tmp_path, "http://127.0.0.1:9", AWS_ACCESS_KEY_ID="")
    with pytest.raises(RegistryError, match="AWS_ACCESS_KEY_ID"):
        registry.add_version("m", "s3://ckpts/x", settings=settings)
    settings = s3_settings(tmp_path, "http://127.0.0.1:9", AWS_SECRET_ACCESS_KEY="")
    with pytest.raises(RegistryError, match="AWS_SECRET_ACCESS_KEY"):
        registry.add_version("m", "s3://ckpts/x", settings=settings)


# -- two processes at once --------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import RunInfo

root, tag, go, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
registry = LocalRegistry(root)
deadline = time.monotonic() + 20
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("start signal never came")
    time.sleep(0.005)
for i in range(10):
    folder = work / f"{tag}{i}"
    folder.mkdir(parents=True)
    (folder / "shared.bin").write_bytes(b"same bytes in both writers" * 100)
    (folder / "own.bin").write_bytes(f"{tag}-{i}".encode() * 50)
    version = registry.add_version(
        "shared", folder, aliases=[f"{tag}-last"], metadata={"writer": tag, "i": i}
    )
    registry.set_alias(version.ref(), "production")
    registry.set_alias(f"shared:v{i // 2}", "best")
    registry.add_lineage(version.ref(), produced_by=RunInfo(id=f"{tag}{i}"))
"""


def test_two_processes_writing_at_once_keep_the_registry_consistent(tmp_path: Path) -> None:
    root, go = tmp_path / "registry", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), tag, str(go), str(tmp_path / "work")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    time.sleep(0.3)  # let both import and wait on the signal
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err

    registry = LocalRegistry(root)
    versions = registry.list_versions("shared")
    assert sorted(v.index for v in versions) == list(range(20))
    assert registry.get_collection("shared").version_count == 20
    holders: dict[str, list[str]] = {}
    for version in versions:
        for alias in version.aliases:
            holders.setdefault(alias, []).append(version.version)
    assert set(holders) == {"latest", "production", "best", "a-last", "b-last"}
    assert all(len(v) == 1 for v in holders.values()), holders
    assert holders["latest"] == ["v19"]
    for version in versions:
        writer, i = version.metadata["writer"], version.metadata["i"]
        entries = {e.path: e for e in registry.files(version.ref())}
        own = registry.object_path(entries["own.bin"]).read_bytes()
        assert own == f"{writer}-{i}".encode() * 50
        assert registry.object_path(entries["shared.bin"]).is_file()
        assert registry.lineage(version.ref()).produced_by == RunInfo(id=f"{writer}{i}")
    by_writer = sorted((v.metadata["writer"], v.metadata["i"]) for v in versions)
    assert by_writer == sorted((w, i) for w in "ab" for i in range(10))
    leftovers = [p for p in (root / "objects").rglob(".tmp-*")]
    assert leftovers == []


# -- damage -----------------------------------------------------------------------


def test_garbage_index_is_reported_with_its_path(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add_version("m", make_folder(tmp_path / "ckpt", CHECKPOINT))
    index = registry.root / INDEX_NAME
    index.write_bytes(b"this is not a database, just some bytes " * 200)
    for action in (
        registry.list_collections,
        lambda: registry.resolve("m:latest"),
        lambda: registry.add_version("m", tmp_path / "ckpt"),
    ):
        with pytest.raises(RegistryError) as info:
            action()
        assert str(index) in str(info.value)
        assert "\n" not in str(info.value)


def test_truncated_index_is_reported_with_its_path(registry: LocalRegistry, tmp_path: Path) -> None:
    for step in range(30):
        registry.add_version("m", make_folder(tmp_path / f"c{step}", {"w": bytes([step]) * 9}))
    index = registry.root / INDEX_NAME
    data = index.read_bytes()
    assert len(data) > 8192
    index.write_bytes(data[:4096] + b"\0" * 100)
    with pytest.raises(RegistryError, match=str(index)):
        registry.list_versions("m")


def test_an_index_from_a_newer_release_is_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add_version("m", make_folder(tmp_path / "ckpt", CHECKPOINT))
    with sqlite3.connect(registry.root / INDEX_NAME) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(RegistryError, match="newer evalwb-tui"):
        registry.list_collections()


def test_missing_object_is_reported_with_its_path(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add_version("m", make_folder(tmp_path / "ckpt", CHECKPOINT))
    entry = next(e for e in registry.files("m:v0") if e.path == "config.json")
    path = registry.object_path(entry)
    path.unlink()
    with pytest.raises(RegistryError, match="missing") as info:
        registry.object_path(entry)
    assert str(path) in str(info.value) and "config.json" in str(info.value)


def test_an_absent_registry_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "nowhere")
    assert registry.list_collections() == []
    with pytest.raises(NotFoundError):
        registry.resolve("m:latest")
    assert not (tmp_path / "nowhere").exists()


# -- demo -------------------------------------------------------------------------


def index_rows(root: Path) -> list[tuple]:
    with sqlite3.connect(root / INDEX_NAME) as conn:
        tables = ("collections", "versions", "aliases", "files", "lineage")
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables]


def test_seed_demo_is_idempotent_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    first = seed_demo(root)
    assert first.seeded and first.registry_dir == root
    rows = index_rows(root)

    second = seed_demo(root)
    assert not second.seeded
    assert index_rows(root) == rows

    # Without the completion marker the seed runs again, finds everything, adds nothing.
    (root / MARKER_NAME).unlink()
    assert seed_demo(root).seeded
    assert index_rows(root) == rows


SEEDER = """
import sys
from pathlib import Path
from tui.services.demo import seed_demo
seed_demo(Path(sys.argv[1]))
"""


def test_two_processes_seeding_at_once_seed_once(tmp_path: Path, demo_seed) -> None:
    root = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seeders = [
        subprocess.Popen(
            [sys.executable, "-c", SEEDER, str(root)], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for seeder in seeders:
        _, err = seeder.communicate(timeout=60)
        assert seeder.returncode == 0, err
    expected = LocalRegistry(demo_seed.registry_dir).list_collections(type="")
    found = LocalRegistry(root).list_collections(type="")
    assert [(c.name, c.version_count, c.aliases) for c in found] == [
        (c.name, c.version_count, c.aliases) for c in expected
    ]


def test_seed_demo_covers_what_the_demo_promises(demo_seed) -> None:
    registry = LocalRegistry(demo_seed.registry_dir)
    models = registry.list_collections()
    assert len(models) >= 3
    assert all(c.version_count >= 4 for c in models)
    aliases = {alias for c in models for alias in c.aliases}
    assert {"latest", "production", "candidate", "best"} <= aliases
    assert all(DEMO_TAG in c.tags for c in registry.list_collections(type=""))
    meta = registry.resolve("llama-3-8b-sft:production").metadata
    assert {"parameter_count", "training_step", "data_mix", "learning_rate", "base_model"} <= set(
        meta
    )
    assert abs(sum(meta["data_mix"].values()) - 1) < 0.01
    for entry in registry.files("llama-3-8b-sft:production"):
        assert 0 < registry.object_path(entry).stat().st_size < 16 * 1024
    config = next(e for e in registry.files("my-model:v3") if e.path == "config.json")
    assert json.loads(registry.object_path(config).read_bytes())["architectures"]


def test_seeded_results_keep_eval_framework_s_own_bytes(demo_seed) -> None:
    """The H- alias eval-framework computed must follow from the registered bytes."""
    registry = LocalRegistry(demo_seed.registry_dir)
    assert len(demo_seed.eval_collections) == 10
    for name in demo_seed.eval_collections:
        version = registry.resolve(f"{name}:v0")
        entries = {e.path: e for e in registry.files(version.ref())}
        hexes = "".join(
            hashlib.sha256(registry.object_path(entries[f]).read_bytes()).hexdigest()
            for f in ("aggregated_results.json", "output.jsonl", "results.jsonl")
            if f in entries
        )
        alias = "H-" + hashlib.sha256(hexes.encode()).hexdigest()[:10]
        assert alias in version.aliases, name


def test_seed_demo_refuses_a_registry_it_did_not_make(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    LocalRegistry(root).add_version("my-model", make_folder(tmp_path / "ckpt", CHECKPOINT))
    with pytest.raises(RegistryError, match="empty folder"):
        seed_demo(root)
    assert LocalRegistry(root).get_collection("my-model").version_count == 1


def test_default_demo_root(tmp_path: Path) -> None:
    paths = Paths(data=tmp_path / "data", cache=tmp_path, state=tmp_path, config=tmp_path)
    assert default_demo_root(Settings(paths=paths)) == tmp_path / "data" / "demo"
    chosen = Settings(paths=paths, evalwb_registry_dir=tmp_path / "chosen")
    assert default_demo_root(chosen) == tmp_path / "chosen"


def test_default_demo_root_follows_the_environment(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(cwd=isolated_env)
    assert default_demo_root(settings) == isolated_env / "registry"
    monkeypatch.delenv("EVALWB_REGISTRY_DIR")
    root = default_demo_root(load_settings(cwd=isolated_env))
    assert root.name == "demo" and root.is_relative_to(isolated_env / "home")


@pytest.mark.parametrize(
    ("key", "path", "why"),
    [
        ("runs/ckpt/sub/../../../escaped.bin", "sub/../../../escaped.bin", "climbs out"),
        ("runs/ckpt//etc/evil", "/etc/evil", "is absolute"),
        ("runs/ckpt/.evalwb-complete.json", ".evalwb-complete.json", "reserves"),
        ("runs/ckpt/a/./b.bin", "a/./b.bin", "normal form"),
    ],
)
def test_s3_keys_that_make_no_safe_file_path_are_refused_when_registered(
    registry: LocalRegistry, tmp_path: Path, s3_server: str, key: str, path: str, why: str
) -> None:
    """Such keys were recorded, and failed only when the version was downloaded."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
        region_name="us-east-1",
    )
    bucket = f"ckpts-{uuid.uuid4().hex[:12]}"  # moto keeps buckets for the whole process
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="runs/ckpt/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert key in [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    settings = s3_settings(tmp_path, s3_server)
    with pytest.raises(RegistryError) as info:
        registry.add_version("m", f"s3://{bucket}/runs/ckpt", settings=settings)
    message = str(info.value)
    assert message.startswith(f"cannot register 's3://{bucket}/{key}': its file path {path!r} ")
    assert why in message and "\n" not in message
    assert registry.list_collections() == []


HUGE = "v99999999999999999999"  # past SQLite's largest INTEGER


def test_a_version_number_past_sqlite_integers_is_not_found(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    """It raised "Python int too large to convert to SQLite INTEGER"."""
    registry.add_version("m", make_folder(tmp_path / "ckpt", CHECKPOINT))
    for call in (
        lambda: registry.resolve(f"m:{HUGE}"),
        lambda: registry.files(f"m:{HUGE}"),
        lambda: registry.set_alias(f"m:{HUGE}", "best"),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert str(info.value) == f"m has no version {HUGE}; it has v0..v0"
    assert registry.list_versions("m", alias=HUGE) == []
    assert registry.list_versions("m", alias="v0")[0].version == "v0"

"""The W&B backend against the W&B API emulator, compared with the local registry.

The emulator serves a local registry's content; every case reads the same content
through the real `wandb.Api` (and `wandb-core`) and directly from the local registry,
and the two must agree. The emulator validates each response against the SDK's own
result models; any recorded error fails the test that caused it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tests.wandb_emulator import (
    FAKE_KEY,
    MODEL_REGISTRY,
    ORG_ENTITY,
    ORGANIZATION,
    WandbService,
)
from tui.services.demo import DemoInfo
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import (
    Lineage,
    NotFoundError,
    RegistryError,
    RunInfo,
    Version,
)
from tui.services.registry.wandb import WandbRegistry, _sdk_lineage
from tui.services.settings import Paths, load_settings

REPO = Path(__file__).resolve().parent.parent
PAGED = "paged-model"
PAGED_VERSIONS = 30
# Fields that differ by design: W&B places the registry in the org entity's project.
PLACE = ("project", "entity")


def same(version: Version) -> dict:
    """A version without the fields that name where it lives."""
    return {k: v for k, v in asdict(version).items() if k not in PLACE}


@pytest.fixture(scope="module")
def shared_dir(demo_seed: DemoInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo content plus a collection of 30 versions; only read by the tests."""
    target = tmp_path_factory.mktemp("wandb-backend") / "registry"
    shutil.copytree(demo_seed.root, target, ignore=shutil.ignore_patterns("checkpoints"))
    registry = LocalRegistry(target)
    source = target.parent / "weights.bin"
    for index in range(PAGED_VERSIONS):
        source.write_bytes(index.to_bytes(4, "big") * 8)
        registry.add_version(PAGED, source, tags=["even"] if index % 2 == 0 else [])
    return target


@pytest.fixture
def service(request: pytest.FixtureRequest, wandb_service: WandbService) -> WandbService:
    """The session's emulator and backend; fails the test if the emulator recorded errors."""
    svc = wandb_service
    request.addfinalizer(svc.check)
    return svc


@pytest.fixture
def shared(service: WandbService, shared_dir: Path) -> tuple[WandbRegistry, LocalRegistry]:
    """The W&B backend and the local registry, both over the shared content."""
    local = LocalRegistry(shared_dir)
    return service.serve(local), local


@pytest.fixture
def fresh(service: WandbService, demo_registry_dir: Path) -> tuple[WandbRegistry, LocalRegistry]:
    """The W&B backend and the local registry over a private copy a test may change."""
    local = LocalRegistry(demo_registry_dir)
    return service.serve(local), local


def sent(service: WandbService, since: int) -> list[tuple[str, dict]]:
    """The GraphQL operations the SDK sent since request number `since`."""
    return [r for r in service.emulator.requests[since:] if not r[0].startswith("GET")]


# -- reading ----------------------------------------------------------------------------


def test_collections_match_the_local_registry(shared) -> None:
    wandb, local = shared
    remote = {c.name: c for c in wandb.list_collections(type="")}
    direct = {c.name: c for c in local.list_collections(type="")}
    assert remote.keys() == direct.keys()
    for name, collection in remote.items():
        assert (collection.project, collection.entity) == (MODEL_REGISTRY, ORG_ENTITY)
        expected = {k: v for k, v in asdict(direct[name]).items() if k not in PLACE}
        assert {k: v for k, v in asdict(collection).items() if k not in PLACE} == expected


def test_versions_match_page_by_page(shared) -> None:
    wandb, local = shared
    pages = [wandb.list_versions("llama-3-8b-sft", offset=o, limit=2) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    remote = [v for page in pages for v in page]
    assert [same(v) for v in remote] == [same(v) for v in local.list_versions("llama-3-8b-sft")]
    assert {(v.project, v.entity) for v in remote} == {(MODEL_REGISTRY, ORG_ENTITY)}


def test_listing_versions_fetches_only_the_pages_asked_for(
    service, shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb, local = shared
    start = len(service.emulator.requests)
    first = wandb.list_versions(PAGED, limit=5)
    assert [v.version for v in first] == ["v29", "v28", "v27", "v26", "v25"]
    [(op, variables)] = sent(service, start)
    assert (op, variables["perPage"], variables.get("cursor")) == ("ProjectArtifacts", 5, None)

    start = len(service.emulator.requests)
    middle = wandb.list_versions(PAGED, offset=12, limit=6)
    assert [same(v) for v in middle] == [
        same(v) for v in local.list_versions(PAGED, offset=12, limit=6)
    ]
    assert [(op, v["perPage"]) for op, v in sent(service, start)] == [("ProjectArtifacts", 18)]

    # A whole listing walks the cursors page by page.
    monkeypatch.setattr("tui.services.registry.wandb.MAX_PAGE", 8)
    start = len(service.emulator.requests)
    everything = wandb.list_versions(PAGED)
    assert [same(v) for v in everything] == [same(v) for v in local.list_versions(PAGED)]
    pages = sent(service, start)
    assert [(op, v["perPage"]) for op, v in pages] == [("ProjectArtifacts", 8)] * 4
    cursors = [v.get("cursor") for _, v in pages]
    assert cursors[0] is None and len(set(cursors[1:])) == 3


def test_version_filters_match(shared) -> None:
    wandb, local = shared
    for alias in ("production", "best", "latest", "stable", "no-such-alias"):
        assert [same(v) for v in wandb.list_versions("llama-3-8b-sft", alias=alias)] == [
            same(v) for v in local.list_versions("llama-3-8b-sft", alias=alias)
        ]
    remote = wandb.list_versions(PAGED, tag="even", offset=3, limit=4)
    assert [same(v) for v in remote] == [
        same(v) for v in local.list_versions(PAGED, tag="even", offset=3, limit=4)
    ]


def test_every_alias_resolves_as_locally(service, shared) -> None:
    wandb, local = shared
    for collection in local.list_collections():
        for alias, version in collection.aliases.items():
            expected = same(local.resolve(f"{collection.name}:{alias}"))
            assert expected["version"] == version
            assert same(wandb.resolve(f"{collection.name}:{alias}")) == expected
    expected = same(local.resolve("my-model:production"))
    for ref in (
        f"{MODEL_REGISTRY}/my-model:production",
        f"{ORG_ENTITY}/{MODEL_REGISTRY}/my-model:v3",
    ):
        assert same(wandb.resolve(ref)) == expected, ref
    start = len(service.emulator.requests)
    wandb.resolve("my-model:production")
    [(op, variables)] = sent(service, start)
    assert op == "ArtifactMembershipByName"
    assert variables == {
        "entity": ORG_ENTITY,
        "project": MODEL_REGISTRY,
        "name": "my-model:production",
    }


def test_a_registry_path_under_a_team_is_refused_as_w_and_b_refuses_it(shared) -> None:
    """The first part of a registry path is an organisation: a team there, or an unknown
    organisation, is rejected by the SDK from what the server says of the entity."""
    wandb, _ = shared
    with pytest.raises(RegistryError, match="Unable to find organization for entity 'team'"):
        wandb.resolve(f"team/{MODEL_REGISTRY}/my-model:v3")
    with pytest.raises(RegistryError, match="organization"):
        wandb.resolve(f"no-such-org/{MODEL_REGISTRY}/my-model:v3")


def test_an_edit_of_a_link_to_a_read_only_source_fails_naming_its_project(fresh) -> None:
    """`llama-3-8b-sft` links to team/pretraining, which the viewer may only read: the
    SDK would skip the update with a warning; the backend says so in one line."""
    wandb, local = fresh
    before = local.resolve("llama-3-8b-sft:latest")
    with pytest.raises(RegistryError, match="team/pretraining") as failed:
        wandb.update_version("llama-3-8b-sft:latest", description="X", tags=["new"])
    assert "\n" not in str(failed.value)
    after = local.resolve("llama-3-8b-sft:latest")
    assert (after.description, after.tags) == (before.description, before.tags)


def test_an_edit_of_a_link_to_a_writable_source_is_read_back_with_the_sdk(fresh) -> None:
    import wandb as sdk

    wandb, _ = fresh
    wandb.update_version("my-model:v3", description="X", metadata={"lr": 0.5}, tags=["kept"])
    api = sdk.Api(api_key=FAKE_KEY, overrides={"base_url": wandb.settings.wandb_base_url})
    art = api.artifact(f"{ORG_ENTITY}/{MODEL_REGISTRY}/my-model:v3")
    assert (art.description, art.metadata, art.tags) == ("X", {"lr": 0.5}, ["kept"])
    assert (art.source_entity, art.source_project) == ("team", "training")


def test_a_protected_alias_is_not_moved(fresh) -> None:
    wandb, local = fresh
    held = local.resolve("mistral-7b-dpo:production").version
    with pytest.raises(RegistryError, match="permission") as refused:
        wandb.set_alias("mistral-7b-dpo:v0", "production")
    assert "\n" not in str(refused.value)
    assert local.resolve("mistral-7b-dpo:production").version == held != "v0"


def test_files_match_including_references(shared) -> None:
    wandb, local = shared
    for ref in ("my-model:production", "my-model-local:v3", "mistral-7b-dpo:v0"):
        assert wandb.files(ref) == local.files(ref)


def test_lineage_matches(service, shared) -> None:
    wandb, local = shared
    for ref in ("my-model:v3", "my-model:v0", "llama-3-8b-sft:v2"):
        remote, direct = wandb.lineage(ref), local.lineage(ref)
        assert direct.produced_by is not None and remote.produced_by is not None
        assert len(remote.used_by) == len(direct.used_by)
        pairs = zip(remote.used_by, direct.used_by, strict=True)
        runs = [(remote.produced_by, direct.produced_by), *pairs]
        for got, want in runs:
            assert asdict(got) | {"url": ""} == asdict(want)
            assert (
                got.url
                == f"{service.emulator.base_url}/{want.entity}/{want.project}/runs/{want.id}"
            )


def _checkpoint_used_by(service, tmp_path: Path, users: int) -> tuple[WandbRegistry, Lineage]:
    """The W&B backend over a checkpoint made by one run and used by `users` eval runs
    (spread over three projects, some without job type or group), and its local lineage."""
    local = LocalRegistry(tmp_path / f"registry-{users}")
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 64)
    local.add_version("ckpt", source)
    runs = [
        RunInfo(
            id=f"eval-{i}",
            name=f"eval {i}",
            project=f"evals-{i % 3}",
            entity="team",
            job_type="eval" if i % 5 else "",
            group=f"sweep {i % 2}" if i % 3 else "",
            state=("finished", "crashed", "running")[i % 3],
        )
        for i in range(users)
    ]
    producer = RunInfo(id="train-1", name="sft", project="train", entity="team", state="finished")
    local.add_lineage("ckpt:v0", produced_by=producer, used_by=runs)
    wandb = service.serve(local)
    wandb.resolve("ckpt:v0")  # the SDK's first-call set-up is not the lineage's cost
    return wandb, local.lineage("ckpt:v0")


def test_lineage_costs_the_same_requests_for_one_user_or_many(service, tmp_path) -> None:
    counts = {}
    for users in (1, 10, 50):
        wandb, direct = _checkpoint_used_by(service, tmp_path, users)
        start = len(service.emulator.requests)
        remote = wandb.lineage("ckpt:v0")
        counts[users] = len(sent(service, start))
        got = [remote.produced_by, *remote.used_by]
        want = [direct.produced_by, *direct.used_by]
        assert len(got) == users + 1
        assert [asdict(r) | {"url": ""} for r in got] == [asdict(r) for r in want]
        base = service.emulator.base_url
        assert [r.url for r in got] == [f"{base}/team/{r.project}/runs/{r.id}" for r in want]
    # The version itself, then its producer and users together.
    assert counts == {1: 2, 10: 2, 50: 2}, counts


def test_lineage_is_what_the_sdks_run_by_run_road_gives(service, tmp_path) -> None:
    wandb, _ = _checkpoint_used_by(service, tmp_path, 20)
    art = wandb.api.artifact(f"{MODEL_REGISTRY}/ckpt:v0")
    start = len(service.emulator.requests)
    assert wandb.lineage("ckpt:v0") == _sdk_lineage(art)
    # logged_by, used_by and a Run query for each of the 21 runs, against our two.
    assert len(sent(service, start)) == 2 + 2 + 21


def test_lineage_asks_for_the_version_then_one_query(service, shared) -> None:
    wandb, local = shared
    ref = "my-model:v3"
    start = len(service.emulator.requests)
    wandb.lineage(ref)
    assert [op for op, _ in sent(service, start)] == [
        "ArtifactMembershipByName",
        "ArtifactLineage",
    ]
    assert len(local.lineage(ref).used_by) > 1


# -- editing ----------------------------------------------------------------------------


def test_alias_moves_are_seen_by_both(service, fresh) -> None:
    wandb, local = fresh
    start = len(service.emulator.requests)
    moved = wandb.set_alias("my-model:v1", "production")
    assert "AddAliases" in [op for op, _ in sent(service, start)]
    assert moved.version == "v1" and "production" in moved.aliases
    assert local.resolve("my-model:production").version == "v1"
    assert "production" not in wandb.resolve("my-model:v3").aliases
    assert wandb.get_collection("my-model").aliases["production"] == "v1"

    start = len(service.emulator.requests)
    kept = wandb.remove_alias("my-model:v1", "production")
    assert "DeleteAliases" in [op for op, _ in sent(service, start)]
    assert "production" not in kept.aliases
    with pytest.raises(NotFoundError):
        local.resolve("my-model:production")


def test_alias_edits_that_cannot_be_made_send_nothing(service, fresh) -> None:
    wandb, _ = fresh
    start = len(service.emulator.requests)
    with pytest.raises(RegistryError, match="newest"):
        wandb.set_alias("my-model:v1", "latest")
    with pytest.raises(RegistryError, match="version number"):
        wandb.set_alias("my-model:v1", "v3")
    with pytest.raises(NotFoundError, match="no alias 'gone'"):
        wandb.remove_alias("my-model:v1", "gone")
    assert {op for op, _ in sent(service, start)} <= {"ArtifactMembershipByName"}


def test_update_version_is_seen_by_both(service, fresh) -> None:
    wandb, local = fresh
    start = len(service.emulator.requests)
    after = wandb.update_version(
        "mistral-7b-dpo:v2", description="checked", metadata={"score": 0.5}, tags=["a", "b"]
    )
    assert "UpdateArtifact" in [op for op, _ in sent(service, start)]
    direct = local.resolve("mistral-7b-dpo:v2")
    assert (direct.description, dict(direct.metadata), set(direct.tags)) == (
        "checked",
        {"score": 0.5},
        {"a", "b"},
    )
    assert same(after) == same(direct)


# -- downloads through the SDK's own code path ---------------------------------------


def test_download_through_the_sdk_gives_the_stored_bytes(service, shared, tmp_path) -> None:
    wandb, local = shared
    start = len(service.emulator.requests)
    artifact = wandb.api.artifact(f"{ORGANIZATION}/{MODEL_REGISTRY}/my-model:production")
    root = Path(artifact.download(str(tmp_path / "download"), skip_cache=True))
    entries = local.files("my-model:production")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        e.path for e in entries
    ]
    for entry in entries:
        data = (root / entry.path).read_bytes()
        assert data == local.object_path(entry).read_bytes()
        assert base64.b64encode(hashlib.md5(data).digest()).decode() == entry.digest
    ops = [op for op, _ in service.emulator.requests[start:]]
    assert "GetArtifactMembershipFileUrls" in ops
    assert ops.count("GET /files") == len(entries)
    stored = {(root / e.path).read_bytes() for e in entries}
    cached = [p for p in Path(os.environ["WANDB_CACHE_DIR"]).rglob("*") if p.is_file()]
    assert not [p for p in cached if p.read_bytes() in stored], "skip_cache still cached bytes"


def test_file_urls_serve_the_stored_bytes(service, shared) -> None:
    wandb, local = shared
    urls = wandb.file_urls("my-model-local:v3")
    assert urls == {}, "reference entries have no download URL"
    urls = wandb.file_urls("my-model:v3")
    entries = local.files("my-model:v3")
    assert sorted(urls) == [e.path for e in entries]
    for entry in entries:
        with urllib.request.urlopen(urls[entry.path], timeout=10) as response:
            assert response.read() == local.object_path(entry).read_bytes()


# -- errors, imports and the terminal -----------------------------------------------------


def test_missing_things_are_one_line_not_found(shared) -> None:
    wandb, _ = shared
    for call in (
        lambda: wandb.resolve("no-such-model:latest"),
        lambda: wandb.get_collection("no-such-model"),
        lambda: wandb.list_versions("no-such-model"),
        lambda: wandb.files("my-model:v99"),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert "\n" not in str(info.value)


def test_an_unreachable_server_is_one_line_without_the_key(service, tmp_path) -> None:
    paths = Paths(*(tmp_path / part for part in ("d", "c", "s", "cf")))
    settings = load_settings(
        # The key in the URL makes sure it would show if messages were not masked.
        {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": f"http://127.0.0.1:9/{FAKE_KEY}"},
        paths=paths,
    )
    with pytest.raises(RegistryError) as info:
        WandbRegistry(settings, timeout=2).resolve("my-model:latest")
    message = str(info.value)
    assert "\n" not in message and FAKE_KEY not in message
    assert message == (
        "connecting to W&B: cannot reach http://127.0.0.1:9/**** (127.0.0.1:9: connection "
        "refused); check WANDB_BASE_URL and the network"
    )


@contextmanager
def not_wandb_server(body: bytes, content_type: str) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request 200 with `body`: at most
    200 requests, for at most 120 s; its URL."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    server.timeout = 0.1
    stop = threading.Event()
    deadline = time.monotonic() + 120

    def serve() -> None:
        served = 0
        while not stop.is_set() and served < 200 and time.monotonic() < deadline:
            server.handle_request()
            served += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.server_close()


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (b"<html><body>Sign in</body></html>", "text/html", "with text/html"),
        (b"", "text/plain", "with an empty answer"),
    ],
)
def test_a_server_that_is_not_wandb_is_named_in_one_line(
    tmp_path: Path, body: bytes, content_type: str, said: str
) -> None:
    paths = Paths(*(tmp_path / part for part in ("d", "c", "s", "cf")))
    with not_wandb_server(body, content_type) as url:
        settings = load_settings({"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": url}, paths=paths)
        with pytest.raises(RegistryError) as info:
            WandbRegistry(settings, timeout=5).list_collections()
    message = str(info.value)
    assert message == (
        f"connecting to W&B: {url} answers HTTP 200 {said}, not W&B's GraphQL API; "
        "check WANDB_BASE_URL (the W&B server's address, e.g. https://api.wandb.ai)"
    )


def test_a_project_without_models_adds_no_collections(service, shared) -> None:
    wandb, _ = shared
    settings = replace(service.settings, wandb_project="no-such-project")
    names = [c.name for c in WandbRegistry(settings).list_collections()]
    assert names == [c.name for c in wandb.list_collections()]


def test_a_missing_key_is_named() -> None:
    settings = load_settings({}, paths=Paths(*(Path("/nonexistent"),) * 4))
    with pytest.raises(RegistryError, match="WANDB_API_KEY"):
        WandbRegistry(settings)


CHILD = """
import json, os, sys
from tui.services.registry.wandb import WandbRegistry, _sdk_lineage
from tui.services.settings import load_settings
assert "wandb" not in sys.modules, "importing the backend imported wandb"
backend = WandbRegistry(load_settings())
backend.resolve("my-model:production")
backend.lineage("my-model:v3")
def parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:  # the process ended while we looked
        return None
me = str(os.getpid())
core = [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == me]
print(json.dumps({p: [os.readlink(f"/proc/{p}/fd/{fd}") for fd in (0, 1, 2)] for p in core}))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_wandb_core_gets_dev_null_not_the_terminal(service, shared, tmp_path) -> None:
    env = {
        **os.environ,
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": service.emulator.base_url,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "WANDB_DIR": str(tmp_path / "wandb"),
        "PYTHONPATH": str(REPO),
    }
    # Without WANDB_SERVICE the child starts its own wandb-core instead of using ours.
    for name in ("WANDB_SILENT", "WANDB_SERVICE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    children = json.loads(done.stdout)  # nothing else reached our stdout either
    assert children, "wandb-core was not started as a child"
    assert all(fds == ["/dev/null"] * 3 for fds in children.values()), children

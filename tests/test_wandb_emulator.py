"""The W&B API emulator itself: GraphQL execution, validation, paging, files, lifetime.

Requests are the SDK's own query documents posted the way `wandb-core` posts them
(an empty operationName), so these cases need no `wandb.Api` and run fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from wandb.apis._generated import GET_DEFAULT_ENTITY_GQL
from wandb.sdk.artifacts._generated import (
    ADD_ALIASES_GQL,
    ARTIFACT_MEMBERSHIP_BY_NAME_GQL,
    FETCH_ARTIFACT_MANIFEST_GQL,
    FETCH_REGISTRIES_GQL,
    GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL,
    PROJECT_ARTIFACT_COLLECTIONS_GQL,
    PROJECT_ARTIFACTS_GQL,
)

from tests.wandb_emulator import MODEL_REGISTRY, WandbEmulator, operation_name
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import RunInfo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny`: three versions of one file, `production` on v1, a run that made v1."""
    root = tmp_path_factory.mktemp("emulator") / "registry"
    registry = LocalRegistry(root)
    source = root.parent / "weights.bin"
    for index in range(3):
        source.write_bytes(bytes([index]) * (1000 + index))
        registry.add_version(
            "tiny", source, aliases=["production"] if index == 1 else [], metadata={"i": index}
        )
    registry.add_lineage("tiny:v1", produced_by=RunInfo(id="r1", project="train", job_type="sft"))
    return root


@pytest.fixture
def emulator(registry_dir: Path, tmp_path: Path) -> Any:
    """A running emulator over a private copy of the tiny registry."""
    import shutil

    root = tmp_path / "registry"
    shutil.copytree(registry_dir, root)
    with WandbEmulator(LocalRegistry(root), max_seconds=60) as em:
        yield em


def post(em: WandbEmulator, query: str, variables: dict | None = None) -> tuple[int, dict]:
    """POST one GraphQL request as wandb-core does; (status, JSON body)."""
    body = json.dumps({"query": query, "variables": variables or {}, "operationName": ""})
    request = urllib.request.Request(
        f"{em.base_url}/graphql",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


MEMBERSHIP = {"entity": "team", "project": MODEL_REGISTRY, "name": "tiny:production"}


def test_operation_names_come_from_the_query_when_not_sent() -> None:
    assert operation_name({"query": GET_DEFAULT_ENTITY_GQL, "operationName": ""}) == (
        "GetDefaultEntity"
    )
    assert operation_name({"query": "mutation AddAliases($x: Int) { a }"}) == "AddAliases"
    assert operation_name({"operationName": "Viewer", "query": "query Other { a }"}) == "Viewer"


def test_answers_with_exactly_the_selected_fields(emulator: WandbEmulator) -> None:
    status, body = post(emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, MEMBERSHIP)
    assert status == 200, body
    membership = body["data"]["project"]["artifactCollectionMembership"]
    assert membership["versionIndex"] == 1
    assert [a["alias"] for a in membership["aliases"]] == ["production"]
    artifact = membership["artifact"]
    # $includeAliases defaults to false in this query, so @include drops the field.
    assert "aliases" not in artifact
    assert json.loads(artifact["metadata"]) == {"i": 1}
    assert artifact["__typename"] == "Artifact" and artifact["digestAlgorithm"] == "MANIFEST_MD5"
    status, body = post(
        emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, {**MEMBERSHIP, "includeAliases": True}
    )
    assert [
        a["alias"]
        for a in body["data"]["project"]["artifactCollectionMembership"]["artifact"]["aliases"]
    ] == ["production"]
    assert emulator.errors == []


def test_field_aliases_rename_the_answer(emulator: WandbEmulator) -> None:
    status, body = post(
        emulator, PROJECT_ARTIFACT_COLLECTIONS_GQL, {"entity": "team", "project": MODEL_REGISTRY}
    )
    assert status == 200, body
    [edge] = body["data"]["project"]["artifactCollections"]["edges"]
    assert edge["node"]["type"] == {"name": "model"}  # `type: defaultArtifactType`
    assert "defaultArtifactType" not in edge["node"]


def test_paging_follows_first_and_after(emulator: WandbEmulator) -> None:
    variables = {
        "entity": "team",
        "project": MODEL_REGISTRY,
        "type": "model",
        "collection": "tiny",
        "perPage": 2,
    }
    seen, cursor, pages = [], None, 0
    while pages < 5:
        status, body = post(emulator, PROJECT_ARTIFACTS_GQL, {**variables, "cursor": cursor})
        assert status == 200, body
        conn = body["data"]["project"]["artifactType"]["artifactCollection"]["artifacts"]
        assert conn["totalCount"] == 3
        seen += [edge["version"] for edge in conn["edges"]]
        pages += 1
        if not conn["pageInfo"]["hasNextPage"]:
            break
        cursor = conn["pageInfo"]["endCursor"]
    assert (seen, pages) == (["v2", "v1", "v0"], 2)


def test_filters_are_applied(emulator: WandbEmulator) -> None:
    def registries(filters: dict) -> list[str]:
        variables = {"organization": "team-org", "filters": json.dumps(filters)}
        status, body = post(emulator, FETCH_REGISTRIES_GQL, variables)
        assert status == 200, body
        edges = body["data"]["organization"]["orgEntity"]["projects"]["edges"]
        return [e["node"]["name"] for e in edges]

    assert registries({"name": {"$regex": "model"}}) == [MODEL_REGISTRY]
    assert registries({"name": {"$regex": "dataset"}}) == []
    assert registries({"$or": [{"name": "x"}, {"name": MODEL_REGISTRY}]}) == [MODEL_REGISTRY]


def test_a_response_of_the_wrong_shape_fails_loudly(
    emulator: WandbEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = emulator.graph.artifact

    def wrong(version: Any) -> dict:
        return {**original(version), "size": "large"}

    monkeypatch.setattr(emulator.graph, "artifact", wrong)
    status, body = post(emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, MEMBERSHIP)
    assert status == 500
    [error] = emulator.errors
    assert error.startswith("ArtifactMembershipByName: ValidationError") and "size" in error
    assert "errors" in body and "data" not in body


def test_a_field_the_emulator_lacks_fails_loudly(
    emulator: WandbEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = emulator.graph.artifact
    monkeypatch.setattr(
        emulator.graph,
        "artifact",
        lambda v: {k: x for k, x in original(v).items() if k != "digest"},
    )
    status, _ = post(emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, MEMBERSHIP)
    assert status == 500
    assert emulator.errors == [
        "ArtifactMembershipByName: GraphQLFailure: the emulator has no field Artifact.digest"
    ]


def test_unknown_operations_fail_loudly(emulator: WandbEmulator) -> None:
    status, _ = post(emulator, "query SomethingNew { viewer { id } }")
    assert status == 500
    assert emulator.errors == ["unknown operation 'SomethingNew'"]


def test_manifest_and_files_are_served_from_the_object_store(
    emulator: WandbEmulator,
) -> None:
    registry = emulator.graph.registry
    version = registry.resolve("tiny:production")
    artifact_id = post(emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, MEMBERSHIP)[1]["data"]["project"][
        "artifactCollectionMembership"
    ]["artifact"]["id"]
    _, body = post(emulator, FETCH_ARTIFACT_MANIFEST_GQL, {"id": artifact_id})
    url = body["data"]["artifact"]["currentManifest"]["file"]["directUrl"]
    status, raw = get(url)
    assert status == 200
    manifest = json.loads(raw)
    [entry] = registry.files(version.ref())
    assert manifest["contents"] == {entry.path: {"digest": entry.digest, "size": entry.size}}

    variables = {k: v for k, v in MEMBERSHIP.items() if k != "name"}
    variables |= {"collection": "tiny", "alias": "v1"}
    _, body = post(emulator, GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL, variables)
    files = body["data"]["project"]["artifactCollection"]["artifactMembership"]["files"]
    [node] = [e["node"] for e in files["edges"]]
    assert node["name"] == entry.path
    assert get(node["directUrl"]) == (200, registry.object_path(entry).read_bytes())

    assert emulator.errors == []
    assert get(f"{emulator.base_url}/files/tiny/v1/no-such-file")[0] == 404
    assert get(f"{emulator.base_url}/elsewhere")[0] == 404
    assert emulator.errors == ["GET of unknown path /elsewhere"]


def test_sdk_metrics_get_an_empty_200(emulator: WandbEmulator) -> None:
    request = urllib.request.Request(
        f"{emulator.base_url}/sdk/otel/v1/metrics", data=b"\n\x00", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert (response.status, response.read()) == (200, b"")
    assert emulator.errors == []


def test_mutations_change_the_backing_registry(emulator: WandbEmulator) -> None:
    artifact_id = post(
        emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, {**MEMBERSHIP, "name": "tiny:v0"}
    )[1]["data"]["project"]["artifactCollectionMembership"]["artifact"]["id"]
    target = {"entityName": "team", "projectName": MODEL_REGISTRY, "artifactCollectionName": "tiny"}
    variables = {
        "input": {"artifactID": artifact_id, "aliases": [{**target, "alias": "production"}]}
    }
    status, body = post(emulator, ADD_ALIASES_GQL, variables)
    assert (status, body) == (200, {"data": {"result": {"success": True}}})
    assert emulator.graph.registry.resolve("tiny:production").version == "v0"


def test_stops_by_itself(registry_dir: Path) -> None:
    em = WandbEmulator(LocalRegistry(registry_dir), max_seconds=0.3).start()
    try:
        deadline = time.monotonic() + 10
        while em._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not em._thread.is_alive()
    finally:
        em.stop()


def test_runs_from_the_command_line(registry_dir: Path) -> None:
    command = [sys.executable, "-m", "tests.wandb_emulator", "--max-seconds", "2"]
    proc = subprocess.Popen(
        [*command, "--registry", str(registry_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        body = json.dumps({"query": GET_DEFAULT_ENTITY_GQL, "operationName": ""}).encode()
        with urllib.request.urlopen(f"{url}/graphql", data=body, timeout=10) as response:
            assert json.loads(response.read())["data"]["viewer"]["entity"] == "team"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""The W&B API emulator itself: GraphQL execution, validation, paging, files, lifetime.

Requests are the SDK's own query documents posted the way `wandb-core` posts them
(an empty operationName), so these cases need no `wandb.Api` and run fast.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import signal
import socket
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

from tests.wandb_emulator import (
    CHECKPOINTS_REGISTRY,
    FAKE_KEY,
    MODEL_REGISTRY,
    ORG_ENTITY,
    ORGANIZATION,
    PROFILES,
    WandbEmulator,
    check_document,
    operation_name,
    served_schema,
)
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


def auth(key: str = FAKE_KEY) -> dict[str, str]:
    """The header wandb-core sends with every request to the W&B host."""
    return {"Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode()}


def post(
    em: WandbEmulator, query: str, variables: dict | None = None, *, key: str | None = FAKE_KEY
) -> tuple[int, dict]:
    """POST one GraphQL request as wandb-core does; (status, JSON body)."""
    body = json.dumps({"query": query, "variables": variables or {}, "operationName": ""})
    request = urllib.request.Request(
        f"{em.base_url}/graphql",
        data=body.encode(),
        headers={"Content-Type": "application/json", **(auth(key) if key else {})},
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


MEMBERSHIP = {"entity": ORG_ENTITY, "project": MODEL_REGISTRY, "name": "tiny:production"}


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
        emulator,
        PROJECT_ARTIFACT_COLLECTIONS_GQL,
        {"entity": ORG_ENTITY, "project": MODEL_REGISTRY},
    )
    assert status == 200, body
    [edge] = body["data"]["project"]["artifactCollections"]["edges"]
    assert edge["node"]["type"] == {"name": "model"}  # `type: defaultArtifactType`
    assert "defaultArtifactType" not in edge["node"]


def test_paging_follows_first_and_after(emulator: WandbEmulator) -> None:
    variables = {
        "entity": ORG_ENTITY,
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
        variables = {"organization": ORGANIZATION, "filters": json.dumps(filters)}
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


def test_the_same_name_in_the_checkpoints_registry_is_another_collection(
    emulator: WandbEmulator, tmp_path: Path
) -> None:
    """`tiny` in `wandb-registry-checkpoints` has its own versions, ids, manifest and
    file URLs, and listing registries and their collections names both registries."""
    checkpoints = LocalRegistry(tmp_path / "checkpoints")
    (tmp_path / "step.bin").write_bytes(b"checkpoint")
    checkpoints.add_version("tiny", tmp_path / "step.bin")
    emulator.use(emulator.graph.registry, checkpoints)
    places = {}
    for project in (MODEL_REGISTRY, CHECKPOINTS_REGISTRY):
        membership = ok(
            emulator,
            ARTIFACT_MEMBERSHIP_BY_NAME_GQL,
            {**MEMBERSHIP, "project": project, "name": "tiny:v0"},
        )["project"]["artifactCollectionMembership"]
        variables = {"entity": ORG_ENTITY, "project": project, "collection": "tiny", "alias": "v0"}
        files = ok(emulator, GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL, variables)["project"][
            "artifactCollection"
        ]["artifactMembership"]["files"]["edges"]
        [url] = [e["node"]["directUrl"] for e in files]
        places[project] = (membership["artifact"]["id"], get(url)[1])
    (model_id, model_bytes), (step_id, step_bytes) = places.values()
    assert model_id != step_id and step_bytes == b"checkpoint" != model_bytes
    manifest = ok(emulator, FETCH_ARTIFACT_MANIFEST_GQL, {"id": step_id})
    status, raw = get(manifest["artifact"]["currentManifest"]["file"]["directUrl"])
    assert status == 200 and list(json.loads(raw)["contents"]) == ["step.bin"]
    registries = ok(emulator, FETCH_REGISTRIES_GQL, {"organization": ORGANIZATION})
    names = [
        e["node"]["name"] for e in registries["organization"]["orgEntity"]["projects"]["edges"]
    ]
    assert names == [MODEL_REGISTRY, CHECKPOINTS_REGISTRY]
    assert emulator.errors == []


@pytest.mark.parametrize("key", [None, "f" * 40])
def test_a_request_without_the_api_key_gets_401(emulator: WandbEmulator, key) -> None:
    status, body = post(emulator, GET_DEFAULT_ENTITY_GQL, key=key)
    assert status == 401 and "data" not in body
    assert post(emulator, GET_DEFAULT_ENTITY_GQL)[0] == 200


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
    target = {
        "entityName": ORG_ENTITY,
        "projectName": MODEL_REGISTRY,
        "artifactCollectionName": "tiny",
    }
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
    # Stopped by SIGINT once checked: a short --max-seconds could end it while its first
    # request (which imports the SDK's models) is still being answered on a busy machine.
    command = [sys.executable, "-m", "tests.wandb_emulator", "--max-seconds", "120"]
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
        said = "".join(proc.stdout.readline() for _ in range(3))  # type: ignore[union-attr]
        assert "organization: acme (org entity acme-org)" in said
        assert "wandb-registry-model, wandb-registry-checkpoints of acme-org" in said
        assert "team/pretraining" in said and "team/checkpointing" in said
        body = json.dumps({"query": GET_DEFAULT_ENTITY_GQL, "operationName": ""}).encode()
        request = urllib.request.Request(f"{url}/graphql", data=body, headers=auth())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["data"]["viewer"]["entity"] == "team"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- uploads: the operations wandb-core sends, as it sends them (captured, wandb 0.31) ---

UPSERT_BUCKET = """
mutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String,
  $groupName: String, $config: JSONString, $jobType: String, $tags: [String!]) {
  upsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,
    entityName:$entity,config:$config,jobType:$jobType,tags:$tags}) {
    bucket { id name displayName description config sweepName
      project { id name entity { id name } } historyLineCount }
    inserted
  }
}
"""
CREATE_ARTIFACT = """
mutation CreateArtifact ($input: CreateArtifactInput!) {
  createArtifact(input: $input) { ... CreatedArtifact }
}
fragment CreatedArtifact on CreateArtifactPayload {
  artifact { id state artifactSequence { latestArtifact { id } } }
}
"""
CREATE_MANIFEST = """
mutation CreateArtifactManifest ($artifactID: ID!, $baseArtifactID: ID, $name: String!,
  $digest: String!, $entityName: String!, $projectName: String!, $runName: String!,
  $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) {
  createArtifactManifest(input: {artifactID:$artifactID,baseArtifactID:$baseArtifactID,
    name:$name,digest:$digest,entityName:$entityName,projectName:$projectName,
    runName:$runName,type:$manifestType}) {
    artifactManifest { id file { id uploadUrl @include(if: $includeUpload)
      uploadHeaders @include(if: $includeUpload) } }
  }
}
"""
CREATE_FILES = """
mutation CreateArtifactFiles ($input: CreateArtifactFilesInput!) {
  createArtifactFiles(input: $input) { files { edges { node { storagePath uploadUrl
    uploadHeaders uploadMultipartUrls { uploadID uploadUrlParts { partNumber uploadUrl } }
    artifact { id } } } } }
}
"""
COMMIT = """
mutation CommitArtifact ($artifactID: ID!) {
  commitArtifact(input: {artifactID:$artifactID}) { artifact { id digest } }
}
"""
USE = """
mutation UseArtifact($entityName: String!, $projectName: String!, $runName: String!,
  $artifactID: ID!) {
  useArtifact(input: {entityName: $entityName, projectName: $projectName,
    runName: $runName, artifactID: $artifactID}) {
    artifact { id digest description state createdAt metadata }
  }
}
"""
ARTIFACT_USED_BY = """
query ArtifactUsedBy($id: ID!) {
  artifact(id: $id) { usedBy { edges { node { __typename id name
    project { id internalId name entity { name } } } } } }
}
"""


def ok(em: WandbEmulator, query: str, variables: dict) -> dict:
    status, body = post(em, query, variables)
    assert status == 200, body
    return body["data"]


def put(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def upload(em: WandbEmulator, content: bytes, *, run: str = "r1", alias: str = "H-1") -> str:
    """What wandb-core sends for one run logging one artifact of one file; its id."""
    ok(em, UPSERT_BUCKET, {"name": run, "project": "evals", "entity": "team", "groupName": "m:v3"})
    md5 = base64.b64encode(hashlib.md5(content).digest()).decode()
    created = ok(
        em,
        CREATE_ARTIFACT,
        {
            "input": {
                "entityName": "team",
                "projectName": "evals",
                "runName": run,
                "artifactCollectionName": "results",
                "artifactTypeName": "eval",
                "digest": hashlib.md5(md5.encode()).hexdigest(),
                "aliases": [{"alias": alias, "artifactCollectionName": "results"}],
            }
        },
    )["createArtifact"]["artifact"]
    artifact_id = created["id"]
    manifest = {"artifactID": artifact_id, "name": "wandb_manifest.json", "digest": ""}
    manifest |= {"entityName": "team", "projectName": "evals", "runName": run}
    manifest |= {"manifestType": "FULL", "includeUpload": True}
    manifest_file = ok(em, CREATE_MANIFEST, manifest)["createArtifactManifest"]
    files = {"artifactID": artifact_id, "name": "scores.json", "md5": md5, "digest": md5}
    [edge] = ok(em, CREATE_FILES, {"input": {"artifactFiles": [files]}})["createArtifactFiles"][
        "files"
    ]["edges"]
    if edge["node"]["uploadUrl"]:
        assert put(edge["node"]["uploadUrl"], content) == 200
    body = {"version": 1, "storagePolicy": "wandb-storage-policy-v1", "storagePolicyConfig": {}}
    body["contents"] = {"scores.json": {"digest": md5, "size": len(content)}}
    put(manifest_file["artifactManifest"]["file"]["uploadUrl"], json.dumps(body).encode())
    ok(em, COMMIT, {"artifactID": artifact_id})
    return artifact_id


def test_the_file_stream_writes_history_lines_at_their_offsets(emulator: WandbEmulator) -> None:
    """As wandb-core counts on: a chunk at the line count appends, one at an earlier
    line replaces it, one past the end (a gap) is refused as a client fault."""

    def post(offset: int, *lines: str) -> int:
        stream = {"files": {"wandb-history.jsonl": {"offset": offset, "content": list(lines)}}}
        request = urllib.request.Request(
            f"{emulator.base_url}/files/team/evals/r2/file_stream",
            data=json.dumps(stream).encode(),
            headers=auth(),
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as refused:
            return refused.code

    assert post(0, '{"_step": 0}') == 200
    assert post(1, '{"_step": 1}') == 200
    assert post(1, '{"_step": 1, "a": 2}') == 200
    assert post(3, '{"_step": 3}') == 400
    run = emulator.uploads.find_run("team", "evals", "r2")
    assert run is not None
    assert run.history == {0: '{"_step": 0}', 1: '{"_step": 1, "a": 2}'}
    assert [e for e in emulator.take_errors() if "file_stream" in e] == [
        "file_stream of run r2: wandb-history.jsonl chunk at line 3; the file has 2"
    ]


def test_an_upload_is_stored_and_read_back_with_the_sdk_queries(emulator: WandbEmulator) -> None:
    artifact_id = upload(emulator, b'{"acc": 0.5}')
    stream = {"files": {"wandb-history.jsonl": {"offset": 0, "content": ['{"acc": 0.5}']}}}
    stream["files"]["wandb-summary.json"] = {"offset": 0, "content": ['{"acc": 0.5}']}
    request = urllib.request.Request(
        f"{emulator.base_url}/files/team/evals/r1/file_stream",
        data=json.dumps({**stream, "complete": True, "exitcode": 0}).encode(),
        headers=auth(),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    [run] = emulator.uploads.runs.values()
    assert (run.group, run.state, run.summary, len(run.history)) == (
        "m:v3",
        "finished",
        {"acc": 0.5},
        1,
    )

    found = ok(
        emulator,
        ARTIFACT_MEMBERSHIP_BY_NAME_GQL,
        {"entity": "team", "project": "evals", "name": "results:H-1", "includeAliases": True},
    )
    artifact = found["project"]["artifactCollectionMembership"]["artifact"]
    assert artifact["id"] == artifact_id and artifact["state"] == "COMMITTED"
    assert sorted(a["alias"] for a in artifact["aliases"]) == ["H-1", "latest"]
    variables = {"entity": "team", "project": "evals", "collection": "results", "alias": "H-1"}
    files = ok(emulator, GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL, variables)["project"][
        "artifactCollection"
    ]["artifactMembership"]["files"]["edges"]
    assert get(files[0]["node"]["directUrl"]) == (200, b'{"acc": 0.5}')
    assert emulator.errors == []


def test_the_same_content_again_is_the_same_version_and_is_not_sent_twice(
    emulator: WandbEmulator,
) -> None:
    first = upload(emulator, b"same bytes")
    puts = emulator.operations.count("PUT /storage/artifact")
    assert upload(emulator, b"same bytes", alias="H-2") == first  # a resumed upload
    assert emulator.operations.count("PUT /storage/artifact") == puts
    second = upload(emulator, b"other bytes", alias="H-2")
    assert second != first
    aliases = {a.version: sorted(a.aliases) for a in emulator.uploads.artifacts}
    assert aliases == {"v0": ["H-1"], "v1": ["H-2", "latest"]}  # aliases move
    assert emulator.errors == []


def test_use_artifact_of_a_registry_version_shows_in_used_by(emulator: WandbEmulator) -> None:
    registry_id = post(emulator, ARTIFACT_MEMBERSHIP_BY_NAME_GQL, MEMBERSHIP)[1]["data"]["project"][
        "artifactCollectionMembership"
    ]["artifact"]["id"]
    ok(emulator, UPSERT_BUCKET, {"name": "eval1", "project": "evals", "entity": "team"})
    use = {"entityName": "team", "projectName": "evals", "runName": "eval1"}
    ok(emulator, USE, {**use, "artifactID": registry_id})
    ok(emulator, USE, {**use, "artifactID": registry_id})  # a retry adds no second edge
    edges = ok(emulator, ARTIFACT_USED_BY, {"id": registry_id})["artifact"]["usedBy"]["edges"]
    assert [e["node"]["name"] for e in edges] == ["eval1"]
    assert emulator.errors == []


def test_faults_answer_500_drop_the_connection_or_hold_then_pass(
    emulator: WandbEmulator,
) -> None:
    variables = {"name": "r1", "project": "evals", "entity": "team"}
    emulator.faults.add("UpsertBucket", 1)
    emulator.faults.add("UpsertBucket", 1, drop=True)
    emulator.faults.add("UpsertBucket", 1, delay=0.3)
    assert post(emulator, UPSERT_BUCKET, variables)[0] == 500
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        post(emulator, UPSERT_BUCKET, variables)
    started = time.monotonic()
    assert post(emulator, UPSERT_BUCKET, variables)[0] == 200
    assert time.monotonic() - started >= 0.3
    assert post(emulator, UPSERT_BUCKET, variables)[0] == 200
    assert emulator.faults.pending == 0
    assert emulator.faults.hits == ["500 UpsertBucket", "drop UpsertBucket", "delay UpsertBucket"]
    assert emulator.errors == []


def test_an_upload_cut_short_stores_nothing(emulator: WandbEmulator) -> None:
    url = emulator.uploads.upload_url("artifact", "digest")
    host, port = emulator.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        path = url.removeprefix(emulator.base_url)
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        sock.sendall(b"x" * 10)
    deadline = time.monotonic() + 5
    while emulator.operations.count("PUT /storage/artifact") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert emulator.uploads.stored_size("artifact", "digest") is None
    assert put(url, b"y" * 1000) == 200
    assert emulator.uploads.stored_size("artifact", "digest") == 1000


def test_runs_of_a_project_are_listed_and_filtered_like_the_sdk_asks(
    emulator: WandbEmulator,
) -> None:
    from wandb.apis.public.runs import _create_runs_query

    for name, group, x in (("r1", "m:v3", 1), ("r2", "m:v4", 2), ("r3", "m:v3", 3)):
        config = json.dumps({"x": {"value": x}})
        ok(
            emulator,
            UPSERT_BUCKET,
            {
                "name": name,
                "project": "evals",
                "entity": "team",
                "groupName": group,
                "config": config,
            },
        )

    def runs(filters: dict) -> list[tuple[str, int]]:
        variables = {"entity": "team", "project": "evals", "filters": json.dumps(filters)}
        edges = ok(emulator, _create_runs_query(lazy=False), variables)["project"]["runs"]["edges"]
        return [(e["node"]["name"], json.loads(e["node"]["config"])["x"]["value"]) for e in edges]

    assert runs({}) == [("r1", 1), ("r2", 2), ("r3", 3)]
    assert runs({"group": "m:v3"}) == [("r1", 1), ("r3", 3)]
    assert runs({"config.x.value": {"$in": [2, 3]}}) == [("r2", 2), ("r3", 3)]
    assert emulator.errors == []


def test_the_backends_query_of_runs_outputs_is_answered_and_checked(
    emulator: WandbEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.services.registry.wandb import _outputs_query

    runs = {"e0": "team", "p0": "train", "r0": "r1", "c0": None}
    runs |= {"e1": "team", "p1": "nowhere", "r1": "r9", "c1": None}
    status, body = post(emulator, _outputs_query(2), runs)
    assert status == 200, body
    made = body["data"]["r0"]["run"]["outputArtifacts"]
    [node] = [e["node"] for e in made["edges"]]
    assert (node["artifactSequence"]["name"], node["versionIndex"]) == ("tiny", 1)
    [member] = [e["node"] for e in node["artifactMemberships"]["edges"]]
    assert member["artifactCollection"]["__typename"] == "ArtifactPortfolio"
    assert member["artifactCollection"]["project"]["name"] == MODEL_REGISTRY
    assert body["data"]["r1"] is None and emulator.errors == []
    # A membership the SDK's FetchLinkedArtifacts model would reject fails the request.
    original = emulator.graph.membership_of
    monkeypatch.setattr(
        emulator.graph, "membership_of", lambda v: {**original(v), "createdAt": None}
    )
    status, _ = post(emulator, _outputs_query(1), runs)
    assert status == 500
    [error] = emulator.errors
    assert error.startswith("RunsOutputArtifacts: ValidationError") and "created" in error


def test_the_backends_query_of_many_lineages_is_answered_and_checked(
    emulator: WandbEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.services.registry.wandb import _lineages_query

    names = {"e0": ORG_ENTITY, "p0": MODEL_REGISTRY, "n0": "tiny:v1"}
    names |= {"e1": ORG_ENTITY, "p1": MODEL_REGISTRY, "n1": "tiny:v7"}
    status, body = post(emulator, _lineages_query(2), names)
    assert status == 200, body
    made = body["data"]["v0"]["artifactCollectionMembership"]["artifact"]["createdBy"]
    assert (made["name"], made["jobType"], made["project"]["name"]) == ("r1", "sft", "train")
    assert body["data"]["v1"]["artifactCollectionMembership"] is None
    assert emulator.errors == []
    # A run the SDK's ArtifactCreatedBy model would reject fails the request.
    original = emulator.graph.run_info
    monkeypatch.setattr(emulator.graph, "run_info", lambda run: {**original(run), "name": 7})
    status, _ = post(emulator, _lineages_query(1), names)
    assert status == 500
    [error] = emulator.errors
    assert error.startswith("ArtifactLineages: ValidationError")


# --- validation, profiles and signed storage URLs -----------------------------------------


def test_an_invalid_document_gets_errors_and_no_data(emulator: WandbEmulator) -> None:
    status, body = post(emulator, "query GetDefaultEntity { viewer { entity ")
    assert status == 400 and body["errors"] and "data" not in body
    assert [e for e in emulator.take_errors() if "invalid document" in e]


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (
            "query IsProjectReadOnly($entity: String!, $project: String!) {"
            " project(entity: $entity, name: $project) { readOnly } }",
            {"entity": "team", "project": "training"},
            "Unknown argument 'entity' on field 'Query.project'.",
        ),
        (
            "query ArtifactByID($id: String!) { artifact(id: $id) { id } }",
            {"id": "QXJ0aWZhY3Q6dGlueTp2MQ=="},
            "Variable '$id' of type 'String!' used in position expecting type 'ID!'.",
        ),
        (
            "query ArtifactCreatedBy($id: ID!) { artifact(id: $id) { createdBy { name } } }",
            {"id": "QXJ0aWZhY3Q6dGlueTp2MQ=="},
            "Cannot query field 'name' on type 'Initiator'."
            " Did you mean to use an inline fragment on 'Run' or 'User'?",
        ),
        (
            "query GetDefaultEntity { viewer { entity shoeSize } }",
            None,
            "Cannot query field 'shoeSize' on type 'User'.",
        ),
    ],
    ids=["unknown-argument", "wrong-variable-type", "union-without-fragment", "unknown-field"],
)
def test_a_document_that_does_not_validate_against_the_schema_gets_errors(
    emulator: WandbEmulator, query: str, variables: dict | None, message: str
) -> None:
    """Answered as a GraphQL server answers (errors, no data) and recorded, so the test
    whose client sent it fails."""
    status, body = post(emulator, query, variables)
    assert (status, body) == (400, {"errors": [{"message": message}]})
    [error] = emulator.take_errors()
    assert error.endswith(f"invalid document: {message}")


def test_the_served_schema_is_parsed_once_per_profile_and_documents_checked_once() -> None:
    assert served_schema("saas") is served_schema("saas")
    assert served_schema("server").get_type("Artifact").fields.keys() == (
        served_schema("saas").get_type("Artifact").fields.keys() - {"digestAlgorithm"}
    )
    query = "query GetDefaultEntity { viewer { id entity } }"
    assert check_document(query, "saas") is check_document(query, "saas")


def test_the_server_profile_lacks_the_digest_algorithm_field(registry_dir: Path) -> None:
    query = "query ArtifactByID($id: ID!) { artifact(id: $id) { id digestAlgorithm } }"
    with WandbEmulator(LocalRegistry(registry_dir), max_seconds=60, profile="server") as em:
        status, body = post(em, query, {"id": "QXJ0aWZhY3Q6dGlueTp2MQ=="})
        assert status == 400 and "data" not in body
        assert body["errors"][0]["message"] == (
            "Cannot query field 'digestAlgorithm' on type 'Artifact'."
        )
        _, features = post(
            em, "query ServerFeaturesQuery { serverInfo { features { name isEnabled } } }"
        )
        names = {f["name"] for f in features["data"]["serverInfo"]["features"]}
        assert "ARTIFACT_DIGEST_ALGORITHM" not in names and "ARTIFACT_TAGS" in names
        assert [e for e in em.take_errors() if "invalid document" in e]


def test_storage_urls_expire_honour_range_and_refuse_credentials(registry_dir: Path) -> None:
    registry = LocalRegistry(registry_dir)
    [entry] = registry.files("tiny:v1")
    data = registry.object_path(entry).read_bytes()
    with WandbEmulator(registry, max_seconds=60, url_ttl=1) as em:
        url = em.storage.sign("tiny", "v1", entry.path)
        assert not url.startswith(em.base_url)  # another host: another port
        ranged = urllib.request.Request(url, headers={"Range": "bytes=3-"})
        with urllib.request.urlopen(ranged, timeout=10) as response:
            assert (response.status, response.read()) == (206, data[3:])
        with_key = urllib.request.Request(url, headers=auth())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(with_key, timeout=10)
        assert refused.value.code == 400 and b"Only one auth mechanism" in refused.value.read()
        assert get(url.replace("Signature=", "Signature=0"))[0] == 403
        time.sleep(2.1)  # past the URL's lifetime
        status, body = get(url)
        assert status == 400 and b"<Code>ExpiredToken</Code>" in body
        assert em.storage.expired_count() == 1


def test_a_file_url_on_the_wandb_host_redirects_to_storage(emulator: WandbEmulator) -> None:
    registry = emulator.graph.registry
    [entry] = registry.files("tiny:v1")
    status, data = get(f"{emulator.base_url}/files/tiny/v1/{entry.path}")
    assert (status, data) == (200, registry.object_path(entry).read_bytes())
    ops = emulator.operations
    assert ops.index("GET /files redirect") < ops.index("GET /files")


def test_the_saas_profile_advertises_every_feature_the_sdk_knows() -> None:
    from wandb.proto.wandb_internal_pb2 import ServerFeature

    known = set(ServerFeature.keys()) - {"SERVER_FEATURE_UNSPECIFIED"}
    assert set(PROFILES["saas"]) == known
    assert "ARTIFACT_DIGEST_ALGORITHM" not in PROFILES["server"]

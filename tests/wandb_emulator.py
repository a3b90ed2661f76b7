"""A W&B API emulator: a real HTTP server that the real `wandb.Api` talks to.

It serves the content of a `LocalRegistry` as the model registry of one organisation,
modelled as W&B's cloud has it: organisation `acme` with an org entity of its own
(`acme-org`, owner of the registry project `wandb-registry-model`), distinct from the
team entity `team` and the viewer `alice`. Each registry version is a link to a source
artifact logged in a team project (`team/training`, or `team/pretraining`, read-only
for the viewer); `production` of `mistral-7b-dpo` is a protected alias. A second
`LocalRegistry` (`checkpoints=`) is served as the registry `wandb-registry-checkpoints`,
its versions linked from `team/checkpointing`; its ids and file URLs name the registry,
so `my-model` in both registries is two collections. Requests need the API key (401
otherwise). Every document is validated against the emulator's own
schema, `tests/wandb_emulator.graphql` (the part of W&B's API it serves; the `server`
profile lacks the feature-gated fields): one that does not validate (unknown field or
argument, a variable of the wrong type, a union's field without a fragment) gets 400
with `errors` and no `data`, and is recorded in `errors`. With the environment variable
`WANDB_EMULATOR_DOCUMENTS=FILE` every document received is appended to FILE as a JSON
line, to see what clients send when the schema must grow. GraphQL requests are
executed against a small graph of resolvers (field selection, aliases, fragments,
`@include`/`@skip`, arguments), so every response carries exactly the fields the query
asked for. Before a response is
sent, its `data` is validated against the SDK's own generated pydantic result model
for the operation; a validation error, a field the graph lacks or an operation the
emulator does not know answers 500 and is appended to `errors`, so a test that
checks `errors` fails loudly.

Files come from a storage host of its own (`Storage`, another port): signed URLs that
expire, honour `Range`, can be throttled and refuse `Authorization`; a file URL on the
W&B host (`GET /files/<collection>/<version>/<path>`) redirects there, and
`GET /manifests/<collection>/<version>.json` serves the W&B manifest.

It also takes uploads, as the SDK (`wandb.init` online) and `wandb sync` send them
through wandb-core: `UpsertBucket` (runs), `POST /files/<entity>/<project>/<run>/
file_stream` (history, summary, events, exit), `CreateRunFiles`, `CreateArtifact`
(the same digest in the same collection is the same version, so a resumed upload
never makes a second one), `CreateArtifactManifest`/`UpdateArtifactManifest`,
`CreateArtifactFiles`, `PUT /storage/...` (bytes really stored, in a temporary folder),
`CommitArtifact` (moves `latest`) and `UseArtifact` (use edges, also onto registry
versions). Uploaded runs and artifacts are read back through the same graph:
`api.runs`, `api.artifact("entity/project/name:alias")`, files, `logged_by`, `used_by`.
These operations have no generated model in the Python SDK; the field check is all
they get. `faults` fails or holds chosen requests, for retry tests.

Run standalone: `python -m tests.wandb_emulator --port 0 --max-seconds 600 [--registry DIR]
[--profile saas|server] [--url-ttl SECONDS] [--storage-bytes-per-sec N]` prints the base
URL, then the organisation, registries and entities it serves, until stopped.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    build_ast_schema,
    parse,
    validate,
)
from graphql.language import REMOVE, FragmentDefinitionNode, Visitor, visit
from graphql.utilities import value_from_ast_untyped

from tui.services.refs import ArtifactRef
from tui.services.registry.protocol import (
    Collection,
    FileEntry,
    NotFoundError,
    Registry,
    RunInfo,
    Version,
)

MODEL_REGISTRY = "wandb-registry-model"
# A second registry of the organisation; its collections link to sources logged in a
# team project of their own, so a name in both registries (`my-model`) is two series.
CHECKPOINTS_REGISTRY = "wandb-registry-checkpoints"
CHECKPOINTS_SOURCE_PROJECT = "checkpointing"
# The default organisation. On W&B an organisation has an entity of its own (the org
# entity, owner of the `wandb-registry-*` projects), distinct from its team entities and
# the users' personal entities: `_resolve_org_info` in
# wandb/sdk/artifacts/_gqlutils.py reads `entity.organization.orgEntity` for a team and
# `entity.user.organizations` for a personal entity.
ORGANIZATION = "acme"
ORG_ENTITY = "acme-org"
TEAM = "team"
VIEWER = "alice"
# A registry version is a link to an artifact logged in a team project (the SDK tells a
# link by its source sequence living elsewhere: `Artifact._assign_attrs` in
# wandb/sdk/artifacts/artifact.py). Collections come from `training` unless named here.
SOURCE_PROJECT = "training"
SOURCE_PROJECTS = {"llama-3-8b-sft": "pretraining"}
# Projects the viewer may read but not write (`IsProjectReadOnly` answers true): the SDK's
# `Artifact._update` then skips `UpdateArtifact` on a link, with only a warning.
READ_ONLY_PROJECTS = frozenset({"pretraining"})
# (collection, alias) pairs only registry admins may move or remove.
PROTECTED_ALIASES = frozenset({("mistral-7b-dpo", "production")})
EPOCH = "2026-01-01T00:00:00Z"
CHUNK = 1 << 20

# Server features (`ServerFeaturesQuery`) by profile. `server` is a self-hosted W&B
# Server of a release before the newer ones: without ARTIFACT_DIGEST_ALGORITHM the SDK
# omits `Artifact.digestAlgorithm` (`omit_artifact_fields` in
# wandb/sdk/artifacts/_gqlutils.py), and a document naming it fails validation there.
SERVER_FEATURES = (
    "ARTIFACT_TAGS",
    "ARTIFACT_REGISTRY_SEARCH",
    "ARTIFACT_COLLECTION_MEMBERSHIP_FILES",
    "ARTIFACT_COLLECTIONS_FILTERING_SORTING",
    "TOTAL_COUNT_IN_FILE_CONNECTION",
    "PROJECT_ARTIFACT_COLLECTION_MEMBERSHIP",
)
# W&B's cloud: every feature the SDK asks about (the ServerFeature enum of
# wandb/proto/wandb_internal_pb2.py, 0.31; a test keeps the two equal), so wandb-core
# takes its newest paths.
SAAS_FEATURES = (
    "LARGE_FILENAMES",
    "ARTIFACT_TAGS",
    "CLIENT_IDS",
    "ARTIFACT_REGISTRY_SEARCH",
    "STRUCTURED_CONSOLE_LOGS",
    "ARTIFACT_COLLECTION_MEMBERSHIP_FILES",
    "ARTIFACT_COLLECTION_MEMBERSHIP_FILE_DOWNLOAD_HANDLER",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION",
    "AUTOMATION_EVENT_RUN_METRIC",
    "AUTOMATION_EVENT_RUN_METRIC_CHANGE",
    "AUTOMATION_ACTION_NO_OP",
    "INCLUDE_ARTIFACT_TYPES_IN_REGISTRY_CREATION",
    "PROJECT_ARTIFACT_COLLECTION_MEMBERSHIP",
    "ARTIFACT_MEMBERSHIP_IN_LINK_ARTIFACT_RESPONSE",
    "TOTAL_COUNT_IN_FILE_CONNECTION",
    "ARTIFACT_COLLECTIONS_FILTERING_SORTING",
    "ARTIFACT_V2_DOWNLOAD_HANDLER_SUPPORTS_ARTIFACT_ID",
    "AUTOMATION_EVENT_RUN_METRIC_ZSCORE",
    "AUTOMATION_EVENT_RUN_STATE",
    "AUTOMATION_ACTION_PUSH_NOTIFICATION",
    "AUTOMATION_EVENT_ADD_ARTIFACT_TAG",
    "AUTOMATION_EVENT_ADD_COLLECTION_TAG",
    "AUTOMATION_EVENT_REMOVE_ARTIFACT_TAG",
    "AUTOMATION_EVENT_REMOVE_COLLECTION_TAG",
    "AUTOMATION_EVENT_UNLINK_ARTIFACT",
    "AUTOMATIONS_ON_USER",
    "AUTOMATION_LAST_EXECUTED_AT",
    "MARK_RUN_FILES_UPLOADED",
    "SWEEPS_QUERY_FILTERING",
    "AUTOMATION_SCOPE_ENTITY",
    "QUERY_AUTOMATIONS_ON_ENTITY",
    "AUTOMATIONS_ON_ORGANIZATION",
    "FILESTREAM_GZIP",
    "SWEEPS_LOCAL_SCHEDULER",
    "ARTIFACT_DIGEST_ALGORITHM",
    "AUTOMATION_ACTION_ARIA",
    "EVAL_TABLES_CES",
)
PROFILES: dict[str, tuple[str, ...]] = {
    "saas": SAAS_FEATURES,
    "server": SERVER_FEATURES,
}
# Fields a server without the feature does not have: (type, field) -> feature.
GATED_FIELDS = {("Artifact", "digestAlgorithm"): "ARTIFACT_DIGEST_ALGORITHM"}

# GraphQL interfaces, for fragments whose type condition is an interface.
INTERFACES = {"ArtifactCollection": {"ArtifactPortfolio", "ArtifactSequence"}}

# Operation name -> the SDK's generated result model ("module:Class"), or several that
# must all accept the data. `Viewer` is sent by wandb-core (Go) and has no Python
# model; GetDefaultEntity covers its fields the SDK reads. `Run` is a hand-written
# query in `wandb.apis.public.runs` without a model: the executor's check that every
# selected field exists is all it gets. `ArtifactLineage` is the W&B backend's one
# query for a version's producer and users: the SDK's ArtifactCreatedBy and
# ArtifactUsedBy models each check their half (they ignore the extra run fields).
# `RunsOutputArtifacts` is its query for the artifacts of several runs at once (one
# aliased `project.run` each): `RunsOutputArtifacts` below checks each with the SDK's
# RunOutputArtifacts and FetchLinkedArtifacts models. `ArtifactLineages` is the
# lineage of several versions at once, each found by name: `ArtifactLineages` below
# checks each as ArtifactMembershipByName, ArtifactCreatedBy and ArtifactUsedBy would.
ARTIFACTS = "wandb.sdk.artifacts._generated"
APIS = "wandb.apis._generated"
MODELS: dict[str, str | tuple[str, ...] | None] = {
    "Viewer": f"{APIS}:GetDefaultEntity",
    "ArtifactLineage": (f"{ARTIFACTS}:ArtifactCreatedBy", f"{ARTIFACTS}:ArtifactUsedBy"),
    "RunsOutputArtifacts": f"{__name__}:RunsOutputArtifacts",
    "ArtifactLineages": f"{__name__}:ArtifactLineages",
    "GetDefaultEntity": f"{APIS}:GetDefaultEntity",
    "ServerFeaturesQuery": "wandb.sdk.internal._generated:ServerFeaturesQuery",
    "IsProjectReadOnly": f"{APIS}:IsProjectReadOnly",
    "Run": None,
    # Sent by wandb-core to upload runs and artifacts; the Python SDK has no models for
    # these, so the field check is all they get.
    **dict.fromkeys(
        (
            "UpsertBucket",
            "CreateRunFiles",
            "RunResumeStatus",
            "CreateArtifact",
            "CreateArtifactManifest",
            "UpdateArtifactManifest",
            "CreateArtifactFiles",
            "CommitArtifact",
            "UseArtifact",
            "Runs",
        )
    ),
    **{
        name: f"{ARTIFACTS}:{name}"
        for name in (
            "FetchOrgInfoFromEntity",
            "FetchAdvancedRegistryFeatures",
            "FetchRegistries",
            "FetchRegistry",
            "RegistryCollections",
            "RegistryVersions",
            "ProjectArtifactCollections",
            "ArtifactTypeArtifactCollections",
            "ProjectArtifactCollection",
            "ProjectArtifacts",
            "ArtifactCollectionAliases",
            "ArtifactMembershipByName",
            "ArtifactByID",
            "FetchArtifactManifest",
            "GetArtifactMembershipFileUrls",
            "ArtifactMembershipFiles",
            "ArtifactCreatedBy",
            "ArtifactUsedBy",
            "RunOutputArtifacts",
            "FetchLinkedArtifacts",
            "ArtifactType",
            "AddAliases",
            "DeleteAliases",
            "UpdateArtifact",
        )
    },
}

_OPERATION = re.compile(r"\b(query|mutation)\s+([A-Za-z_]\w*)")


class GraphQLFailure(Exception):
    """The emulator could not answer a request; recorded in `errors`, answered 500."""


class GraphQLInvalid(Exception):
    """The document does not validate on this server: answered 400 with `errors` and no
    `data`, as a GraphQL server answers, and recorded (a client must not send it)."""


SCHEMA_FILE = Path(__file__).with_name("wandb_emulator.graphql")


@functools.cache
def served_schema(profile: str) -> GraphQLSchema:
    """The schema the emulator serves on `profile`: `SCHEMA_FILE`, parsed once, without
    the fields whose feature the profile lacks."""
    features = set(PROFILES[profile])
    gone = {key for key, feature in GATED_FIELDS.items() if feature not in features}
    sdl = parse(SCHEMA_FILE.read_text())

    class Gated(Visitor):
        def __init__(self) -> None:
            super().__init__()
            self.type_name = ""

        def enter_object_type_definition(self, node: Any, *_: Any) -> None:
            self.type_name = node.name.value

        def enter_field_definition(self, node: Any, *_: Any) -> Any:
            return REMOVE if (self.type_name, node.name.value) in gone else None

    return build_ast_schema(visit(sdl, Gated()))


@functools.lru_cache(maxsize=512)
def check_document(query: str, profile: str) -> DocumentNode:
    """The parsed document, or GraphQLInvalid with the first message a GraphQL server
    gives: a syntax error, an unknown field, argument or type, a variable of the wrong
    type, an abstract type's field selected without a fragment. Cached by text: the
    same few documents come again and again."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise GraphQLInvalid(exc.message) from None
    if errors := validate(served_schema(profile), document):
        raise GraphQLInvalid(errors[0].message)
    return document


class GraphQLRefusal(Exception):
    """W&B refuses the request (permissions): answered 200 with `errors`, as W&B does,
    and not recorded, since the client is expected to meet it."""


def gid(kind: str, *parts: object) -> str:
    """A W&B-style opaque id: base64 of `Kind:part:part`."""
    return base64.b64encode(":".join([kind, *map(str, parts)]).encode()).decode()


def ungid(value: str) -> list[str]:
    """The parts of an id made by `gid`, kind first."""
    try:
        return base64.b64decode(value.encode()).decode().split(":")
    except ValueError:
        raise GraphQLFailure(f"malformed id {value!r}") from None


def operation_name(body: Mapping[str, Any]) -> str:
    """The operation name; the SDK often sends an empty operationName, so read the query."""
    if name := body.get("operationName"):
        return str(name)
    match = _OPERATION.search(body.get("query") or "")
    return match.group(2) if match else ""


def result_models(name: str) -> list[Any]:
    """The generated pydantic classes validating the `data` of operation `name`."""
    targets = MODELS.get(name) or ()
    found = []
    for target in (targets,) if isinstance(targets, str) else targets:
        module, _, cls = target.partition(":")
        found.append(getattr(__import__(module, fromlist=[cls]), cls))
    return found


class RunsOutputArtifacts:
    """Checks the data of the W&B backend's `RunsOutputArtifacts`: each aliased project
    as the SDK's `RunOutputArtifacts` reads it (`outputArtifacts` under the name the
    SDK gives it), each artifact's memberships as its `FetchLinkedArtifacts` does."""

    @staticmethod
    def model_validate(data: Mapping[str, Any]) -> None:
        from wandb.sdk.artifacts._generated import FetchLinkedArtifacts, RunOutputArtifacts

        for project in data.values():
            run = (project or {}).get("run") or {}
            logged = run.get("outputArtifacts")
            renamed = {**project, "run": {"artifacts": logged}} if project and run else project
            RunOutputArtifacts.model_validate({"project": renamed})
            for edge in (logged or {}).get("edges") or ():
                FetchLinkedArtifacts.model_validate({"artifact": edge.get("node")})


class ArtifactLineages:
    """Checks the data of the W&B backend's `ArtifactLineages`: each aliased project's
    membership as the SDK's models read a membership found by name and a lineage."""

    @staticmethod
    def model_validate(data: Mapping[str, Any]) -> None:
        from wandb.sdk.artifacts._generated import ArtifactCreatedBy, ArtifactUsedBy

        for project in data.values():
            member = (project or {}).get("artifactCollectionMembership")
            artifact = (member or {}).get("artifact")
            ArtifactCreatedBy.model_validate({"artifact": artifact})
            ArtifactUsedBy.model_validate({"artifact": artifact})


# --- Filters (the MongoDB-style JSON the SDK sends) ----------------------------------


def matches(filt: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """True when `fields` satisfies filter `filt`; list-valued fields match any element."""
    for key, cond in (filt or {}).items():
        if key == "$and":
            ok = all(matches(sub, fields) for sub in cond)
        elif key == "$or":
            ok = any(matches(sub, fields) for sub in cond)
        elif key.startswith("$"):
            raise GraphQLFailure(f"unsupported filter operator {key!r}")
        else:
            ok = _field_matches(fields.get(key), cond, key)
        if not ok:
            return False
    return True


def _field_matches(value: Any, cond: Any, key: str) -> bool:
    values = value if isinstance(value, list | tuple) else [value]
    if not isinstance(cond, Mapping):
        return cond in values
    for op, arg in cond.items():
        if op == "$eq":
            ok = arg in values
        elif op == "$ne":
            ok = arg not in values
        elif op == "$in":
            ok = any(v in arg for v in values)
        elif op == "$nin":
            ok = not any(v in arg for v in values)
        elif op == "$regex":
            ok = any(isinstance(v, str) and re.search(arg, v) for v in values)
        elif op == "$exists":
            ok = (value is not None) == bool(arg)
        else:
            raise GraphQLFailure(f"unsupported filter operator {op!r} on {key!r}")
        if not ok:
            return False
    return True


def _defined(value: Any) -> Any:
    """`value` without the object fields bound to variables that were not sent."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items() if v is not Undefined}
    if isinstance(value, list):
        return [_defined(v) for v in value]
    return value


def _json_arg(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) and raw else raw


# --- Paging ---------------------------------------------------------------------------


def connection(
    items: list[Any],
    args: Mapping[str, Any],
    node: Callable[[Any], Any],
    *,
    edge: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A relay connection over `items`, honouring the `first`/`after` arguments."""
    start = int(ungid(args["after"])[1]) if args.get("after") else 0
    first = args.get("first")
    stop = len(items) if first is None else min(len(items), start + int(first))
    page = items[start:stop]
    edges = [
        {
            "__typename": "Edge",
            "cursor": gid("cursor", start + i + 1),
            "node": node(item),
            **(edge(item) if edge else {}),
        }
        for i, item in enumerate(page)
    ]
    return {
        "__typename": "Connection",
        "totalCount": len(items),
        "pageInfo": {
            "__typename": "PageInfo",
            "endCursor": gid("cursor", stop) if page else args.get("after"),
            "hasNextPage": stop < len(items),
        },
        "edges": edges,
    }


# --- Executing a query against a graph of plain values and resolvers ------------------


class Executor:
    """Evaluates one GraphQL operation against a graph of dicts and callables.

    A dict is an object (its `__typename` decides type conditions), a callable is a
    field resolver called with the field's arguments, anything else is a scalar.
    """

    def __init__(self, document: DocumentNode, variables: Mapping[str, Any] | None) -> None:
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(ops) != 1:
            raise GraphQLFailure(f"expected one operation, got {len(ops)}")
        self.operation = ops[0]
        self.variables = dict(variables or {})
        for definition in self.operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and definition.default_value is not None:
                self.variables[name] = value_from_ast_untyped(definition.default_value)

    def run(self, root: Mapping[str, Any]) -> dict[str, Any]:
        """The `data` of the response."""
        return self._select(root, [self.operation.selection_set], "Query")

    def _included(self, node: Any) -> bool:
        for directive in node.directives or ():
            args = {a.name.value: a.value for a in directive.arguments or ()}
            value = bool(value_from_ast_untyped(args["if"], self.variables)) if args else True
            if directive.name.value == "include" and not value:
                return False
            if directive.name.value == "skip" and value:
                return False
        return True

    def _arguments(self, field: FieldNode) -> dict[str, Any]:
        """The field's arguments; one bound to a variable that was not sent is absent."""
        values = {
            a.name.value: value_from_ast_untyped(a.value, self.variables)
            for a in field.arguments or ()
        }
        return _defined(values)

    @staticmethod
    def _applies(condition: Any, typename: str | None) -> bool:
        if condition is None or typename is None:
            return True
        name = condition.name.value
        return name == typename or typename in INTERFACES.get(name, ())

    def _collect(
        self, sets: Iterable[SelectionSetNode], typename: str | None
    ) -> dict[str, list[FieldNode]]:
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in sets:
            for sel in selection_set.selections:
                if not self._included(sel):
                    continue
                if isinstance(sel, FieldNode):
                    key = (sel.alias or sel.name).value
                    fields.setdefault(key, []).append(sel)
                    continue
                if isinstance(sel, FragmentSpreadNode):
                    frag = self.fragments[sel.name.value]
                    cond, inner = frag.type_condition, frag.selection_set
                elif isinstance(sel, InlineFragmentNode):
                    cond, inner = sel.type_condition, sel.selection_set
                else:  # pragma: no cover - graphql-core has no other selection kind
                    continue
                if self._applies(cond, typename):
                    for key, nodes in self._collect([inner], typename).items():
                        fields.setdefault(key, []).extend(nodes)
        return fields

    def _select(self, value: Any, sets: list[SelectionSetNode], typename: str) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [self._select(v, sets, typename) for v in value]
        if not isinstance(value, Mapping):
            raise GraphQLFailure(f"{typename}: expected an object, got {type(value).__name__}")
        own_type = value.get("__typename", typename)
        out: dict[str, Any] = {}
        for key, nodes in self._collect(sets, value.get("__typename")).items():
            name = nodes[0].name.value
            if name == "__typename":
                out[key] = own_type
                continue
            if name not in value:
                raise GraphQLFailure(f"the emulator has no field {own_type}.{name}")
            raw = value[name]
            if callable(raw):
                raw = raw(self._arguments(nodes[0]))
            subsets = [n.selection_set for n in nodes if n.selection_set]
            out[key] = self._select(raw, subsets, f"{own_type}.{name}") if subsets else raw
        return out


# --- Uploads: runs and artifacts the SDK and `wandb sync` put on the server ------------


@dataclass
class RunRecord:
    """A run as the server keeps it: what UpsertBucket and the file stream sent."""

    entity: str
    project: str
    name: str
    display_name: str = ""
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: dict[int, str] = field(default_factory=dict)
    events: dict[int, str] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    state: str = "running"
    exitcode: int | None = None
    created_at: str = EPOCH

    @property
    def key(self) -> tuple[str, str, str]:
        return self.entity, self.project, self.name


@dataclass
class ArtifactRecord:
    """One artifact version created through CreateArtifact, with its stored files."""

    index: int
    entity: str
    project: str
    collection: str
    type: str
    digest: str
    version_index: int
    client_id: str | None = None
    sequence_client_id: str | None = None
    description: str | None = None
    metadata: str = "{}"
    aliases: list[str] = field(default_factory=list)
    state: str = "PENDING"
    created_by: tuple[str, str, str] | None = None
    manifest: dict[str, Any] | None = None
    manifest_digest: str | None = None
    created_at: str = EPOCH

    @property
    def id(self) -> str:
        return gid("Artifact", self.index)

    @property
    def version(self) -> str:
        return f"v{self.version_index}"


@dataclass
class _Fault:
    match: str
    count: int
    kind: str  # "500", "drop" or "delay"
    seconds: float = 0.0


class Faults:
    """Requests to fail or hold on purpose: the next N matching a path or operation name.

    `add("UpsertBucket", 3)` answers the next three UpsertBucket requests with 500;
    `add("/file_stream", 2, drop=True)` closes the connection of the next two file
    stream posts without an answer; `add("PUT /storage", 1, delay=5)` holds the next
    upload five seconds before taking it. A match is a substring of the operation name
    or of `METHOD /path`. `hits` lists the faults served, in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Fault] = []
        self.hits: list[str] = []

    def add(self, match: str, count: int = 1, *, drop: bool = False, delay: float = 0.0) -> None:
        """Fail the next `count` requests matching `match` (500, dropped, or held)."""
        kind = "drop" if drop else "delay" if delay else "500"
        with self._lock:
            self._rules.append(_Fault(match, count, kind, min(delay, 60.0)))

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._rules.clear()

    def take(self, *keys: str) -> _Fault | None:
        """The fault due for a request known by `keys`, counted as served; or None."""
        with self._lock:
            for rule in self._rules:
                if rule.count > 0 and any(rule.match in k for k in keys if k):
                    rule.count -= 1
                    self.hits.append(f"{rule.kind} {keys[-1]}")
                    return rule
        return None

    @property
    def pending(self) -> int:
        """How many faults are still to be served."""
        with self._lock:
            return sum(rule.count for rule in self._rules)


def _config_values(raw: Any) -> dict[str, Any]:
    """The `{key: {"value": v}}` config the SDK sends, as a dict."""
    data = _json_arg(raw) or {}
    return dict(data) if isinstance(data, Mapping) else {}


def _storage_name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Uploads:
    """The server side of uploads: runs, artifacts, stored bytes and use edges.

    Bytes go to files under `root`, named by what they are, so a 256 MiB upload never
    sits in memory.
    """

    def __init__(self, root: Path, base_url: Callable[[], str], entity: str) -> None:
        self.root = root
        self.base_url = base_url
        self.entity = entity
        self.runs: dict[tuple[str, str, str], RunRecord] = {}
        self.artifacts: list[ArtifactRecord] = []
        # (run key, artifact id of an uploaded artifact or registry "collection:version")
        self.used: list[tuple[tuple[str, str, str], str]] = []
        self.lock = threading.RLock()

    # Stored bytes.

    def blob(self, kind: str, *parts: str) -> Path:
        """Where the bytes PUT for `kind` (`artifact`, `manifest`, `run`) and `parts` live."""
        return self.root / kind / _storage_name("/".join(parts))

    def upload_url(self, kind: str, *parts: str) -> str:
        return f"{self.base_url()}/storage/{kind}/" + "/".join(quote(p, safe="") for p in parts)

    def stored_size(self, kind: str, *parts: str) -> int | None:
        path = self.blob(kind, *parts)
        return path.stat().st_size if path.exists() else None

    # Runs.

    def run_record(self, entity: str | None, project: str | None, name: str) -> RunRecord:
        key = (entity or self.entity, project or "uncategorized", name)
        if key not in self.runs:
            self.runs[key] = RunRecord(*key, created_at=_now())
        return self.runs[key]

    def find_run(self, entity: str | None, project: str, name: str) -> RunRecord | None:
        return self.runs.get((entity or self.entity, project, name))

    def upsert_bucket(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        before = len(self.runs)
        run = self.run_record(data.get("entityName"), data.get("modelName"), data["name"])
        inserted_new = len(self.runs) > before
        for attr, key in (
            ("display_name", "displayName"),
            ("group", "groupName"),
            ("job_type", "jobType"),
            ("notes", "notes"),
            ("state", "state"),
        ):
            if data.get(key) is not None:
                setattr(run, attr, data[key])
        if data.get("tags") is not None:
            run.tags = list(data["tags"])
        if data.get("config") is not None:
            run.config.update(_config_values(data["config"]))
        if data.get("summaryMetrics") is not None:
            run.summary.update(_config_values(data["summaryMetrics"]))
        return {"bucket": self.run_node(run), "inserted": inserted_new}

    def file_stream(
        self, entity: str, project: str, name: str, body: Mapping[str, Any]
    ) -> str | None:
        """Apply one file stream post: history/events lines at offsets, summary, exit;
        returns what is wrong with it, if anything.

        As W&B keeps them, `wandb-history.jsonl` and `wandb-events.jsonl` are files of
        lines, and a chunk writes its lines from line `offset` on: lines already there
        are replaced, lines past the end are appended. wandb-core sends history from the
        line count the server holds (`HistoryLineNum`, set from `UpsertBucket`'s
        `historyLineCount` in runupserter's `lockedUpdateFromUpsert`, and from
        `RunResumeStatus` when resuming), so a run uploaded twice gets its history
        twice, as on W&B. A chunk that starts past the end would leave a gap of
        missing lines: a client fault, refused. The summary is the last line sent
        (filestreamstate's `SummaryLineNum`: "the backend only looks at the last line").
        """
        with self.lock:
            run = self.run_record(entity, project, name)
            for file_name, chunk in (body.get("files") or {}).items():
                lines = list(chunk.get("content") or ())
                offset = int(chunk.get("offset") or 0)
                if file_name in ("wandb-history.jsonl", "wandb-events.jsonl"):
                    kept = run.history if file_name == "wandb-history.jsonl" else run.events
                    if offset > len(kept):
                        return f"{file_name} chunk at line {offset}; the file has {len(kept)}"
                    kept.update({offset + i: line for i, line in enumerate(lines)})
                elif file_name == "wandb-summary.json" and lines:
                    run.summary = json.loads(lines[-1])
            if body.get("complete"):
                run.exitcode = body.get("exitcode")
                run.state = "finished" if not run.exitcode else "failed"
        return None

    def create_run_files(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        run = self.run_record(data["entityName"], data["projectName"], data["runName"])
        urls = [
            {"name": f, "uploadUrl": self.upload_url("run", *run.key, f)} for f in data["files"]
        ]
        return {
            "runID": self.run_node(run)["id"],
            "uploadHeaders": [],
            "files": urls,
        }

    def run_node(self, run: RunRecord) -> dict[str, Any]:
        config = {**run.config}
        history = [json.loads(run.history[i]) for i in sorted(run.history)]
        keys = sorted({k for row in history for k in row})
        project = {
            "__typename": "Project",
            "id": gid("Project", run.entity, run.project),
            "internalId": gid("ProjectInternalId", run.entity, run.project),
            "name": run.project,
            "entity": {"__typename": "Entity", "id": gid("Entity", run.entity), "name": run.entity},
        }
        return {
            "__typename": "Run",
            "id": gid("Run", *run.key),
            "name": run.name,
            "displayName": run.display_name or run.name,
            "description": run.notes,
            "notes": run.notes,
            "project": project,
            "projectId": 1,
            "tags": list(run.tags),
            "sweepName": None,
            "state": run.state,
            "group": run.group,
            "jobType": run.job_type,
            "commit": None,
            "readOnly": False,
            "createdAt": run.created_at,
            "heartbeatAt": run.created_at,
            "config": json.dumps(config),
            "summaryMetrics": json.dumps(run.summary),
            "systemMetrics": "{}",
            "historyLineCount": len(run.history),
            "historyKeys": {"lastStep": len(history) - 1, "keys": {k: {} for k in keys}},
            "history": lambda a: [json.dumps(row) for row in history],
            "sampledHistory": lambda a: [history],
            "wandbConfig": lambda a: json.dumps(
                {k: v for k, v in config.items() if k in (a.get("keys") or config)}
            ),
            "user": {"__typename": "User", "name": VIEWER, "username": VIEWER},
            "files": lambda a: self.run_files(run, a),
            "inputArtifacts": lambda a: connection(
                self.used_by_run(run), a, self.artifact_node_any
            ),
            "outputArtifacts": lambda a: connection(
                [r for r in self.artifacts if r.created_by == run.key], a, self.artifact_node
            ),
            "sweep": None,
            "bucket": None,
        }

    def run_files(self, run: RunRecord, args: Mapping[str, Any]) -> dict[str, Any]:
        names = sorted(n for n in run.files if not args.get("names") or n in args["names"])

        def node(name: str) -> dict[str, Any]:
            url = f"{self.base_url()}/storage/run/" + "/".join(
                quote(p, safe="") for p in (*run.key, name)
            )
            return {
                "__typename": "File",
                "id": gid("File", *run.key, name),
                "name": name,
                "url": url,
                "directUrl": url,
                "sizeBytes": run.files[name],
                "mimetype": None,
                "updatedAt": run.created_at,
                "md5": None,
            }

        return connection(names, args, node)

    def project_runs(self, entity: str, project: str, args: Mapping[str, Any]) -> dict[str, Any]:
        found = [r for r in self.runs.values() if (r.entity, r.project) == (entity, project)]
        filt = _json_arg(args.get("filters"))
        found = [r for r in found if matches(filt, self.run_fields(r))]
        return connection(found, args, self.run_node)

    @staticmethod
    def run_fields(run: RunRecord) -> dict[str, Any]:
        fields = {"name": run.name, "group": run.group, "jobType": run.job_type, "tags": run.tags}
        fields |= {"display_name": run.display_name, "state": run.state}
        fields |= {f"config.{k}.value": v.get("value") for k, v in run.config.items()}
        fields |= {f"config.{k}": v.get("value") for k, v in run.config.items()}
        return fields

    # Artifacts.

    def sequence(self, entity: str, project: str, name: str) -> list[ArtifactRecord]:
        return [
            r
            for r in self.artifacts
            if (r.entity, r.project, r.collection) == (entity, project, name)
        ]

    def sequences(self, entity: str, project: str, type_name: str | None = None) -> list[str]:
        """Names of the project's artifact collections (of `type_name`), oldest first."""
        found = [
            r.collection
            for r in self.artifacts
            if (r.entity, r.project) == (entity, project) and type_name in (None, r.type)
        ]
        return list(dict.fromkeys(found))

    def collections(
        self, entity: str, project: str, args: Mapping[str, Any], type_name: str | None = None
    ) -> dict[str, Any]:
        """The project's collections as a connection, filtered like the registry's."""
        names = self.sequences(entity, project, type_name)
        filt = _json_arg(args.get("filters"))
        names = [n for n in names if matches(filt, {"name": n, "tag": [], "description": None})]
        return connection(names, args, lambda n: self.sequence_node(entity, project, n))

    def create_artifact(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        entity = data.get("entityName") or self.entity
        project, name = data["projectName"], data["artifactCollectionName"]
        siblings = self.sequence(entity, project, name)
        # Same content in the same collection is the same version: a retried or resumed
        # upload finds the one it started instead of making another.
        same = [r for r in siblings if r.digest == data["digest"]]
        if same:
            record = same[0]
        else:
            record = ArtifactRecord(
                index=len(self.artifacts) + 1,
                entity=entity,
                project=project,
                collection=name,
                type=data["artifactTypeName"],
                digest=data["digest"],
                version_index=len(siblings),
                client_id=data.get("clientID"),
                sequence_client_id=data.get("sequenceClientID"),
                description=data.get("description"),
                metadata=data.get("metadata") or "{}",
                created_at=_now(),
            )
            self.artifacts.append(record)
        if data.get("runName"):
            run = self.run_record(entity, project, data["runName"])
            record.created_by = record.created_by or run.key
        for alias in data.get("aliases") or ():
            self.move_alias(record, alias["alias"] if isinstance(alias, Mapping) else alias)
        return {"artifact": self.artifact_node(record)}

    def move_alias(self, record: ArtifactRecord, alias: str) -> None:
        for other in self.sequence(record.entity, record.project, record.collection):
            if alias in other.aliases and other is not record:
                other.aliases.remove(alias)
        if alias not in record.aliases:
            record.aliases.append(alias)

    def by_id(self, artifact_id: str) -> ArtifactRecord:
        parts = ungid(artifact_id)
        if len(parts) != 2 or parts[0] != "Artifact" or not parts[1].isdigit():
            raise GraphQLFailure(f"not an uploaded artifact id: {artifact_id!r}")
        index = int(parts[1])
        if not 0 < index <= len(self.artifacts):
            raise GraphQLFailure(f"no artifact {artifact_id!r}")
        return self.artifacts[index - 1]

    def create_manifest(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        record = self.by_id(data["artifactID"])
        record.manifest_digest = data.get("digest")
        return {"artifactManifest": self.manifest_node(record)}

    def update_manifest(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        record = self.by_id(ungid(data["artifactManifestID"])[1])
        if data.get("digest"):
            record.manifest_digest = data["digest"]
        return {"artifactManifest": self.manifest_node(record)}

    def manifest_node(self, record: ArtifactRecord) -> dict[str, Any]:
        return {
            "__typename": "ArtifactManifest",
            "id": gid("ArtifactManifest", record.id),
            "file": {
                "__typename": "File",
                "id": gid("File", "manifest", record.index),
                "name": "wandb_manifest.json",
                "displayName": "wandb_manifest.json",
                "uploadUrl": self.upload_url("manifest", str(record.index)),
                "uploadHeaders": [],
                "directUrl": self.upload_url("manifest", str(record.index)),
            },
        }

    def create_artifact_files(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        nodes = []
        for item in data["artifactFiles"]:
            record = self.by_id(item["artifactID"])
            stored = self.stored_size("artifact", item["md5"])
            nodes.append(
                {
                    "__typename": "File",
                    "id": gid("File", record.index, item["name"]),
                    "name": item["name"],
                    "displayName": item["name"],
                    # Content the server already holds is not sent again.
                    "uploadUrl": None
                    if stored is not None
                    else self.upload_url("artifact", item["md5"]),
                    "uploadHeaders": [],
                    "uploadMultipartUrls": None,
                    "storagePath": f"wandb_artifacts/{_storage_name(item['md5'])}",
                    "artifact": {"__typename": "Artifact", "id": record.id},
                }
            )
        return {"files": {"edges": [{"node": n} for n in nodes]}}

    def commit_artifact(self, args: Mapping[str, Any]) -> dict[str, Any]:
        record = self.by_id(args["input"]["artifactID"])
        path = self.blob("manifest", str(record.index))
        if not path.exists():
            raise GraphQLFailure(f"commit of {record.collection}:{record.version}: no manifest")
        record.manifest = json.loads(path.read_bytes())
        record.state = "COMMITTED"
        self.move_alias(record, "latest")
        return {"artifact": self.artifact_node(record)}

    def use_artifact(self, args: Mapping[str, Any]) -> None:
        data = args["input"]
        run = self.run_record(data.get("entityName"), data.get("projectName"), data["runName"])
        target = data["artifactID"]
        if (run.key, target) not in self.used:
            self.used.append((run.key, target))

    def used_by_run(self, run: RunRecord) -> list[str]:
        return [target for key, target in self.used if key == run.key]

    def users_of(self, artifact_id: str) -> list[RunRecord]:
        return [self.runs[key] for key, target in self.used if target == artifact_id]

    def artifact_node_any(self, artifact_id: str) -> dict[str, Any]:
        return self.artifact_node(self.by_id(artifact_id))

    def manifest_size(self, record: ArtifactRecord) -> tuple[int, int]:
        contents = (record.manifest or {}).get("contents") or {}
        return sum(int(e.get("size") or 0) for e in contents.values()), len(contents)

    def alias_node(self, record: ArtifactRecord, alias: str) -> dict[str, Any]:
        return {
            "__typename": "ArtifactAlias",
            "id": gid("ArtifactAlias", record.index, alias),
            "alias": alias,
            "artifactCollection": {
                "__typename": "ArtifactSequence",
                "name": record.collection,
                "project": self.project_info(record.entity, record.project),
            },
        }

    def project_info(self, entity: str, project: str) -> dict[str, Any]:
        return {
            "__typename": "Project",
            "id": gid("Project", entity, project),
            "internalId": gid("ProjectInternalId", entity, project),
            "name": project,
            "entity": {"__typename": "Entity", "id": gid("Entity", entity), "name": entity},
        }

    def artifact_node(self, record: ArtifactRecord) -> dict[str, Any]:
        size, count = self.manifest_size(record)
        manifest_url = f"{self.base_url()}/storage/manifest/{record.index}"
        return {
            "__typename": "Artifact",
            "id": record.id,
            "artifactSequence": {
                "__typename": "ArtifactSequence",
                "id": gid("ArtifactCollection", record.project, record.collection),
                "name": record.collection,
                "project": self.project_info(record.entity, record.project),
                "latestArtifact": None,
            },
            "versionIndex": record.version_index,
            "artifactType": {"__typename": "ArtifactType", "name": record.type},
            "description": record.description,
            "metadata": record.metadata,
            "ttlDurationSeconds": -2,
            "ttlIsInherited": True,
            "tags": [],
            "historyStep": None,
            "state": record.state,
            "size": size,
            "digest": record.digest,
            "digestAlgorithm": "MANIFEST_MD5",
            "commitHash": None,
            "fileCount": count,
            "createdAt": record.created_at,
            "updatedAt": record.created_at,
            "aliases": [self.alias_node(record, a) for a in record.aliases],
            "currentManifest": {
                "__typename": "ArtifactManifest",
                "id": gid("ArtifactManifest", record.id),
                "file": {"__typename": "File", "directUrl": manifest_url},
            },
            "createdBy": lambda _a: self.creator(record),
            "usedBy": lambda _a: {
                "edges": [{"node": self.run_node(r)} for r in self.users_of(record.id)]
            },
            "artifactMemberships": lambda _a: {"edges": [{"node": self.membership_node(record)}]},
        }

    def creator(self, record: ArtifactRecord) -> dict[str, Any] | None:
        return self.run_node(self.runs[record.created_by]) if record.created_by else None

    def membership_node(self, record: ArtifactRecord) -> dict[str, Any]:
        return {
            "__typename": "ArtifactCollectionMembership",
            "id": gid("ArtifactCollectionMembership", record.index),
            "versionIndex": record.version_index,
            "createdAt": record.created_at,
            "aliases": [self.alias_node(record, a) for a in record.aliases],
            "artifactCollection": self.sequence_node(
                record.entity, record.project, record.collection
            ),
            "artifact": self.artifact_node(record),
            "files": lambda a: self.artifact_files(record, a),
        }

    def sequence_node(self, entity: str, project: str, name: str) -> dict[str, Any]:
        versions = self.sequence(entity, project, name)
        first = versions[0]
        return {
            "__typename": "ArtifactSequence",
            "id": gid("ArtifactCollection", project, name),
            "name": name,
            "description": None,
            "createdAt": first.created_at,
            "updatedAt": first.created_at,
            "project": self.project_info(entity, project),
            "defaultArtifactType": {"__typename": "ArtifactType", "name": first.type},
            "tags": {"edges": []},
            "artifactMembership": lambda a: self.membership_by_alias(versions, a["aliasName"]),
            "aliases": lambda a: connection(
                sorted({al for r in versions for al in r.aliases}),
                a,
                lambda al: self.alias_node(self.by_alias(versions, al), al),  # type: ignore[arg-type]
            ),
            "artifacts": lambda a: connection(
                sorted(versions, key=lambda r: -r.version_index),
                a,
                self.artifact_node,
                edge=lambda r: {"version": r.version},
            ),
            "digestAlgorithm": "MANIFEST_MD5",
        }

    @staticmethod
    def by_alias(versions: list[ArtifactRecord], alias: str) -> ArtifactRecord | None:
        for r in versions:
            if alias in r.aliases or alias == r.version:
                return r
        return None

    def membership_by_alias(
        self, versions: list[ArtifactRecord], alias: str
    ) -> dict[str, Any] | None:
        record = self.by_alias(versions, alias)
        return self.membership_node(record) if record else None

    def membership_by_name(self, entity: str, project: str, name: str) -> dict[str, Any] | None:
        collection, _, alias = name.partition(":")
        return self.membership_by_alias(
            self.sequence(entity, project, collection), alias or "latest"
        )

    def artifact_by_name(self, entity: str, project: str, name: str) -> dict[str, Any] | None:
        collection, _, alias = name.partition(":")
        record = self.by_alias(self.sequence(entity, project, collection), alias or "latest")
        return self.artifact_node(record) if record else None

    def artifact_files(self, record: ArtifactRecord, args: Mapping[str, Any]) -> dict[str, Any]:
        contents = (record.manifest or {}).get("contents") or {}
        names = sorted(n for n, e in contents.items() if not e.get("ref"))
        if wanted := args.get("names"):
            names = [n for n in names if n in wanted]

        def node(name: str) -> dict[str, Any]:
            entry = contents[name]
            url = self.upload_url("artifact", entry["digest"])
            return {
                "__typename": "File",
                "id": gid("File", record.index, name),
                "name": name,
                "displayName": name,
                "url": url,
                "directUrl": url,
                "sizeBytes": int(entry.get("size") or 0),
                "storagePath": None,
                "mimetype": None,
                "updatedAt": record.created_at,
                "digest": entry["digest"],
                "md5": entry["digest"],
            }

        return connection(names, args, node)

    def has_project(self, entity: str, project: str) -> bool:
        places = {(r.entity, r.project) for r in self.runs.values()}
        places |= {(r.entity, r.project) for r in self.artifacts}
        return (entity, project) in places


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- The W&B view of a local registry -------------------------------------------------


class RegistryGraph:
    """Builds the GraphQL object graph of one organization from a `Registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        base_url: Callable[[], str],
        entity: str,
        organization: str,
        org_entity: str,
        username: str,
        uploads: Uploads,
        features: tuple[str, ...] = PROFILES["saas"],
        sign: Callable[[str, str, str], str] | None = None,
        registry_project: str = MODEL_REGISTRY,
        others: Mapping[str, Registry] | None = None,
    ) -> None:
        self.registry_project = registry_project
        self.features = features
        self.sign = sign or (lambda c, v, p: f"{base_url()}/files/{_q(c)}/{v}/{_q(p)}")
        self.registry = registry
        self.base_url = base_url
        self.entity = entity
        self.organization = organization
        self.org_entity = org_entity
        self.username = username
        self.uploads = uploads
        self.lock = threading.RLock()
        # The organisation's other registries, by project, each a graph of its own.
        self.others: dict[str, RegistryGraph] = {}
        for project, other in (others or {}).items():
            self.serve_other(project, other)

    def serve_other(self, registry_project: str, registry: Registry | None) -> None:
        """Serve `registry` as the organisation's registry `registry_project` (None: none)."""
        if registry is None:
            self.others.pop(registry_project, None)
            return
        graph = RegistryGraph(
            registry,
            base_url=self.base_url,
            entity=self.entity,
            organization=self.organization,
            org_entity=self.org_entity,
            username=self.username,
            uploads=self.uploads,
            features=self.features,
            sign=self.sign,
            registry_project=registry_project,
        )
        graph.lock = self.lock
        self.others[registry_project] = graph

    def graphs(self) -> list[RegistryGraph]:
        """This registry's graph, then those of the organisation's other registries."""
        return [self, *self.others.values()]

    def graph_of(self, registry_project: str) -> RegistryGraph:
        return self.others.get(registry_project, self)

    def key(self, collection: str) -> str:
        """`collection` in file and manifest URLs: prefixed by its registry but in the
        model registry, so the same name in two registries is two paths."""
        if self.registry_project == MODEL_REGISTRY:
            return collection
        return f"{self.registry_project}~{collection}"

    def graph_of_key(self, key: str) -> tuple[RegistryGraph, str]:
        project, sep, collection = key.rpartition("~")
        return (self.graph_of(project), collection) if sep else (self, key)

    def artifact_id(self, v: Version) -> str:
        if self.registry_project == MODEL_REGISTRY:
            return gid("Artifact", v.collection, v.version)
        return gid("Artifact", v.collection, v.version, self.registry_project)

    def graph_of_id(self, artifact_id: str) -> RegistryGraph:
        parts = ungid(artifact_id)
        return self.graph_of(parts[3]) if len(parts) == 4 else self

    # Plain nodes.

    def entity_node(self, name: str | None = None) -> dict[str, Any]:
        org = {"__typename": "Organization", "name": self.organization}
        return {"__typename": "Entity", "name": name or self.entity, "organization": org}

    def project(self, name: str, entity: str | None = None) -> dict[str, Any]:
        """The registry project of the org entity, or a project of `entity` (the team
        by default: where sources and lineage runs live)."""
        if name != self.registry_project:
            return self.user_project(name, entity or self.entity)
        entity = self.org_entity
        return {
            "__typename": "Project",
            "id": gid("Project", entity, name),
            "internalId": gid("ProjectInternalId", entity, name),
            "name": name,
            "entity": self.entity_node(entity),
            "description": "",
            "createdAt": EPOCH,
            "updatedAt": EPOCH,
            "access": "PRIVATE",
            "readOnly": False,
            "allowAllArtifactTypesInRegistry": False,
            "artifactTypes": {"edges": [{"node": {"__typename": "ArtifactType", "name": "model"}}]},
            "artifactCollectionMembership": lambda a: self.membership_by_name(name, a["name"]),
            "artifactCollection": lambda a: self.collection_by_name(name, a["name"]),
            "artifactType": lambda a: self.artifact_type(name, a["name"]),
            "artifactCollections": lambda a: self.project_collections(name, a),
            "run": lambda a: self.run(entity, name, a["name"]),
        }

    def user_project(self, name: str, entity: str) -> dict[str, Any]:
        """A project of runs and their artifacts: uploaded ones and lineage runs."""
        up = self.uploads

        def collection(a: Mapping[str, Any]) -> dict[str, Any] | None:
            found = up.sequence(entity, name, a["name"])
            return up.sequence_node(entity, name, a["name"]) if found else None

        def artifact_type(a: Mapping[str, Any]) -> dict[str, Any] | None:
            if not up.sequences(entity, name, a["name"]):
                return None
            return {
                "__typename": "ArtifactType",
                "id": gid("ArtifactType", entity, name, a["name"]),
                "name": a["name"],
                "description": None,
                "createdAt": EPOCH,
                "artifactCollection": collection,
                "artifactCollections": lambda b: up.collections(entity, name, b, a["name"]),
            }

        def membership(a: Mapping[str, Any]) -> dict[str, Any] | None:
            found = up.membership_by_name(entity, name, a["name"])
            return found or self.source_membership(entity, name, a["name"])

        return {
            **up.project_info(entity, name),
            "description": "",
            "createdAt": EPOCH,
            "updatedAt": EPOCH,
            "access": "PRIVATE",
            "readOnly": self.read_only(entity, name),
            "artifactCollectionMembership": membership,
            "artifactCollection": collection,
            "artifact": lambda a: up.artifact_by_name(entity, name, a["name"]),
            "artifactType": artifact_type,
            "artifactCollections": lambda a: up.collections(entity, name, a),
            "run": lambda a: self.run(entity, name, a["name"]),
            "bucket": lambda a: self.run(entity, name, a["name"]),
            "runs": lambda a: up.project_runs(entity, name, a),
            "runCount": lambda a: up.project_runs(entity, name, a)["totalCount"],
        }

    @staticmethod
    def tag(name: str) -> dict[str, Any]:
        return {"__typename": "Tag", "id": gid("Tag", name), "name": name}

    def collection(self, c: Collection, project: str | None = None) -> dict[str, Any]:
        project = project or self.registry_project
        return {
            "__typename": "ArtifactPortfolio",
            "id": gid("ArtifactCollection", project, c.name),
            "name": c.name,
            "description": c.description or None,
            "createdAt": c.created_at or EPOCH,
            "updatedAt": c.created_at or EPOCH,
            "project": self.project(project),
            "defaultArtifactType": {"__typename": "ArtifactType", "name": c.type},
            "tags": {"edges": [{"node": self.tag(t)} for t in c.tags]},
            "artifactMembership": lambda a: self.membership(c.name, a["aliasName"]),
            "aliases": lambda a: connection(
                sorted(c.aliases), a, lambda alias: self.alias(alias, c.name)
            ),
            "artifacts": lambda a: self.artifacts(c.name, a),
        }

    def alias(self, alias: str, collection: str) -> dict[str, Any]:
        return {
            "__typename": "ArtifactAlias",
            "id": gid("ArtifactAlias", collection, alias),
            "alias": alias,
            "artifactCollection": {
                "__typename": "ArtifactPortfolio",
                "name": collection,
                "project": self.project(self.registry_project),
            },
        }

    def source_project(self, collection: str) -> str:
        """The team project the versions of a registry collection were logged to."""
        if self.registry_project == CHECKPOINTS_REGISTRY:
            return CHECKPOINTS_SOURCE_PROJECT
        return SOURCE_PROJECTS.get(collection, SOURCE_PROJECT)

    def read_only(self, entity: str, project: str) -> bool:
        return entity == self.entity and project in READ_ONLY_PROJECTS

    def source_membership(self, entity: str, project: str, name: str) -> dict[str, Any] | None:
        """`name:alias` in a source project: the artifact a registry version links to."""
        collection, _, alias = name.partition(":")
        if entity != self.entity or self.source_project(collection) != project:
            return None
        if not self.get_collection(collection):
            return None
        try:
            v = self.registry.resolve(ArtifactRef(name=collection, alias=alias or "latest"))
        except NotFoundError:
            return None
        return self.membership_of(v, linked=False)

    def artifact(self, v: Version) -> dict[str, Any]:
        # The artifact of a registry version is its source, logged in a team project;
        # the registry only holds a link (a membership) to it.
        return {
            "__typename": "Artifact",
            "id": self.artifact_id(v),
            "artifactSequence": {
                "__typename": "ArtifactSequence",
                "name": v.collection,
                "project": self.project(self.source_project(v.collection), self.entity),
            },
            "versionIndex": v.index,
            "artifactType": {"__typename": "ArtifactType", "name": v.type},
            "description": v.description or None,
            "metadata": json.dumps(dict(v.metadata)),
            "ttlDurationSeconds": -2,
            "ttlIsInherited": True,
            "tags": [self.tag(t) for t in v.tags],
            "historyStep": None,
            "state": "COMMITTED",
            "size": v.size,
            "digest": v.digest,
            "digestAlgorithm": "MANIFEST_MD5",
            "commitHash": None,
            "fileCount": v.file_count,
            "createdAt": v.created_at or EPOCH,
            "updatedAt": v.created_at or EPOCH,
            "aliases": [self.alias(a, v.collection) for a in v.aliases],
            "currentManifest": {
                "file": {
                    "directUrl": f"{self.base_url()}/manifests/{_q(self.key(v.collection))}"
                    f"/{v.version}.json"
                }
            },
            "createdBy": lambda _a: self.created_by(v),
            "usedBy": lambda _a: {
                "edges": [{"node": self.run_info(r)} for r in self.lineage(v).used_by]
                + [
                    {"node": self.uploads.run_node(r)}
                    for r in self.uploads.users_of(self.artifact_id(v))
                ]
            },
            "artifactMemberships": lambda _a: {"edges": [{"node": self.membership_of(v)}]},
        }

    def membership(self, collection: str, alias: str) -> dict[str, Any] | None:
        try:
            v = self.registry.resolve(ArtifactRef(name=collection, alias=alias))
        except NotFoundError:
            return None
        return self.membership_of(v)

    def membership_of(self, v: Version, *, linked: bool = True) -> dict[str, Any]:
        """The registry link of `v`, or (`linked` False) its place in its source project."""
        c = self.registry.get_collection(v.collection)
        where = self.registry_project if linked else self.source_project(v.collection)
        found = self.collection(c, where)
        if not linked:
            found["__typename"] = "ArtifactSequence"
        return {
            "__typename": "ArtifactCollectionMembership",
            "id": gid("ArtifactCollectionMembership", where, v.collection, v.version),
            "versionIndex": v.index,
            "createdAt": v.created_at or EPOCH,
            "aliases": [self.alias(a, v.collection) for a in v.aliases],
            "artifactCollection": found,
            "artifact": self.artifact(v),
            "files": lambda a: self.files(v, a),
        }

    def file(self, v: Version, entry: FileEntry) -> dict[str, Any]:
        # `url` is on the W&B host, which redirects to storage; `directUrl` is a signed
        # storage URL, for some files that same redirect (both occur on W&B).
        key = self.key(v.collection)
        url = f"{self.base_url()}/files/{_q(key)}/{v.version}/{_q(entry.path)}"
        redirected = zlib.crc32(entry.path.encode()) % 2 == 1
        direct = url if redirected else self.sign(key, v.version, entry.path)
        return {
            "__typename": "File",
            "id": gid("File", v.collection, v.version, entry.path),
            "name": entry.path,
            "displayName": entry.path,
            "url": url,
            "directUrl": direct,
            "sizeBytes": entry.size,
            "storagePath": None,
            "mimetype": None,
            "updatedAt": v.created_at or EPOCH,
            "digest": entry.digest,
            "md5": entry.digest,
        }

    def run_info(self, run: RunInfo) -> dict[str, Any]:
        project = run.project or "runs"
        return {
            "__typename": "Run",
            "id": gid("Run", project, run.id),
            "name": run.id,
            "displayName": run.name or run.id,
            "project": self.project(project, run.entity),
            "projectId": 1,
            "tags": [],
            "sweepName": None,
            "state": run.state or "finished",
            "group": run.group or None,
            "jobType": run.job_type or None,
            "commit": None,
            "readOnly": False,
            "createdAt": EPOCH,
            "heartbeatAt": EPOCH,
            "description": None,
            "notes": None,
            "historyLineCount": 0,
            "historyKeys": {"lastStep": -1, "keys": {}},
            "config": "{}",
            "summaryMetrics": "{}",
            "systemMetrics": "{}",
            "user": {"__typename": "User", "name": self.username, "username": self.username},
            "outputArtifacts": lambda a: connection(self.outputs_of(run), a, self.artifact),
        }

    # Resolvers behind arguments.

    def lineage(self, v: Version) -> Any:
        return self.registry.lineage(v.ref())

    def created_by(self, v: Version) -> dict[str, Any] | None:
        run = self.lineage(v).produced_by
        return self.run_info(run) if run else None

    def outputs_of(self, run: RunInfo) -> list[Version]:
        """The versions whose lineage names `run` (in its project) as their producer,
        oldest first, as W&B lists a run's output artifacts."""
        found = [
            v
            for c in self.collections()
            for v in self.all_versions(c.name)
            if (producer := self.lineage(v).produced_by) is not None
            and producer.id == run.id
            and self._run_place(producer) == self._run_place(run)
        ]
        return sorted(found, key=lambda v: (v.created_at, v.collection, v.index))

    def all_runs(self) -> Iterator[RunInfo]:
        """Every run the lineage of any version names."""
        for c in self.collections():
            for v in self.all_versions(c.name):
                yield from _runs_of(self.lineage(v))

    def _run_place(self, run: RunInfo) -> tuple[str, str]:
        return run.entity or self.entity, run.project or "runs"

    def run(self, entity: str, project: str, name: str) -> dict[str, Any] | None:
        if uploaded := self.uploads.find_run(entity, project, name):
            return self.uploads.run_node(uploaded)
        for run in self.all_runs():
            if run.id == name and self._run_place(run) == (entity, project):
                return self.run_info(run)
        return None

    def all_versions(self, collection: str) -> list[Version]:
        return self.registry.list_versions(collection)

    def get_collection(self, name: str) -> Collection | None:
        try:
            return self.registry.get_collection(name)
        except NotFoundError:
            return None

    def membership_by_name(self, project: str, name: str) -> dict[str, Any] | None:
        collection, _, alias = name.partition(":")
        if project != self.registry_project or not self.get_collection(collection):
            return None
        return self.membership(collection, alias or "latest")

    def collection_by_name(self, project: str, name: str) -> dict[str, Any] | None:
        c = self.get_collection(name) if project == self.registry_project else None
        return self.collection(c) if c else None

    def artifact_type(self, project: str, name: str) -> dict[str, Any] | None:
        if project != self.registry_project:
            return None
        return {
            "__typename": "ArtifactType",
            "id": gid("ArtifactType", project, name),
            "name": name,
            "description": None,
            "createdAt": EPOCH,
            "artifactCollection": lambda a: self._typed_collection(name, a["name"]),
            "artifactCollections": lambda a: self.project_collections(project, a, type_name=name),
        }

    def _typed_collection(self, type_name: str, name: str) -> dict[str, Any] | None:
        c = self.get_collection(name)
        return self.collection(c) if c and c.type == type_name else None

    def collections(self) -> list[Collection]:
        return sorted(self.registry.list_collections(type=""), key=lambda c: c.name)

    def project_collections(
        self, project: str, args: Mapping[str, Any], *, type_name: str | None = None
    ) -> dict[str, Any]:
        found = self.collections() if project == self.registry_project else []
        found = [c for c in found if type_name in (None, c.type)]
        filt = _json_arg(args.get("filters"))
        found = [c for c in found if matches(filt, self.collection_fields(c))]
        return connection(found, args, self.collection)

    @staticmethod
    def collection_fields(c: Collection) -> dict[str, Any]:
        return {"name": c.name, "tag": list(c.tags), "description": c.description, "type": c.type}

    def version_fields(self, v: Version) -> dict[str, Any]:
        return {
            "alias": list(v.aliases),
            "tag": list(v.tags),
            "version": v.version,
            "state": "COMMITTED",
            "id": self.artifact_id(v),
        }

    def artifacts(self, collection: str, args: Mapping[str, Any]) -> dict[str, Any]:
        versions = self.ordered(self.all_versions(collection), args.get("order"))
        filt = _json_arg(args.get("filters"))
        versions = [v for v in versions if matches(filt, self.version_fields(v))]
        return connection(versions, args, self.artifact, edge=lambda v: {"version": v.version})

    @staticmethod
    def ordered(versions: list[Version], order: str | None) -> list[Version]:
        """Newest first unless `order` says otherwise (W&B's default for versions)."""
        if not order:
            return sorted(versions, key=lambda v: v.index, reverse=True)
        field = order.lstrip("+-")
        if field not in ("createdAt", "created_at", "versionIndex"):
            raise GraphQLFailure(f"unsupported order {order!r}")
        return sorted(versions, key=lambda v: v.index, reverse=order.startswith("-"))

    def registries(self, args: Mapping[str, Any]) -> dict[str, Any]:
        filt = _json_arg(args.get("filters"))
        found = [g for g in self.graphs() if matches(filt, {"name": g.registry_project})]
        return connection(found, args, lambda g: g.project(g.registry_project))

    def _registries(self, args: Mapping[str, Any]) -> list[RegistryGraph]:
        """The registries that a query's `projectFilters` selects."""
        filt = _json_arg(args.get("projectFilters"))
        return [g for g in self.graphs() if matches(filt, {"name": g.registry_project})]

    def registry_collections(self, args: Mapping[str, Any]) -> dict[str, Any]:
        filt = _json_arg(args.get("filters"))
        found = [
            (g, c)
            for g in self._registries(args)
            for c in g.collections()
            if matches(filt, self.collection_fields(c))
        ]
        return connection(found, args, lambda gc: gc[0].collection(gc[1]))

    def registry_versions(self, args: Mapping[str, Any]) -> dict[str, Any]:
        found: list[tuple[RegistryGraph, Version]] = []
        cfilt = _json_arg(args.get("collectionFilters"))
        vfilt = _json_arg(args.get("filters"))
        for g in self._registries(args):
            for c in g.collections():
                if matches(cfilt, self.collection_fields(c)):
                    found += [
                        (g, v)
                        for v in self.ordered(g.all_versions(c.name), None)
                        if matches(vfilt, g.version_fields(v))
                    ]
        return connection(found, args, lambda gv: gv[0].membership_of(gv[1]))

    def files(self, v: Version, args: Mapping[str, Any]) -> dict[str, Any]:
        entries = [e for e in self.registry.files(v.ref()) if not e.ref]
        if names := args.get("names"):
            entries = [e for e in entries if e.path in names]
        return connection(entries, args, lambda e: self.file(v, e))

    def version_by_id(self, artifact_id: str) -> Version:
        kind, collection, version = [*ungid(artifact_id), "", "", ""][:3]
        if (graph := self.graph_of_id(artifact_id)) is not self:
            return graph.version_by_id(artifact_id)
        if kind != "Artifact":
            raise GraphQLFailure(f"not an artifact id: {artifact_id!r}")
        return self.registry.resolve(ArtifactRef(name=collection, alias=version))

    def artifact_by_id(self, artifact_id: str) -> dict[str, Any] | None:
        if len(ungid(artifact_id)) == 2:
            return self.uploads.artifact_node_any(artifact_id)
        graph = self.graph_of_id(artifact_id)
        try:
            return graph.artifact(graph.version_by_id(artifact_id))
        except NotFoundError:
            return None

    def org_entity_node(self) -> dict[str, Any]:
        return {
            "__typename": "Entity",
            "name": self.org_entity,
            "projects": self.registries,
            "artifactCollections": self.registry_collections,
            "artifactMemberships": self.registry_versions,
        }

    def organization_node(self, name: str) -> dict[str, Any] | None:
        if name not in (self.organization, self.org_entity):
            return None
        return {
            "__typename": "Organization",
            "name": self.organization,
            "orgEntity": self.org_entity_node(),
            "advancedRegistryFeatures": {"advancedSearch": False},
        }

    # Mutations.

    def add_aliases(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        v = self.version_by_id(data["artifactID"])
        self._check_unprotected(v, data.get("aliases") or ())
        for alias in data.get("aliases") or ():
            self.registry.set_alias(v.ref(), alias["alias"])
        return {"success": True}

    def delete_aliases(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        v = self.version_by_id(data["artifactID"])
        self._check_unprotected(v, data.get("aliases") or ())
        for alias in data.get("aliases") or ():
            self.registry.remove_alias(v.ref(), alias["alias"])
        return {"success": True}

    @staticmethod
    def _check_unprotected(v: Version, aliases: Iterable[Mapping[str, Any]]) -> None:
        """Refuse a change to a protected alias, as W&B refuses it to a registry member
        (the SDK's `Artifact._add_aliases` turns the error into "You do not have
        permission to add the following alias ...")."""
        for alias in aliases:
            if (v.collection, alias["alias"]) in PROTECTED_ALIASES:
                raise GraphQLRefusal(
                    f"permission denied: alias {alias['alias']!r} of {v.collection} is "
                    "protected; only registry admins may change it"
                )

    def update_artifact(self, args: Mapping[str, Any]) -> dict[str, Any]:
        data = args["input"]
        v = self.version_by_id(data["artifactID"])
        source = self.source_project(v.collection)
        if self.read_only(self.entity, source):
            raise GraphQLRefusal(
                f"permission denied: {self.entity}/{source} is read-only for {self.username}"
            )
        removed = {t["tagName"] for t in data.get("tagsToDelete") or ()}
        added = [t["tagName"] for t in data.get("tagsToAdd") or ()]
        tags = [t for t in v.tags if t not in removed]
        tags += [t for t in added if t not in tags]
        metadata = data.get("metadata")
        updated = self.registry.update_version(
            v.ref(),
            description=data.get("description"),
            metadata=json.loads(metadata) if metadata is not None else None,
            tags=tags if tags != list(v.tags) else None,
        )
        return {"artifact": self.artifact(updated)}

    def root(self) -> dict[str, Any]:
        """The Query and Mutation root fields."""
        viewer = {
            "__typename": "User",
            "id": gid("User", self.username),
            "entity": self.entity,
            "username": self.username,
            "email": f"{self.username}@example.invalid",
            "flags": "{}",
            "teams": {"edges": [{"node": {"__typename": "Entity", "name": self.entity}}]},
        }
        features = [{"name": f, "isEnabled": True} for f in self.features]
        return {
            "viewer": viewer,
            "serverInfo": {"__typename": "ServerInfo", "features": features},
            "entity": lambda a: self.entity_by_name(a.get("name")),
            "organization": lambda a: self.organization_node(a["name"]),
            "project": lambda a: self.project_by_name(a.get("entityName"), a["name"]),
            "artifact": lambda a: self.artifact_by_id(a["id"]),
            "artifactCollection": lambda a: self._collection_by_id(a["id"]),
            "addAliases": lambda a: self._by_input(a).add_aliases(a),
            "deleteAliases": lambda a: self._by_input(a).delete_aliases(a),
            "updateArtifact": lambda a: self._by_input(a).update_artifact(a),
            "model": lambda a: (
                self.project_by_name(a.get("entityName"), a["name"])
                or self.user_project(a["name"], a.get("entityName") or self.entity)
            ),
            "upsertBucket": self.uploads.upsert_bucket,
            "createRunFiles": self.uploads.create_run_files,
            "createArtifact": self.uploads.create_artifact,
            "createArtifactManifest": self.uploads.create_manifest,
            "updateArtifactManifest": self.uploads.update_manifest,
            "createArtifactFiles": self.uploads.create_artifact_files,
            "commitArtifact": self.uploads.commit_artifact,
            "useArtifact": self.use_artifact,
        }

    def _by_input(self, args: Mapping[str, Any]) -> RegistryGraph:
        """The registry graph of the version a mutation's input names."""
        return self.graph_of_id(args["input"]["artifactID"])

    def use_artifact(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """A run declares it used an artifact: uploaded, or a registry version."""
        target = args["input"]["artifactID"]
        if len(ungid(target)) != 2:
            self.version_by_id(target)  # a registry version that must exist
        self.uploads.use_artifact(args)
        return {"artifact": self.artifact_by_id(target)}

    def entity_by_name(self, name: str | None) -> dict[str, Any] | None:
        """A team or org entity (in the organisation) or the viewer's personal entity
        (a user who is a member of it), as FetchOrgInfoFromEntity reads them."""
        uploaded = any(r.entity == name for r in self.uploads.runs.values())
        if (
            not uploaded
            and name not in (self.entity, self.org_entity, self.username)
            and not any(self._run_place(run)[0] == name for run in self.all_runs())
        ):
            return None
        org = {
            "__typename": "Organization",
            "name": self.organization,
            "orgEntity": {"__typename": "Entity", "name": self.org_entity},
        }
        personal = name == self.username
        return {
            "__typename": "Entity",
            "name": name,
            "organization": None if personal else org,
            "user": {"__typename": "User", "organizations": [org]} if personal else None,
            "project": lambda a: self.project_by_name(name, a["name"]),
        }

    def project_by_name(self, entity: str | None, name: str) -> dict[str, Any] | None:
        entity = entity or self.entity
        if name in self.others:
            return self.others[name].project(name) if entity == self.org_entity else None
        if entity == self.entity and name == CHECKPOINTS_SOURCE_PROJECT and self.others:
            return self.others[CHECKPOINTS_REGISTRY].project(name, entity)
        if name == MODEL_REGISTRY:
            return self.project(name) if entity == self.org_entity else None
        if entity == self.entity and name in {SOURCE_PROJECT, *SOURCE_PROJECTS.values()}:
            return self.project(name, entity)
        if self.uploads.has_project(entity, name):
            return self.project(name, entity)
        if any(self._run_place(run) == (entity, name) for run in self.all_runs()):
            return self.project(name, entity)
        return None

    def _collection_by_id(self, collection_id: str) -> dict[str, Any] | None:
        parts = ungid(collection_id)
        if len(parts) != 3 or parts[0] != "ArtifactCollection":
            raise GraphQLFailure(f"not a collection id: {collection_id!r}")
        graph = self.graph_of(parts[1])
        c = graph.get_collection(parts[2])
        return graph.collection(c) if c else None

    # Files.

    def manifest(self, key: str, version: str) -> dict[str, Any]:
        graph, collection = self.graph_of_key(key)
        entries = graph.registry.files(ArtifactRef(name=collection, alias=version))
        contents = {}
        for e in entries:
            item: dict[str, Any] = {"digest": e.digest, "size": e.size}
            if e.ref:
                item["ref"] = e.ref
            if e.extra:
                item["extra"] = dict(e.extra)
            contents[e.path] = item
        return {
            "version": 1,
            "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"},
            "contents": contents,
        }

    def object_file(self, key: str, version: str, path: str) -> Path:
        graph, collection = self.graph_of_key(key)
        for e in graph.registry.files(ArtifactRef(name=collection, alias=version)):
            if e.path == path and not e.ref:
                return Path(graph.registry.object_path(e))  # type: ignore[attr-defined]
        raise NotFoundError(f"{collection}:{version} has no stored file {path!r}")


def _runs_of(lineage: Any) -> Iterator[RunInfo]:
    if lineage.produced_by:
        yield lineage.produced_by
    yield from lineage.used_by


def _q(text: str) -> str:
    return quote(text, safe="/")


# --- HTTP -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _faulted(self, *keys: str) -> bool:
        """Serve an injected fault for this request, if one is due; True when served."""
        fault = self.server.emulator.faults.take(f"{self.command} {self.path}", *keys)
        if fault is None:
            return False
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._send(500, b'{"errors": [{"message": "injected fault"}]}')
        return True

    def _authorized(self) -> bool:
        """The request carries the emulator's API key; otherwise it is answered 401, as
        W&B answers it. The key travels as HTTP Basic auth with the user `api`, as the
        SDK sends it to the W&B host (`WandbStoragePolicy.load_file` in
        wandb/sdk/artifacts/storage_policies/wandb_storage_policy.py), while a signed
        URL is fetched without it."""
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        with contextlib.suppress(ValueError):
            if scheme.lower() == "basic":
                user, _, key = base64.b64decode(token).decode().partition(":")
                if user == "api" and key == self.server.emulator.api_key:
                    return True
        self.server.emulator.record("401")
        self._send(401, b'{"errors": [{"message": "user is not logged in"}]}')
        return False

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b"".join(self._chunks())
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # With FILESTREAM_GZIP on, wandb-core may compress file-stream bodies.
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def _chunks(self) -> Iterator[bytes]:
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass

    def do_POST(self) -> None:
        raw = self._body()
        emulator = self.server.emulator
        emulator.posted.append(raw)
        if self.path.startswith("/sdk/otel/"):
            self._send(200, b"", "application/x-protobuf")
            return
        if not self._authorized():
            return
        if m := re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", self.path):
            if self._faulted():
                return
            emulator.record("POST /file_stream")
            parts = [unquote(p) for p in m.groups()]
            if problem := emulator.uploads.file_stream(*parts, json.loads(raw)):
                emulator.record_error(f"file_stream of run {parts[2]}: {problem}")
                self._send(400, json.dumps({"error": problem}).encode())
                return
            self._send(200, json.dumps({"exitcode": None, "limits": {}}).encode())
            return
        if self.path.rstrip("/") != "/graphql":
            emulator.record_error(f"POST to unknown path {self.path}")
            self._send(404, b"{}")
            return
        with contextlib.suppress(ValueError, AttributeError):
            if self._faulted(operation_name(json.loads(raw))):
                return
        status, payload = emulator.answer(raw)
        self._send(status, json.dumps(payload).encode())

    def do_PUT(self) -> None:
        emulator = self.server.emulator
        m = re.fullmatch(r"/storage/(artifact|manifest|run)/(.+)", self.path)
        if m is None:
            emulator.record_error(f"PUT to unknown path {self.path}")
            self._send(404, b"{}")
            return
        if self._faulted():
            return
        kind, parts = m.group(1), [unquote(p) for p in m.group(2).split("/")]
        emulator.record(f"PUT /storage/{kind}")
        target = emulator.uploads.blob(kind, *parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{threading.get_ident()}.part")
        # Written aside and renamed: a connection lost mid-upload stores nothing.
        with partial.open("wb") as out:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                for chunk in self._chunks():
                    out.write(chunk)
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        break
                    out.write(chunk)
                    left -= len(chunk)
                if left:
                    partial.unlink()
                    return
        partial.replace(target)
        if kind == "run":
            with emulator.uploads.lock:
                run = emulator.uploads.run_record(*parts[:3])
                run.files[parts[3]] = target.stat().st_size
        self._send(200, b"")

    def do_GET(self) -> None:
        emulator = self.server.emulator
        try:
            if m := re.fullmatch(r"/storage/(artifact|manifest|run)/(.+)", self.path):
                parts = [unquote(p) for p in m.group(2).split("/")]
                path = emulator.uploads.blob(m.group(1), *parts)
                if not path.exists():
                    raise NotFoundError(f"nothing stored at {self.path}")
                emulator.record(f"GET /storage/{m.group(1)}")
                self._stream(path)
                return
            if m := re.fullmatch(r"/manifests/(.+)/(v\d+)\.json", self.path):
                body = emulator.manifest_bytes(unquote(m.group(1)), m.group(2))
                self._send(200, body)
                return
            if m := re.fullmatch(r"/files/([^/]+)/(v\d+)/(.+)", self.path):
                # W&B answers a file URL on its own host with a redirect to storage.
                collection, version, name = unquote(m.group(1)), m.group(2), unquote(m.group(3))
                emulator.graph.object_file(collection, version, name)  # 404 when absent
                emulator.record("GET /files redirect")
                self.send_response(302)
                self.send_header("Location", emulator.storage.sign(collection, version, name))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        except NotFoundError as exc:
            self._send(404, json.dumps({"error": str(exc)}).encode())
            return
        emulator.record_error(f"GET of unknown path {self.path}")
        self._send(404, b"{}")

    def _stream(self, path: Path) -> None:
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with path.open("rb") as fh:
            shutil.copyfileobj(fh, self.wfile, CHUNK)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: WandbEmulator


# --- Storage: the signed URLs files are downloaded from ------------------------------

_EXPIRED = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
    "<Message>Invalid argument.</Message><Details>The provided token has expired. "
    "Request signature expired at: {at}</Details></Error>"
)
_TWO_AUTHS = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidArgument</Code>"
    "<Message>Invalid argument.</Message><Details>Only one auth mechanism allowed; only "
    "the X-Goog-Algorithm query parameter, Signature query parameter or Authorization "
    "header should be specified</Details></Error>"
)
_BAD_SIGNATURE = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
    "<Message>Access denied.</Message></Error>"
)


class Storage:
    """A storage host beside the W&B host (GCS on W&B's cloud): files by signed URLs
    that expire after `ttl` seconds (then 400 `ExpiredToken`, as GCS answers), honour
    `Range`, stream at most `bytes_per_sec`, and refuse a request that also carries an
    `Authorization` header. `requests` keeps the path and headers of every request."""

    def __init__(self, emulator: WandbEmulator, *, ttl: float, bytes_per_sec: int | None) -> None:
        self.emulator = emulator
        self.ttl = ttl
        self.bytes_per_sec = bytes_per_sec
        self.secret = os.urandom(16)
        self.requests: list[tuple[str, dict[str, str]]] = []
        # (index into `requests`, status, the refusal's XML body)
        self.refused: list[tuple[int, int, str]] = []
        self.server = _StorageServer(("127.0.0.1", 0), _StorageHandler)
        self.server.storage = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self.secret, f"{path}\n{expires}".encode(), "sha256").hexdigest()

    def sign(self, collection: str, version: str, name: str) -> str:
        """A URL for one stored file, valid for `ttl` seconds from now."""
        path = f"/bucket/{_q(collection)}/{version}/{_q(name)}"
        expires = int(time.time() + self.ttl)
        return f"{self.base_url}{path}?Expires={expires}&Signature={self._signature(path, expires)}"

    def expired_count(self, start: int = 0) -> int:
        """Requests from index `start` on that were refused as expired."""
        return sum(1 for i, _, body in self.refused if i >= start and "ExpiredToken" in body)

    def check(self, target: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        """(status, XML body) refusing the request, or None when it may be served."""
        if "authorization" in {k.lower() for k in headers}:
            return 400, _TWO_AUTHS
        url = urlsplit(target)
        query = parse_qs(url.query)
        try:
            expires = int(query["Expires"][0])
            signature = query["Signature"][0]
        except (KeyError, ValueError):
            return 403, _BAD_SIGNATURE
        if not hmac.compare_digest(signature, self._signature(url.path, expires)):
            return 403, _BAD_SIGNATURE
        if time.time() > expires:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            return 400, _EXPIRED.format(at=at)
        return None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread:
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()


class _StorageServer(ThreadingHTTPServer):
    daemon_threads = True
    storage: Storage


class _StorageHandler(BaseHTTPRequestHandler):
    server: _StorageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        storage = self.server.storage
        emulator = storage.emulator
        with storage.emulator.graph.lock:
            index = len(storage.requests)
            storage.requests.append((self.path, dict(self.headers.items())))
        if refused := storage.check(self.path, self.headers):
            storage.refused.append((index, *refused))
            self._send(refused[0], refused[1].encode(), "application/xml; charset=UTF-8")
            return
        m = re.fullmatch(r"/bucket/([^/]+)/(v\d+)/(.+)", urlsplit(self.path).path)
        try:
            if m is None:
                raise NotFoundError(f"no object at {self.path}")
            path = emulator.graph.object_file(unquote(m.group(1)), m.group(2), unquote(m.group(3)))
        except NotFoundError:
            self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return
        emulator.record("GET /files")
        self._stream(path)

    def _stream(self, path: Path) -> None:
        size = path.stat().st_size
        start, end = 0, size - 1
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if ranged and int(ranged.group(1)) < size:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2) or end), end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        rate = self.server.storage.bytes_per_sec
        piece = max(1, rate // 20) if rate else CHUNK
        left = end - start + 1
        with path.open("rb") as fh, contextlib.suppress(ConnectionError):
            fh.seek(start)
            while left > 0 and (chunk := fh.read(min(piece, left))):
                self.wfile.write(chunk)
                left -= len(chunk)
                if rate:
                    time.sleep(len(chunk) / rate)


class WandbEmulator:
    """The emulator: start it, point `WANDB_BASE_URL` at `base_url`, check `errors`."""

    def __init__(
        self,
        registry: Registry,
        *,
        entity: str = "team",
        organization: str = ORGANIZATION,
        org_entity: str = ORG_ENTITY,
        username: str = VIEWER,
        port: int = 0,
        max_seconds: float = 300.0,
        api_key: str | None = None,
        profile: str = "saas",
        url_ttl: float = 3600.0,
        storage_bytes_per_sec: int | None = None,
        checkpoints: Registry | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        self.profile = profile
        self.api_key = api_key or FAKE_KEY
        self.errors: list[str] = []
        self.faults = Faults()
        self.operations: list[str] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.posted: list[bytes] = []  # every POST body as received, for tests to search
        self.max_seconds = max_seconds
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.emulator = self
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._storage = tempfile.TemporaryDirectory(prefix="wandb-emulator-")
        self.uploads = Uploads(Path(self._storage.name), lambda: self.base_url, entity)
        self.graph = RegistryGraph(
            registry,
            base_url=lambda: self.base_url,
            entity=entity,
            organization=organization,
            org_entity=org_entity,
            username=username,
            uploads=self.uploads,
            features=PROFILES[profile],
            sign=lambda *parts: self.storage.sign(*parts),
            others={CHECKPOINTS_REGISTRY: checkpoints} if checkpoints else None,
        )
        self.storage = Storage(self, ttl=url_ttl, bytes_per_sec=storage_bytes_per_sec)
        self.uploads.lock = self.graph.lock

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def use(self, registry: Registry, checkpoints: Registry | None = None) -> None:
        """Serve `registry` as the model registry from now on, and `checkpoints` (if
        given) as the registry `checkpoints` (tests swap in a fresh copy per test)."""
        with self.graph.lock:
            self.graph.registry = registry
            self.graph.serve_other(CHECKPOINTS_REGISTRY, checkpoints)

    def take_errors(self) -> list[str]:
        """The recorded errors, clearing them."""
        errors, self.errors = self.errors, []
        return errors

    def record(self, operation: str, variables: Mapping[str, Any] | None = None) -> None:
        """Note a request (operation name and variables) for tests to inspect."""
        self.operations.append(operation)
        self.requests.append((operation, dict(variables or {})))

    def record_error(self, message: str) -> None:
        """Note a failure that should fail the test."""
        self.errors.append(message)

    def answer(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Execute one GraphQL request; (status, JSON body)."""
        try:
            body = json.loads(raw)
            name = operation_name(body)
        except (ValueError, AttributeError) as exc:
            self.record_error(f"unreadable GraphQL request: {exc}")
            return 400, {"errors": [{"message": "unreadable request"}]}
        self.record(name, body.get("variables"))
        if log := os.environ.get("WANDB_EMULATOR_DOCUMENTS"):
            with open(log, "a") as f:
                f.write(json.dumps({"name": name, "query": body.get("query") or ""}) + "\n")
        if name not in MODELS:
            self.record_error(f"unknown operation {name!r}")
            return 500, {"errors": [{"message": f"the emulator does not know {name!r}"}]}
        try:
            document = check_document(body.get("query") or "", self.profile)
        except GraphQLInvalid as exc:
            self.record_error(f"{name}: invalid document: {exc}")
            return 400, {"errors": [{"message": str(exc)}]}
        try:
            with self.graph.lock:
                data = Executor(document, body.get("variables")).run(self.graph.root())
            for model in result_models(name):
                model.model_validate(data)
        except GraphQLRefusal as exc:
            return 200, {"errors": [{"message": str(exc)}], "data": None}
        except Exception as exc:  # every failure must reach the test, whatever its kind
            message = f"{name}: {type(exc).__name__}: {exc}"
            self.record_error(message)
            return 500, {"errors": [{"message": message}]}
        return 200, {"data": data}

    def manifest_bytes(self, collection: str, version: str) -> bytes:
        """The W&B manifest JSON of a version, checked with the SDK's manifest parser."""
        from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import (
            ArtifactManifestV1,
        )

        self.record("GET /manifests")
        with self.graph.lock:
            manifest = self.graph.manifest(collection, version)
        try:
            ArtifactManifestV1.from_manifest_json(manifest)
        except Exception as exc:
            self.record_error(f"manifest of {collection}:{version}: {exc}")
            raise
        return json.dumps(manifest).encode()

    def start(self) -> WandbEmulator:
        """Serve in a background thread; stop by itself after `max_seconds`."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.storage.start()
        self._timer = threading.Timer(self.max_seconds, self._time_is_up)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _time_is_up(self) -> None:
        self._server.shutdown()
        self.storage.server.shutdown()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._timer:
            self._timer.cancel()
        if self._thread:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self.storage.stop()
        self._storage.cleanup()

    def __enter__(self) -> WandbEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(registry: Registry, **kwargs: Any) -> Iterator[WandbEmulator]:
    """A started emulator over `registry`, stopped on exit."""
    emulator = WandbEmulator(registry, **kwargs)
    with emulator:
        yield emulator


# --- pytest: one emulator and one W&B backend per session -----------------------------

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key


class WandbService:
    """A running emulator and a `WandbRegistry` connected to it.

    Starting `wandb-core` is the slow part of `wandb.Api()`, so one backend (and one
    `wandb.Api`) serves the whole session while tests swap the emulated content.
    """

    def __init__(self, emulator: WandbEmulator, settings: Any) -> None:
        from tui.services.registry.wandb import WandbRegistry

        self.emulator = emulator
        self.settings = settings
        self.backend = WandbRegistry(settings)

    def serve(self, registry: Registry, checkpoints: Registry | None = None) -> Any:
        """Serve `registry` (and `checkpoints`, the registry `checkpoints`) through the
        emulator; the backend that reads it."""
        self.emulator.use(registry, checkpoints)
        self.emulator.take_errors()
        return self.backend

    def check(self) -> None:
        """Fail when the emulator recorded an error since the last `serve` or `check`."""
        errors = self.emulator.take_errors()
        assert not errors, "W&B emulator errors:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def wandb_services(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], WandbService]]:
    """The session's emulators (empty until a test calls `serve`) and W&B backends, one
    per profile, each started when first asked for.

    The SDK's folders point into a temporary directory for the whole session.
    """
    from tui.services.registry.local import LocalRegistry
    from tui.services.settings import Paths, load_settings

    root = tmp_path_factory.mktemp("wandb-service")
    started: dict[str, WandbService] = {}
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
        for name in ("HOME", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            folder = root / name.lower()
            folder.mkdir()
            mp.setenv(name, str(folder))
        for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("WANDB_SILENT", "true")

        def service(profile: str) -> WandbService:
            if profile not in started:
                empty = LocalRegistry(root / profile / "empty-registry")
                emulator = WandbEmulator(empty, max_seconds=900, profile=profile)
                stack.enter_context(emulator)
                app = root / profile / "app"
                paths = Paths(*(app / part for part in ("data", "cache", "state", "config")))
                settings = load_settings(
                    {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": emulator.base_url}, paths=paths
                )
                started[profile] = WandbService(emulator, settings)
            return started[profile]

        yield service


@pytest.fixture(params=list(PROFILES))
def wandb_service(
    request: pytest.FixtureRequest, wandb_services: Callable[[str], WandbService]
) -> WandbService:
    """The emulator and W&B backend of each profile in turn: a test using it runs
    against W&B (saas) and against a W&B Server without the newer features (server)."""
    return wandb_services(request.param)


def seed_checkpoints(root: Path) -> Registry:
    """The registry `checkpoints` of the default seed: `my-model`, as in the model
    registry, but two versions of other files (training checkpoints)."""
    from tui.services.registry.local import LocalRegistry

    registry = LocalRegistry(root / "registry")
    if not registry.list_collections(type=""):
        registry.create_collection(
            "my-model", description="Training checkpoints of my-model", tags=["checkpoint"]
        )
        for step in (500, 1000):
            folder = root / "files" / f"step-{step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}) + "\n")
            config = {"model_type": "llama", "hidden_size": 8, "checkpoint_step": step}
            (folder / "config.json").write_text(json.dumps(config) + "\n")
            (folder / "optimizer.pt").write_bytes(hashlib.sha256(str(step).encode()).digest() * 64)
            registry.add_version(
                "my-model", folder, metadata={"step": step}, description=f"step {step}"
            )
    return registry


def main(argv: list[str] | None = None) -> int:
    """Serve a registry (seeded with the demo content unless --registry is given)."""
    parser = argparse.ArgumentParser(prog="python -m tests.wandb_emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--registry", type=Path, help="an existing local registry folder")
    parser.add_argument("--entity", default=TEAM, help="the team entity")
    parser.add_argument("--profile", choices=list(PROFILES), default="saas")
    parser.add_argument("--url-ttl", type=float, default=3600.0, help="signed URLs live so long")
    parser.add_argument("--storage-bytes-per-sec", type=int, default=None)
    args = parser.parse_args(argv)

    from tui.services.registry.local import LocalRegistry

    with tempfile.TemporaryDirectory() as tmp:
        root = args.registry
        if root is None:
            from tui.services.demo import seed_demo

            root = Path(tmp) / "registry"
            seed_demo(root)
        emulator = WandbEmulator(
            LocalRegistry(root),
            entity=args.entity,
            port=args.port,
            max_seconds=args.max_seconds,
            profile=args.profile,
            url_ttl=args.url_ttl,
            storage_bytes_per_sec=args.storage_bytes_per_sec,
            checkpoints=seed_checkpoints(Path(tmp) / "checkpoints"),
        )
        with emulator:
            graph = emulator.graph
            print(emulator.base_url, flush=True)
            print(f"organization: {graph.organization} (org entity {graph.org_entity})")
            registries = ", ".join(g.registry_project for g in graph.graphs())
            print(f"registries:   {registries} of {graph.org_entity}")
            sources = ", ".join(
                f"{graph.entity}/{p}" + (" (read-only)" if p in READ_ONLY_PROJECTS else "")
                for p in sorted(
                    {SOURCE_PROJECT, CHECKPOINTS_SOURCE_PROJECT, *SOURCE_PROJECTS.values()}
                )
            )
            print(f"entities:     team entity {graph.entity} (sources: {sources}); viewer {VIEWER}")
            print(f"profile:      {args.profile}; storage at {emulator.storage.base_url}")
            print(f"api key:      {emulator.api_key} (the only one it accepts)", flush=True)
            deadline = time.monotonic() + args.max_seconds
            try:
                while time.monotonic() < deadline and emulator._thread.is_alive():  # type: ignore[union-attr]
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

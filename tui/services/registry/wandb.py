"""The W&B registry backend: the `Registry` protocol through `wandb.Api`.

`wandb` is imported only when the first call needs it (it costs about half a second).
Its GraphQL goes through the `wandb-core` subprocess, which would inherit the
terminal; the first `wandb.Api()` (which starts that subprocess) makes it start with
/dev/null as stdin, stdout and stderr, so nothing it ever prints reaches a Textual
screen, and the SDK's own console output is silenced with `WANDB_SILENT`.

References without an entity are handed to the SDK without one, so it resolves the
default entity (and, for `wandb-registry-*` projects, the organization) itself. A bare
name means the model registry `wandb-registry-model`.

Listing versions pages through the SDK's lazy paginators (`per_page` sized to the
request), so a collection with thousands of versions is never read whole. A version's
lineage is one query (`LINEAGE_GQL`) however many runs used it; the SDK's
`logged_by`/`used_by` would load each run with a request of its own. What a set of runs
logged (`produced_by_runs`) is one query per RUNS_PER_QUERY runs, each run an aliased
field of it, however many versions the registry and the results project hold.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tui.services.refs import DEFAULT_ALIAS, ArtifactRef, RefError, parse_ref
from tui.services.registry.protocol import (
    Collection,
    FileEntry,
    Lineage,
    NotFoundError,
    RegistryError,
    RunInfo,
    Version,
)
from tui.services.settings import mask

if TYPE_CHECKING:
    from tui.services.settings import Settings

API_TIMEOUT_SECONDS = 30
# Newest versions read per collection when listing collections; aliases on older
# versions are found through the collection's alias list.
ALIAS_SCAN = 50
MAX_PAGE = 100
DETAIL_WORKERS = 8
# A version's producer and users with every field a `RunInfo` needs, in one request.
# The SDK's logged_by()/used_by() ask only for run names and then load each run with
# a query of its own, a round trip per run. Project fields are those of the SDK's
# RunInfoFragment, so its ArtifactCreatedBy/ArtifactUsedBy models accept the answer.
# Like the SDK's ArtifactUsedBy, usedBy is read without paging.
LINEAGE_FRAGMENTS = """
fragment VersionLineage on Artifact {
  createdBy {
    __typename
    ... on Run {
      ...LineageRun
    }
  }
  usedBy {
    edges {
      node {
        ...LineageRun
      }
    }
  }
}

fragment LineageRun on Run {
  __typename
  id
  name
  displayName
  jobType
  group
  state
  project {
    id
    internalId
    name
    entity {
      name
    }
  }
}
"""
LINEAGE_GQL = (
    """
query ArtifactLineage($id: ID!) {
  artifact(id: $id) {
    ...VersionLineage
  }
}
"""
    + LINEAGE_FRAGMENTS
)
# Versions whose lineage one `ArtifactLineages` request reads, each by name (as
# `ArtifactMembershipByName` finds it) in an aliased field of its own.
LINEAGES_PER_QUERY = 25
# What a `Version` needs of an artifact a run logged: the fields of the SDK's
# ArtifactFragment (so the SDK builds the same `Artifact` that listing a collection
# gives) and the collections it is a member of (a registry link is a membership; its
# fields are those of the SDK's FetchLinkedArtifacts).
PRODUCED_FRAGMENTS = """
fragment ProducedArtifact on Artifact {
  __typename
  id
  artifactSequence {
    __typename
    name
    project {
      ...ProducedProject
    }
  }
  versionIndex
  artifactType {
    name
  }
  description
  metadata
  ttlDurationSeconds
  ttlIsInherited
  tags {
    __typename
    id
    name
  }
  historyStep
  state
  size
  digest
  digestAlgorithm
  commitHash
  fileCount
  createdAt
  updatedAt
  aliases {
    __typename
    id
    alias
    artifactCollection {
      __typename
      name
      project {
        ...ProducedProject
      }
    }
  }
  artifactMemberships {
    edges {
      node {
        versionIndex
        createdAt
        aliases {
          __typename
          id
          alias
        }
        artifactCollection {
          __typename
          name
          project {
            ...ProducedProject
          }
        }
      }
    }
  }
}

fragment ProducedProject on Project {
  id
  internalId
  name
  entity {
    name
  }
}
"""
# Runs asked about in one request (one aliased `project.run` each), and the artifacts
# read per run and page: eval-framework's runs log one results artifact each.
RUNS_PER_QUERY = 25
OUTPUTS_PER_PAGE = 50
MAX_OUTPUT_PAGES = 20
REGISTRY_PREFIX = "wandb-registry-"
# Whether the viewer may write a project: the SDK's own question before it updates a
# link's source (`IS_PROJECT_READ_ONLY_GQL`, wandb/apis/_generated/operations.py).
READ_ONLY_GQL = """
query IsProjectReadOnly($entity: String!, $project: String!) {
  project(entityName: $entity, name: $project) {
    readOnly
  }
}
"""
# The SDK says "unable to parse ... response data" when the server answered null for
# the project, type or collection asked for, i.e. when it does not exist.
_NOT_FOUND_WORDS = ("not found", "could not find", "does not exist", "no such", "unable to parse")


def _is_version_alias(alias: str) -> bool:
    return alias[:1] == "v" and alias[1:].isdigit()


def _as_ref(ref: ArtifactRef | str) -> ArtifactRef:
    try:
        return parse_ref(ref) if isinstance(ref, str) else ref
    except RefError as exc:
        raise RegistryError(f"bad reference: {exc}") from None


def _path(ref: ArtifactRef) -> str:
    """`[entity/]project/name`, the model registry for a bare name."""
    head = f"{ref.entity}/" if ref.entity else ""
    return f"{head}{ref.registry_project}/{ref.name}"


class _DevNullSubprocess:
    """`subprocess` as wandb's service launcher sees it: every Popen gets /dev/null for
    stdin, stdout and stderr instead of inheriting the terminal."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, *args: Any, **kwargs: Any) -> Any:  # the name subprocess gives it
        for stream in ("stdin", "stdout", "stderr"):
            kwargs[stream] = self._real.DEVNULL
        return self._real.Popen(*args, **kwargs)


@contextmanager
def _quiet_wandb_core() -> Iterator[None]:
    """Start `wandb-core` (if this block starts it) with /dev/null as its terminal.

    The SDK launches it with inherited stdio; a Textual screen must never receive its
    output. wandb's launcher module is swapped onto a `subprocess` whose Popen passes
    /dev/null (wandb is pinned to 0.31 and a test checks the child's fds). Should the
    launcher move, fds 1 and 2 are pointed at /dev/null for the duration instead.
    """
    try:
        from wandb.sdk.lib.service import service_process
    except ImportError:
        service_process = None
    real = getattr(service_process, "subprocess", None)
    if real is None:
        with _devnull_fds():
            yield
        return
    service_process.subprocess = _DevNullSubprocess(real)
    try:
        yield
    finally:
        service_process.subprocess = real


@contextmanager
def _devnull_fds() -> Iterator[None]:
    """Point fds 1 and 2 at /dev/null for a while, so children started meanwhile
    inherit /dev/null; the process's own fds are restored afterwards."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _run_info(run: Any) -> RunInfo:
    return RunInfo(
        id=str(run.id),
        name=run.name or "",
        project=run.project or "",
        entity=run.entity,
        job_type=run.job_type or "",
        group=run.group or "",
        url=run.url or "",
        state=run.state or "",
    )


def _node_run_info(node: Mapping[str, Any], app_url: str) -> RunInfo | None:
    """A `RunInfo` from a run of LINEAGE_GQL, as `_run_info` makes it from an SDK
    `Run` (the URL built the way `Run.url` builds it); None for a run without a
    project or name, or a creator that is not a run, which the SDK skips too."""
    project = node.get("project")
    if node.get("__typename") != "Run" or not node.get("name") or not project:
        return None
    entity, name, run_id = project["entity"]["name"], project["name"], str(node["name"])
    path = [quote(str(part), safe="") for part in (entity, name, "runs", run_id)]
    return RunInfo(
        id=run_id,
        name=node.get("displayName") or "",
        project=name or "",
        entity=entity,
        job_type=node.get("jobType") or "",
        group=node.get("group") or "",
        url=app_url + "/".join(path),
        state=node.get("state") or "",
    )


def _outputs_query(count: int) -> str:
    """A query for a page of the artifacts each of `count` runs logged: run `i` is the
    aliased field `r<i>`, addressed by `$e<i>/$p<i>/$r<i>`, paged by cursor `$c<i>`."""
    params = ", ".join(
        f"$e{i}: String!, $p{i}: String!, $r{i}: String!, $c{i}: String" for i in range(count)
    )
    fields = "".join(
        f"""
  r{i}: project(entityName: $e{i}, name: $p{i}) {{
    run(name: $r{i}) {{
      outputArtifacts(after: $c{i}, first: {OUTPUTS_PER_PAGE}) {{
        totalCount
        pageInfo {{
          __typename
          endCursor
          hasNextPage
        }}
        edges {{
          node {{
            ...ProducedArtifact
          }}
        }}
      }}
    }}
  }}"""
        for i in range(count)
    )
    return f"query RunsOutputArtifacts({params}) {{{fields}\n}}\n{PRODUCED_FRAGMENTS}"


def _lineages_query(count: int) -> str:
    """A query for the lineage of `count` versions: version `i` is the aliased field
    `v<i>`, the membership `$n<i>` (`name:vN`) of project `$e<i>/$p<i>`."""
    params = ", ".join(f"$e{i}: String!, $p{i}: String!, $n{i}: String!" for i in range(count))
    fields = "".join(
        f"""
  v{i}: project(entityName: $e{i}, name: $p{i}) {{
    artifactCollectionMembership(name: $n{i}) {{
      artifact {{
        ...VersionLineage
      }}
    }}
  }}"""
        for i in range(count)
    )
    return f"query ArtifactLineages({params}) {{{fields}\n}}\n{LINEAGE_FRAGMENTS}"


def _lineage_of(found: Mapping[str, Any], app_url: str) -> Lineage:
    """A `Lineage` from an artifact of `VersionLineage`."""
    edges = (found.get("usedBy") or {}).get("edges") or ()
    users = (_node_run_info(e.get("node") or {}, app_url) for e in edges)
    return Lineage(
        produced_by=_node_run_info(found.get("createdBy") or {}, app_url),
        used_by=tuple(u for u in users if u is not None),
    )


def _places(node: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """(entity, project, collection, version index) of every collection an artifact of
    `PRODUCED_FRAGMENTS` is in: the one it was logged to, then those it is linked to."""
    found = []
    edges = (node.get("artifactMemberships") or {}).get("edges") or ()
    members = [(node.get("artifactSequence"), node.get("versionIndex"))]
    members += [
        ((e.get("node") or {}).get("artifactCollection"), (e.get("node") or {}).get("versionIndex"))
        for e in edges
    ]
    for collection, index in members:
        project = (collection or {}).get("project")
        if project and index is not None:
            found.append((project["entity"]["name"], project["name"], collection["name"], index))
    return list(dict.fromkeys(found))


# The probe reads this much of an answer: enough for any GraphQL error document.
PROBE_READ_BYTES = 65536
PROBE_TIMEOUT_SECONDS = 5.0


def not_wandb_problem(base_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """One line when the server at `base_url` answers, but not with W&B's GraphQL API
    (no JSON `data` or `errors`); None when it does, or does not answer at all (the
    SDK's own error says more then). Sent without credentials: the server may be any."""
    import json
    import urllib.error
    import urllib.request

    endpoint = base_url.rstrip("/") + "/graphql"
    request = urllib.request.Request(
        endpoint,
        data=b'{"query": "query Probe { __typename }"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, kind, body = (
                response.status,
                response.headers.get_content_type(),
                response.read(PROBE_READ_BYTES),
            )
    except urllib.error.HTTPError as exc:
        status, kind, body = exc.code, exc.headers.get_content_type(), exc.read(PROBE_READ_BYTES)
    except (OSError, ValueError):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and ("data" in answer or "errors" in answer):
        return None
    what = "an empty answer" if not body else kind
    return (
        f"{base_url} answers HTTP {status} with {what}, not W&B's GraphQL API; "
        "check WANDB_BASE_URL (the W&B server's address, e.g. https://api.wandb.ai)"
    )


def _sdk_lineage(art: Any) -> Lineage:
    """The lineage through the SDK's `logged_by`/`used_by`: one query per run."""
    producer = art.logged_by()
    return Lineage(
        produced_by=_run_info(producer) if producer else None,
        used_by=tuple(_run_info(r) for r in art.used_by()),
    )


def _version(art: Any) -> Version:
    """A `Version` from an SDK `Artifact` (the aliases without the vN ones)."""
    return Version(
        collection=art.name.split(":")[0],
        version=art.version,
        project=art.project,
        entity=art.entity,
        type=art.type,
        aliases=tuple(sorted(a for a in art.aliases if not _is_version_alias(a))),
        tags=tuple(art.tags),
        description=art.description or "",
        metadata=dict(art.metadata or {}),
        created_at=art.created_at or "",
        size=int(art.size or 0),
        file_count=int(art.file_count or 0),
        digest=art.digest or "",
    )


class WandbRegistry:
    """A registry on a W&B server, implementing the `Registry` protocol."""

    def __init__(self, settings: Settings, *, timeout: int = API_TIMEOUT_SECONDS) -> None:
        if settings.wandb_api_key is None:
            raise RegistryError("WANDB_API_KEY is not set; the W&B registry needs it")
        self.settings = settings
        self.timeout = timeout
        self._api: Any = None
        self._lock = threading.Lock()
        # (project, collection name) -> artifact type, learnt from listings; W&B wants
        # the type to list a collection's versions. Keyed by project too: two registries
        # (or a registry and a team project) may each hold a collection of one name.
        self._types: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"WandbRegistry({self.settings.wandb_base_url or 'default server'!r})"

    # -- the SDK -------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """The `wandb.Api`, created on first use with the terminal kept clean."""
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> Any:
        os.environ.setdefault("WANDB_SILENT", "true")
        with self._errors("connecting to W&B"):
            from tui.services.evallog import DEFAULT_BASE_URL, server_problem

            # The SDK retries a server it cannot reach for a minute or more and then
            # says only that its service did not respond in time.
            url = self.settings.wandb_base_url or DEFAULT_BASE_URL
            if problem := server_problem(url):
                raise ConnectionError(
                    f"cannot reach {url} ({problem}); check WANDB_BASE_URL and the network"
                )
            import wandb

            overrides: dict[str, Any] = {}
            if self.settings.wandb_base_url:
                overrides["base_url"] = self.settings.wandb_base_url
            if self.settings.wandb_entity:
                overrides["entity"] = self.settings.wandb_entity
            if self.settings.wandb_organization:
                overrides["organization"] = self.settings.wandb_organization
            key = self.settings.wandb_api_key
            try:
                with _quiet_wandb_core():
                    return wandb.Api(
                        overrides=overrides,
                        timeout=self.timeout,
                        api_key=key.reveal() if key else None,
                    )
            except Exception:
                # A server that answers, but not as W&B does (a wrong port, a proxy's
                # login page) reads to the SDK as bad credentials: say what it is.
                if problem := not_wandb_problem(url):
                    raise ConnectionError(problem) from None
                raise

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn SDK exceptions into one masked line: NotFoundError or RegistryError."""
        try:
            yield
        except RegistryError:
            raise
        except Exception as exc:  # the SDK raises many kinds; each becomes one line
            lines = str(exc).strip().splitlines()
            detail = mask(lines[0] if lines else type(exc).__name__, self.settings)[:300]
            message = f"{what}: {detail}"
            if any(word in detail.lower() for word in _NOT_FOUND_WORDS):
                raise NotFoundError(message) from None
            raise RegistryError(message) from None

    def _artifact(self, ref: ArtifactRef) -> Any:
        with self._errors(f"W&B artifact {ref}"):
            return self.api.artifact(f"{_path(ref)}:{ref.alias}")

    # -- collections ---------------------------------------------------------------

    def list_collections(
        self, query: str = "", *, tags: Sequence[str] = (), type: str = "model"
    ) -> list[Collection]:
        """Registry collections (and those of WANDB_PROJECT) of `type` ("" for every
        type) whose name, an alias or a tag contains `query`, having all of `tags`."""
        # Type and tags are known from the listing; only survivors pay for details,
        # fetched a few at a time since each costs a round trip.
        wanted = [
            c
            for c in self._sdk_collections(type or "model")
            if type in ("", c.type) and set(tags) <= set(c.tags)
        ]
        with ThreadPoolExecutor(max_workers=DETAIL_WORKERS) as pool:
            found = list(pool.map(self._collection, wanted))
        needle = query.strip().lower()
        return [
            c
            for c in found
            if not needle or any(needle in text.lower() for text in (c.name, *c.aliases, *c.tags))
        ]

    def _sdk_collections(self, project_type: str) -> Iterator[Any]:
        """Every registry collection, then WANDB_PROJECT's collections of `project_type`
        (for eval results without WANDB_PROJECT: those of the project `log` uses)."""
        with self._errors("listing W&B registry collections"):
            yield from self.api.registries().collections()
        project = self.settings.wandb_project
        if project is None and project_type == "eval":
            project = self.settings.results_project
        if project:
            try:
                with self._errors(f"listing the collections of project {project}"):
                    yield from self.api.artifact_collections(project, project_type)
            except NotFoundError:
                return

    def get_collection(self, name: str) -> Collection:
        """One collection by name (`name`, `project/name` or `entity/project/name`)."""
        ref = _as_ref(name)
        type_name = self._types.get((ref.registry_project, ref.name), "model")
        with self._errors(f"W&B collection {_path(ref)}"):
            sdk = self.api.artifact_collection(type_name, _path(ref))
        return self._collection(sdk)

    def _collection(self, sdk: Any) -> Collection:
        """A `Collection` with its version count and alias -> version map."""
        self._types[(sdk.project, sdk.name)] = sdk.type
        path = f"{sdk.entity}/{sdk.project}/{sdk.name}"
        with self._errors(f"reading W&B collection {path}"):
            versions = self.api.artifacts(sdk.type, path, per_page=ALIAS_SCAN)
            aliases: dict[str, str] = {}
            for art in islice(versions, ALIAS_SCAN):
                for alias in art.aliases:
                    if not _is_version_alias(alias):
                        aliases.setdefault(alias, art.version)
            count = len(versions)
            # Only aliases on versions older than the scanned page need looking up.
            for alias in sdk.aliases if count > ALIAS_SCAN else ():
                if alias not in aliases and not _is_version_alias(alias):
                    aliases[alias] = self.api.artifact(f"{path}:{alias}").version
        return Collection(
            name=sdk.name,
            type=sdk.type,
            project=sdk.project,
            entity=sdk.entity,
            description=sdk.description or "",
            tags=tuple(sdk.tags),
            version_count=count,
            aliases=dict(sorted(aliases.items())),
            created_at=sdk.created_at or "",
        )

    # -- versions ------------------------------------------------------------------

    def list_versions(
        self,
        collection: str,
        *,
        alias: str | None = None,
        tag: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Version]:
        """Versions newest first, optionally only those with `alias` or `tag`, paged."""
        if offset < 0 or (limit is not None and limit < 0):
            raise RegistryError("offset and limit must not be negative")
        ref = _as_ref(collection)
        if alias is not None:
            # An alias names at most one version, so resolve it instead of scanning.
            try:
                found = [self.resolve(ref.with_alias(alias))]
            except NotFoundError:
                found = []
            found = [v for v in found if tag is None or tag in v.tags]
            return found[offset : None if limit is None else offset + limit]
        if limit == 0:
            return []
        per_page = min(MAX_PAGE, offset + limit) if limit is not None else MAX_PAGE
        type_name = self._types.get((ref.registry_project, ref.name), "model")
        try:
            with self._errors(f"listing versions of W&B collection {_path(ref)}"):
                arts = self.api.artifacts(
                    type_name, _path(ref), per_page=per_page, tags=[tag] if tag else None
                )
                stop = None if limit is None else offset + limit
                return [_version(a) for a in islice(arts, offset, stop)]
        except RegistryError:
            # The SDK says only "unable to parse" for a missing collection: ask plainly.
            self.get_collection(collection)
            raise

    def resolve(self, ref: ArtifactRef | str) -> Version:
        """The version a reference names (alias or vN); NotFoundError if none."""
        return _version(self._artifact(_as_ref(ref)))

    def files(self, ref: ArtifactRef | str) -> list[FileEntry]:
        """The manifest of a version, sorted by path."""
        ref = _as_ref(ref)
        art = self._artifact(ref)
        with self._errors(f"reading the manifest of {ref}"):
            entries = list(art.manifest.entries.values())
        return sorted(
            (
                FileEntry(
                    path=str(e.path),
                    size=int(e.size or 0),
                    digest=str(e.digest),
                    ref=str(e.ref) if e.ref is not None else None,
                    extra=dict(e.extra or {}),
                )
                for e in entries
            ),
            key=lambda f: f.path,
        )

    def file_urls(self, ref: ArtifactRef | str) -> dict[str, str]:
        """Download URLs of a version's stored files by path (references have none).

        W&B's URLs are signed and expire; fetch them right before downloading.
        """
        ref = _as_ref(ref)
        art = self._artifact(ref)
        with self._errors(f"listing the files of {ref}"):
            return {f.name: f.direct_url for f in art.files(per_page=MAX_PAGE)}

    def lineage(self, ref: ArtifactRef | str) -> Lineage:
        """The run that produced a version and the runs that used it, in one request
        after the version's own, however many runs used it."""
        ref = _as_ref(ref)
        art = self._artifact(ref)
        with self._errors(f"reading the lineage of {ref}"):
            service = getattr(self.api, "_service_api", None)
            if service is None:  # the SDK moved its client: take its per-run road
                return _sdk_lineage(art)
            data = service.execute_graphql(LINEAGE_GQL, variables={"id": art.id}) or {}
            return _lineage_of(data.get("artifact") or {}, service.app_url)

    def lineages(self, versions: Sequence[Version]) -> list[Lineage | RegistryError]:
        """The lineage of each of `versions` (as listed or resolved here), in order; a
        version that is gone has a NotFoundError in its place. A request per
        LINEAGES_PER_QUERY versions, where `lineage` costs two per version."""
        service = getattr(self.api, "_service_api", None)
        if service is None or any(v.entity is None for v in versions):
            return [self._lineage_or_error(v) for v in versions]
        found: list[Lineage | RegistryError] = []
        for start in range(0, len(versions), LINEAGES_PER_QUERY):
            batch = versions[start : start + LINEAGES_PER_QUERY]
            variables: dict[str, Any] = {}
            for i, v in enumerate(batch):
                variables |= {f"e{i}": v.entity, f"p{i}": v.project}
                variables[f"n{i}"] = f"{v.collection}:{v.version}"
            with self._errors("reading the lineage of versions"):
                data = service.execute_graphql(_lineages_query(len(batch)), variables=variables)
                for i, v in enumerate(batch):
                    member = ((data or {}).get(f"v{i}") or {}).get("artifactCollectionMembership")
                    art = (member or {}).get("artifact")
                    gone = NotFoundError(f"W&B artifact {v.ref()}: not found")
                    found.append(_lineage_of(art, service.app_url) if art else gone)
        return found

    def _lineage_or_error(self, version: Version) -> Lineage | RegistryError:
        try:
            return self.lineage(version.ref())
        except RegistryError as exc:
            return exc

    def produced_by_runs(
        self, runs: Sequence[RunInfo], *, type: str = ""
    ) -> dict[str, list[Version]]:
        """Run id -> the versions of `type` ("" for any) that each of `runs` logged, among
        the collections `list_collections(type=type)` would list: the registries' and
        WANDB_PROJECT's (for eval results without it, the results project's).

        A request per RUNS_PER_QUERY runs (more only for a run that logged more than
        OUTPUTS_PER_PAGE artifacts), however many versions those collections hold.
        Ordered like `list_collections` then `list_versions`: registry collections
        first, by name, newest version first.
        """
        # A run is one (entity, project, id), however many records of it were passed.
        unique = {(r.entity, r.project, r.id): r for r in runs if r.id and r.project}
        pending = [(run, None, 0) for run in unique.values()]
        if not pending:
            return {}
        service = getattr(self.api, "_service_api", None)
        if service is None:  # the SDK moved its client: take its per-run road
            return self._sdk_outputs([run for run, _, _ in pending], type)
        home = self._project_place(type)
        made: list[tuple[tuple[str, str, str, int], str, Version]] = []
        while pending:
            batch, pending = pending[:RUNS_PER_QUERY], pending[RUNS_PER_QUERY:]
            variables: dict[str, Any] = {}
            for i, (run, cursor, _) in enumerate(batch):
                entity = run.entity or self.api.default_entity
                variables |= {f"e{i}": entity, f"p{i}": run.project, f"r{i}": run.id}
                variables[f"c{i}"] = cursor
            with self._errors("reading the artifacts runs logged"):
                data = service.execute_graphql(
                    _outputs_query(len(batch)), variables=variables, **_omitted_fields(service)
                )
                for i, (run, _, page) in enumerate(batch):
                    found = ((data or {}).get(f"r{i}") or {}).get("run") or {}
                    logged = found.get("outputArtifacts") or {}
                    for edge in logged.get("edges") or ():
                        node = edge.get("node") or {}
                        if node and type in ("", (node.get("artifactType") or {}).get("name")):
                            made += self._produced(run.id, node, home, service)
                    more = logged.get("pageInfo") or {}
                    if more.get("hasNextPage") and page + 1 < MAX_OUTPUT_PAGES:
                        pending.append((run, more.get("endCursor"), page + 1))
        return _by_run(made)

    def _project_place(self, type: str) -> tuple[str, str] | None:
        """(entity, project) whose collections `list_collections(type=type)` lists
        beside the registries'."""
        project = self.settings.wandb_project
        if project is None and type == "eval":
            project = self.settings.results_project
        if not project:
            return None
        entity, _, name = project.rpartition("/")
        return entity or self.settings.wandb_entity or self.api.default_entity, name

    def _produced(
        self, run_id: str, node: Mapping[str, Any], home: tuple[str, str] | None, service: Any
    ) -> list[tuple[tuple[str, str, str, int], str, Version]]:
        """The listed places of one logged artifact, each as the `Version` that listing
        its collection gives: the SDK builds it from the same fields."""
        from wandb.sdk.artifacts._generated import ArtifactFragment
        from wandb.sdk.artifacts._validators import FullArtifactPath
        from wandb.sdk.artifacts.artifact import Artifact

        fragment = ArtifactFragment.model_validate(node)
        made = []
        for place in _places(node):
            entity, project, collection, index = place
            if not (project.startswith(REGISTRY_PREFIX) or (entity, project) == home):
                continue
            path = FullArtifactPath(prefix=entity, project=project, name=f"{collection}:v{index}")
            made.append((place, run_id, _version(Artifact._from_attrs(path, fragment, service))))
        return made

    def _sdk_outputs(self, runs: Sequence[RunInfo], type: str) -> dict[str, list[Version]]:
        """`produced_by_runs` through the SDK's `logged_artifacts`/`linked_artifacts`:
        a few queries per run and per artifact."""
        home = self._project_place(type)
        made = []
        for run in runs:
            path = f"{run.entity or self.api.default_entity}/{run.project}/{run.id}"
            with self._errors(f"reading the artifacts run {path} logged"):
                for art in self.api.run(path).logged_artifacts():
                    if type not in ("", art.type):
                        continue
                    for placed in (art, *art.linked_artifacts):
                        place = (placed.entity, placed.project, placed.name.split(":")[0])
                        if placed.project.startswith(REGISTRY_PREFIX) or place[:2] == home:
                            made.append(
                                ((*place, int(placed.version[1:])), run.id, _version(placed))
                            )
        return _by_run(made)

    # -- edits ---------------------------------------------------------------------

    def set_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Move `alias` to the version `ref` names (W&B takes it from any other version)."""
        ref = _as_ref(ref)
        _check_alias(alias)
        art = self._artifact(ref)
        if alias not in art.aliases:
            with self._errors(f"setting alias {alias!r} on {ref}"):
                art.aliases.append(alias)
                art.save()
        return self.resolve(ref.with_alias(art.version))

    def remove_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Take `alias` off the version `ref` names; NotFoundError if it does not hold it."""
        ref = _as_ref(ref)
        if alias == DEFAULT_ALIAS:
            raise RegistryError(f"'{DEFAULT_ALIAS}' always names the newest version; keep it")
        art = self._artifact(ref)
        if alias not in art.aliases:
            raise NotFoundError(f"{ref.name}:{art.version} has no alias {alias!r}")
        with self._errors(f"removing alias {alias!r} from {ref}"):
            art.aliases.remove(alias)
            art.save()
        return self.resolve(ref.with_alias(art.version))

    def update_version(
        self,
        ref: ArtifactRef | str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Version:
        """Replace the description, metadata or tags of a version (None keeps them)."""
        ref = _as_ref(ref)
        art = self._artifact(ref)
        self._check_source_writable(ref, art)
        with self._errors(f"updating {ref}"):
            if description is not None:
                art.description = description
            if metadata is not None:
                art.metadata = dict(metadata)
            if tags is not None:
                art.tags = list(dict.fromkeys(str(t).strip() for t in tags))
            art.save()
        return self.resolve(ref.with_alias(art.version))

    def _check_source_writable(self, ref: ArtifactRef, art: Any) -> None:
        """Refuse, in one line, an edit the SDK would skip: a registry version is a link,
        its description, metadata and tags belong to the source artifact, and
        `Artifact.save()` leaves them unchanged, with only a warning, when the source
        project is read-only (or invisible) for the viewer."""
        source = f"{art.source_entity}/{art.source_project}"
        if not art.is_link:
            return
        with self._errors(f"checking access to {source}"):
            service = getattr(self.api, "_service_api", None)
            if service is None:  # the SDK moved its client: ask its own way
                read_only = art._is_source_project_read_only()
            else:
                data = service.execute_graphql(
                    READ_ONLY_GQL,
                    variables={"entity": art.source_entity, "project": art.source_project},
                )
                project = (data or {}).get("project")
                read_only = project is None or bool(project.get("readOnly"))
        if read_only:
            raise RegistryError(
                f"cannot edit {ref}: its source artifact is in {source}, which is read-only "
                "for you; ask a member of that project to change it there"
            )


def _omitted_fields(service: Any) -> dict[str, Any]:
    """The artifact fields this server lacks (`digestAlgorithm` without the
    ARTIFACT_DIGEST_ALGORITHM feature, as on older W&B Server), left out of a query as
    the SDK leaves them out of its own; wandb-core strips them before sending."""
    try:
        from wandb.sdk.artifacts._gqlutils import omit_artifact_fields
    except ImportError:
        return {}
    return {"omit_fields": omit_artifact_fields(service)}


def _by_run(
    made: Sequence[tuple[tuple[str, str, str, int], str, Version]],
) -> dict[str, list[Version]]:
    """Run id -> versions, in listing order: registry collections first, by name, then
    the project's, newest version first."""
    once = {(place, run_id): (place, run_id, v) for place, run_id, v in made}
    ordered = sorted(
        once.values(), key=lambda m: (not m[0][1].startswith(REGISTRY_PREFIX), m[0][2], -m[0][3])
    )
    found: dict[str, list[Version]] = {}
    for _, run_id, version in ordered:
        found.setdefault(run_id, []).append(version)
    return found


def _check_alias(alias: str) -> None:
    if alias == DEFAULT_ALIAS:
        raise RegistryError(f"'{DEFAULT_ALIAS}' always names the newest version; it cannot be set")
    if _is_version_alias(alias):
        raise RegistryError(f"{alias!r} is a version number, not an alias")
    try:
        ArtifactRef(name="x", alias=alias)
    except RefError as exc:
        raise RegistryError(f"bad alias: {exc}") from None

"""The `Registry` protocol and the plain records both backends return.

The local registry (`local.py`) and the W&B backend (`wandb.py`) implement the same
protocol, so panes, commands and the contract tests never ask which one they have.
Digests follow W&B's manifest: base64 md5 for stored files and `file://` references,
the ETag for `s3://` references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tui.services.refs import ArtifactRef


class RegistryError(Exception):
    """A registry operation failed; the message says what and where, one line."""


class NotFoundError(RegistryError):
    """The collection, version or alias does not exist."""


@dataclass(frozen=True)
class Collection:
    """A named series of versions (an artifact collection / registry collection)."""

    name: str
    type: str = "model"
    project: str = "local"
    entity: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    version_count: int = 0
    # alias -> version ("production" -> "v3"), so a tree can show them without paging.
    aliases: Mapping[str, str] = field(default_factory=dict)
    created_at: str = ""

    def ref(self, alias: str = "latest") -> ArtifactRef:
        """A reference to this collection at `alias`."""
        return ArtifactRef(name=self.name, alias=alias, project=self.project, entity=self.entity)


@dataclass(frozen=True)
class FileEntry:
    """One manifest entry: a stored file or a reference (`file://`, `s3://`)."""

    path: str
    size: int
    digest: str
    ref: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """A run seen through lineage: the one that produced a version or one that used it."""

    id: str
    name: str = ""
    project: str = ""
    entity: str | None = None
    job_type: str = ""
    group: str = ""
    url: str = ""
    state: str = ""


@dataclass(frozen=True)
class Lineage:
    """Which run produced a version, and which runs used it."""

    produced_by: RunInfo | None = None
    used_by: tuple[RunInfo, ...] = ()


@dataclass(frozen=True)
class Version:
    """One version of a collection with everything but its file list and lineage."""

    collection: str
    version: str
    project: str = "local"
    entity: str | None = None
    type: str = "model"
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    size: int = 0
    file_count: int = 0
    digest: str = ""

    @property
    def index(self) -> int:
        """N of vN."""
        return int(self.version[1:])

    def ref(self, alias: str | None = None) -> ArtifactRef:
        """A reference to this version, by `alias` or by its version number."""
        return ArtifactRef(
            name=self.collection,
            alias=alias or self.version,
            project=self.project,
            entity=self.entity,
        )


@runtime_checkable
class Registry(Protocol):
    """What every registry backend offers: browsing, resolving and editing versions."""

    def list_collections(
        self, query: str = "", *, tags: Sequence[str] = (), type: str = "model"
    ) -> list[Collection]:
        """Collections whose name, alias or tag contains `query`, having all of `tags`."""
        ...

    def get_collection(self, name: str) -> Collection:
        """One collection by name; NotFoundError if absent."""
        ...

    def list_versions(
        self,
        collection: str,
        *,
        alias: str | None = None,
        tag: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Version]:
        """Versions newest first, optionally only those with `alias` or `tag`, paged.

        `collection` is a bare name or a `[entity/]project/name` path
        (`Collection.ref().collection_path`)."""
        ...

    def resolve(self, ref: ArtifactRef | str) -> Version:
        """The version a reference names (alias or vN); NotFoundError if none."""
        ...

    def files(self, ref: ArtifactRef | str) -> list[FileEntry]:
        """The manifest of a version, sorted by path."""
        ...

    def lineage(self, ref: ArtifactRef | str) -> Lineage:
        """The run that produced a version and the runs that used it."""
        ...

    def set_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Move `alias` to the version `ref` names (taking it from any other version)."""
        ...

    def remove_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Take `alias` off the version `ref` names."""
        ...

    def update_version(
        self,
        ref: ArtifactRef | str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Version:
        """Replace the description, metadata or tags of a version (None keeps them)."""
        ...


@runtime_checkable
class RunOutputs(Protocol):
    """An optional capability beside `Registry`: the versions runs produced, asked of
    the backend at once instead of through the lineage of every version it holds."""

    def produced_by_runs(
        self, runs: Sequence[RunInfo], *, type: str = ""
    ) -> dict[str, list[Version]]:
        """Run id -> the versions of `type` ("" for any) that each of `runs` produced,
        among the collections `list_collections(type=type)` lists, in its order and
        newest version first."""
        ...


@runtime_checkable
class Lineages(Protocol):
    """An optional capability beside `Registry`: the lineage of many versions at once,
    for a backend where each `lineage` call is a round trip."""

    def lineages(self, versions: Sequence[Version]) -> list[Lineage | RegistryError]:
        """The lineage of each of `versions`, in order; one that cannot be read has
        the error in its place."""
        ...
